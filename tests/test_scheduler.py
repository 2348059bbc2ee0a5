"""Scheduled reports: when they fire, and that each period is posted exactly once.

Real ``Scheduler`` + real ``SlackPoster`` (slack_sdk WebClient) against the fake Slack; time is a
controllable clock. Reports here cover an empty scope ("No changes" one-liners) so the tests
exercise scheduling; report content is in tests/test_scheduler_reports.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st
from slack_sdk import WebClient

from assistant.engine import Engine
from assistant.errors import ConfigError
from assistant.reports import Scheduler, add_schedule, list_schedules, runs_of
from assistant.reports.cadence import next_fire, parse_cadence, previous_fire
from assistant.service import Assistant
from assistant.slackbot.report_posting import SlackPoster
from assistant.store import Store
from tests.conftest import REPO, make_settings
from tests.fakes.scheduler_support import Clock, Crash, CrashingPoster
from tests.fakes.slack import FakeSlack

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def fake():
    with FakeSlack() as f:
        alice = f.add_user("alice", email="alice@northwind.example")
        bob = f.add_user("bob", email="bob@northwind.example")
        f.add_channel("eng", members=[alice, bob])
        f.add_channel("leads", members=[alice])
        yield f


@pytest.fixture
def settings(tmp_path, fake):
    return make_settings(
        tmp_path / "data",
        llm={"model": "none"},
        scheduler={"lease_s": 120, "grace_s": 3600},
        slack={"bot_token": fake.token, "api_url": fake.url},
    )


@pytest.fixture
def engine(settings):
    """No embedder: these reports cover an empty scope, so no model is ever loaded."""
    eng = Engine.open(settings)
    yield eng
    eng.close()


@pytest.fixture
def poster(fake):
    return SlackPoster(WebClient(token=fake.token, base_url=fake.url))


def scheduler(settings, engine, poster, clock, **kw) -> Scheduler:
    return Scheduler(
        Assistant(settings, engine=engine, llm=None),
        poster,
        settings=settings,
        now=clock,
        use_llm=False,
        **kw,
    )


def posts(fake, channel="eng") -> list[dict]:
    cid = fake.channel_id(channel)
    return [p for p in fake.posted if p["channel"] == cid]


def drive(sched: Scheduler, clock: Clock, until: datetime, step: timedelta) -> list[tuple[datetime, str]]:
    out = []
    while clock() <= until:
        out += [(clock(), r.status) for r in sched.tick()]
        clock.set(clock() + step)
    return out


# -- phrases ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "phrase,expr",
    [
        ("every monday 9:00", "0 9 * * mon"),
        ("weekly mon 09:00", "0 9 * * mon"),
        ("Mondays at 9am", "0 9 * * mon"),
        ("daily 17:30", "30 17 * * *"),
        ("every day at 5pm", "0 17 * * *"),
        ("weekdays 8am", "0 8 * * mon-fri"),
        ("0 9 * * MON", "0 9 * * mon"),
        ("30 8 * * 1-5", "30 8 * * mon,tue,wed,thu,fri"),
        ("0 9 * * 0", "0 9 * * sun"),
    ],
)
def test_phrases_and_cron_normalise_to_the_same_cron(phrase, expr):
    c = parse_cadence(phrase, tz="Europe/Berlin")
    assert (c.kind, c.expr, c.tz) == ("cron", expr, "Europe/Berlin")


def test_intervals_and_a_zone_in_the_phrase():
    assert parse_cadence("every 6h").expr == str(6 * 3600)
    assert parse_cadence("every 30 minutes").expr == "1800"
    assert parse_cadence("daily 17:30 America/New_York", tz="UTC").tz == "America/New_York"


@pytest.mark.parametrize(
    "bad",
    [
        "every blursday",
        "daily 25:00",
        "0 9 * *",
        "61 9 * * *",
        "sometimes",
        "every 10s",
        "",
        "weekly mon 9:75",
    ],
)
def test_invalid_phrases_raise_a_config_error_with_an_example(bad):
    with pytest.raises(ConfigError) as e:
        parse_cadence(bad)
    assert "0 9 * * MON" in str(e.value) and "every monday 9:00" in str(e.value)


def test_unknown_time_zone_is_named():
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        parse_cadence("daily 9:00 Mars/Olympus")


PHRASES = [
    "daily 09:00",
    "weekdays 8am",
    "every monday 9:00",
    "0 2 * * SUN",
    "30 2 * * *",
    "every 6h",
    "every 30 minutes",
    "*/20 * * * *",
    "0 9 1 * *",
    "0 1-3 * * *",
]
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe", "UTC"]


@settings_h(max_examples=150, deadline=None)
@given(
    phrase=st.sampled_from(PHRASES),
    zone=st.sampled_from(ZONES),
    at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
)
def test_every_moment_falls_in_exactly_one_period(phrase, zone, at):
    c = parse_cadence(phrase, tz=zone)
    anchor = datetime(2025, 12, 1, tzinfo=UTC).timestamp()
    fire = previous_fire(c, at, anchor=anchor)
    assert fire is not None and fire <= at
    nxt = next_fire(c, fire, anchor=anchor)
    assert at < nxt  # the period [fire, nxt) holds ``at``
    assert previous_fire(c, nxt, anchor=anchor) == nxt  # ... and the next period starts where it ends
    before = previous_fire(c, fire - timedelta(microseconds=1), anchor=anchor)
    assert before < fire and next_fire(c, before, anchor=anchor) == fire  # ... and so does the one before


# clock changes in 2026: (zone, a UTC moment a day before the change)
CHANGES = [
    ("Europe/Berlin", datetime(2026, 3, 28, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 10, 24, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC)),
    ("Australia/Sydney", datetime(2026, 4, 4, tzinfo=UTC) - timedelta(days=1)),
    ("Australia/Sydney", datetime(2026, 10, 3, tzinfo=UTC) - timedelta(days=1)),
    ("Australia/Lord_Howe", datetime(2026, 4, 3, tzinfo=UTC)),  # a 30-minute change
    ("Australia/Lord_Howe", datetime(2026, 10, 3, tzinfo=UTC) - timedelta(days=1)),
]


def _walk(c, start, end):
    """Every fire time in [start, end] by next_fire."""
    out, t = [], next_fire(c, start - timedelta(microseconds=1))
    while t <= end:
        out.append(t)
        t = next_fire(c, t)
        assert t > out[-1], f"next_fire({out[-1]}) did not move on"
    return out


@pytest.mark.parametrize("zone,start", CHANGES, ids=[f"{z}-{d:%m}" for z, d in CHANGES])
@pytest.mark.parametrize(
    "phrase", ["30 2 * * *", "0 2 * * *", "*/20 * * * *", "every 30 minutes", "0 2 * * SUN", "every 6h"]
)
def test_across_a_clock_change_each_wall_time_fires_once_and_periods_join_up(phrase, zone, start):
    c = parse_cadence(phrase, tz=zone)
    end = start + timedelta(days=3)
    fires = _walk(c, start, end)
    assert fires == sorted(
        set(fires)
    )  # increasing: nothing fires twice, nothing returns itself as its successor
    walls = [f.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for f in fires]
    assert len(walls) == len(set(walls))  # a repeated wall-clock hour fires once
    t = start
    while t < end:  # every moment lies in one period [fire, next fire)
        fire = previous_fire(c, t)
        assert fire <= t < next_fire(c, fire)
        t += timedelta(minutes=7)
    if phrase in ("30 2 * * *", "0 2 * * *"):  # once a day, also on the day 02:xx is skipped or repeated
        assert len({w.date() for w in walls}) == len(walls)


def test_autumn_berlin_0230_has_a_distinct_successor():
    c = parse_cadence("30 2 * * *", tz="Europe/Berlin")
    fire = previous_fire(c, datetime(2026, 10, 25, 1, 35, tzinfo=UTC))
    assert fire == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first 02:30 that night
    assert next_fire(c, fire) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_sydney_sunday_0200_fires_once_when_0200_repeats():
    c = parse_cadence("0 2 * * SUN", tz="Australia/Sydney")
    fires = _walk(c, datetime(2026, 4, 3, tzinfo=UTC), datetime(2026, 4, 10, tzinfo=UTC))
    assert fires == [datetime(2026, 4, 4, 15, tzinfo=UTC)]  # 02:00 AEDT; not again at 02:00 AEST


def test_spring_forward_skipped_time_fires_at_the_change():
    c = parse_cadence("30 2 * * *", tz="Europe/Berlin")
    assert next_fire(c, datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, tzinfo=UTC
    )  # 03:00 CEST


@pytest.mark.parametrize(
    "phrase,zone,start,end",
    [
        (
            "30 2 * * *",
            "Europe/Berlin",
            datetime(2026, 10, 23, 12, tzinfo=UTC),
            datetime(2026, 10, 27, tzinfo=UTC),
        ),
        (
            "*/20 * * * *",
            "Europe/Berlin",
            datetime(2026, 10, 24, 23, tzinfo=UTC),
            datetime(2026, 10, 25, 3, tzinfo=UTC),
        ),
        (
            "0 2 * * SUN",
            "Australia/Sydney",
            datetime(2026, 3, 28, tzinfo=UTC),
            datetime(2026, 4, 13, tzinfo=UTC),
        ),
        (
            "*/20 * * * *",
            "America/New_York",
            datetime(2026, 3, 8, 5, tzinfo=UTC),
            datetime(2026, 3, 8, 9, tzinfo=UTC),
        ),
    ],
)
def test_scheduler_periods_join_up_through_a_clock_change(
    phrase, zone, start, end, settings, engine, poster, fake
):
    clock = Clock(start)
    s = add_schedule(
        engine.store, phrase, channel="#eng", scope="nothing-here", tz=zone, now=clock().timestamp()
    )
    step = timedelta(minutes=5) if phrase.startswith("*/") else timedelta(hours=1)
    fired = drive(scheduler(settings, engine, poster, clock), clock, end, step)
    runs = runs_of(engine.store, s.id)
    assert [r["status"] for r in runs] == ["posted"] * len(runs) == [st for _, st in fired]
    ends = [r["period_end"] for r in runs]
    assert len(set(ends)) == len(ends)  # each fire time runs once
    assert all(a["period_end"] == b["period_start"] for a, b in pairwise(runs))  # no hour lost
    assert len(posts(fake)) == len(runs)


# -- firing at the right local time ------------------------------------------------------------
def test_daily_report_fires_at_nine_berlin_time_across_the_spring_dst_change(settings, engine, poster, fake):
    clock = Clock(datetime(2026, 3, 26, 12, 0, tzinfo=UTC))
    s = add_schedule(
        engine.store,
        "daily 09:00",
        channel="#eng",
        scope="nothing-here",
        tz="Europe/Berlin",
        now=clock().timestamp(),
    )
    fired = drive(
        scheduler(settings, engine, poster, clock),
        clock,
        datetime(2026, 3, 31, 12, tzinfo=UTC),
        timedelta(minutes=15),
    )
    # 09:00 CET = 08:00 UTC until Sunday 29 March 02:00, then 09:00 CEST = 07:00 UTC
    assert fired == [
        (datetime(2026, 3, d, h, 0, tzinfo=UTC), "posted")
        for d, h in [(27, 8), (28, 8), (29, 7), (30, 7), (31, 7)]
    ]
    assert all(t.astimezone(BERLIN).strftime("%H:%M") == "09:00" for t, _ in fired)
    assert len(posts(fake)) == 5
    hours = [(r["period_end"] - r["period_start"]) / 3600 for r in runs_of(engine.store, s.id)]
    assert hours == [24, 24, 23, 24, 24]  # the night of the change is an hour shorter
    assert "No changes in nothing-here" in posts(fake)[0]["text"]


def test_weekly_report_follows_the_autumn_dst_change(settings, engine, poster, fake):
    clock = Clock(datetime(2026, 10, 14, 12, 0, tzinfo=UTC))
    s = add_schedule(
        engine.store,
        "weekly mon 09:00",
        channel="#eng",
        scope="nothing-here",
        tz="Europe/Berlin",
        now=clock().timestamp(),
    )
    fired = drive(
        scheduler(settings, engine, poster, clock),
        clock,
        datetime(2026, 10, 28, tzinfo=UTC),
        timedelta(hours=1),
    )
    assert [t for t, _ in fired] == [
        datetime(2026, 10, 19, 7, tzinfo=UTC),
        datetime(2026, 10, 26, 8, tzinfo=UTC),
    ]
    last = runs_of(engine.store, s.id)[-1]
    assert (last["period_end"] - last["period_start"]) / 3600 == 7 * 24 + 1


def test_no_run_for_a_fire_time_before_the_schedule_existed(settings, engine, poster, fake):
    clock = Clock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))  # Monday, 30 min after 09:00
    add_schedule(
        engine.store, "every monday 9:00", channel="#eng", scope="nothing-here", now=clock().timestamp()
    )
    assert scheduler(settings, engine, poster, clock).tick() == []
    assert fake.posted == []


# -- restarts, crashes, missed runs ------------------------------------------------------------
def test_restart_keeps_schedules_and_never_repeats_a_period(settings, poster, fake):
    clock = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    eng = Engine.open(settings)
    add_schedule(
        eng.store, "every monday 9:00", channel="#eng", scope="nothing-here", now=clock().timestamp()
    )
    clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
    assert [r.status for r in scheduler(settings, eng, poster, clock).tick()] == ["posted"]
    eng.close()  # the process stops ...

    eng = Engine.open(settings)  # ... and starts again
    try:
        assert [s.spec for s in list_schedules(eng.store)] == ["every monday 9:00"]
        sched = scheduler(settings, eng, poster, clock)
        clock.advance(minutes=5)
        assert sched.tick() == []  # the period is done
        clock.set(datetime(2026, 3, 16, 9, 0, tzinfo=UTC))
        assert [r.status for r in sched.tick()] == ["posted"]
    finally:
        eng.close()
    keys = [json.dumps(p["blocks"]) for p in posts(fake)]
    assert len(keys) == 2 and "r1-20260309T090000Z" in keys[0] and "r1-20260316T090000Z" in keys[1]


def test_crash_after_recording_before_posting_posts_exactly_once_after_restart(
    settings, engine, poster, fake
):
    clock = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    add_schedule(
        engine.store, "every monday 9:00", channel="#eng", scope="nothing-here", now=clock().timestamp()
    )
    clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
    with pytest.raises(Crash):
        scheduler(settings, engine, CrashingPoster(poster, when="before"), clock).tick()
    assert posts(fake) == [] and runs_of(engine.store, 1)[0]["status"] == "claimed"

    restarted = scheduler(settings, engine, poster, clock)
    assert restarted.tick() == []  # the dead claimant's lease still holds
    clock.advance(seconds=121)  # lease_s = 120
    assert [r.status for r in restarted.tick()] == ["posted"]
    clock.advance(minutes=10)
    assert restarted.tick() == []
    assert len(posts(fake)) == 1
    assert fake.calls("conversations.history")  # it looked for an earlier post before posting


def test_crash_after_the_post_reached_slack_does_not_post_again(settings, engine, poster, fake):
    clock = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    add_schedule(
        engine.store, "every monday 9:00", channel="#eng", scope="nothing-here", now=clock().timestamp()
    )
    clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
    with pytest.raises(Crash):
        scheduler(settings, engine, CrashingPoster(poster, when="after"), clock).tick()
    assert len(posts(fake)) == 1
    clock.advance(seconds=121)
    assert [r.status for r in scheduler(settings, engine, poster, clock).tick()] == ["found"]
    run = runs_of(engine.store, 1)[0]
    assert (run["status"], run["ts"]) == ("posted", posts(fake)[0]["ts"])
    assert len(posts(fake)) == 1


def test_failed_post_is_retried_after_checking_history(settings, engine, poster, fake):
    clock = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    add_schedule(
        engine.store, "every monday 9:00", channel="#eng", scope="nothing-here", now=clock().timestamp()
    )
    clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
    fake.fail_next("chat.postMessage", status=500, error="internal_error")
    sched = scheduler(settings, engine, poster, clock)
    assert [r.status for r in sched.tick()] == ["retry"]
    assert sched.tick() == []  # backing off
    clock.advance(seconds=31)
    assert [r.status for r in sched.tick()] == ["posted"]
    assert len(posts(fake)) == 1


def test_missed_run_runs_once_at_startup_within_grace_and_not_beyond(settings, engine, poster, fake):
    clock = Clock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    s = add_schedule(
        engine.store, "daily 09:00", channel="#eng", scope="nothing-here", now=clock().timestamp()
    )
    clock.set(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))  # down at 09:00, up 40 min later (grace 1 h)
    sched = scheduler(settings, engine, poster, clock)
    assert [r.status for r in sched.tick()] == ["posted"]
    assert sched.tick() == []
    clock.set(datetime(2026, 3, 3, 11, 0, tzinfo=UTC))  # two hours late: beyond grace
    assert [r.status for r in scheduler(settings, engine, poster, clock).tick()] == ["missed"]
    clock.set(datetime(2026, 3, 4, 9, 0, tzinfo=UTC))
    assert [r.status for r in sched.tick()] == ["posted"]
    assert [r["status"] for r in runs_of(engine.store, s.id)] == ["posted", "missed", "posted"]
    assert len(posts(fake)) == 2


# -- several schedulers on one store -------------------------------------------------------------
def test_two_scheduler_instances_on_one_store_post_once_per_period(settings, engine, poster, fake):
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    add_schedule(engine.store, "daily 09:00", channel="#eng", scope="nothing-here", now=start.timestamp())
    times = [datetime(2026, 3, d, 9, m, tzinfo=UTC) for d in range(2, 8) for m in (0, 0, 1)]
    barrier = threading.Barrier(2)
    statuses: dict[str, list[str]] = {}

    def run(name: str) -> None:
        store = Store(settings.data_dir / "store.sqlite")  # its own connection, as another process has
        clock = Clock(times[0])
        sched = Scheduler(
            Assistant(settings, engine=engine, llm=None),
            SlackPoster(WebClient(token=fake.token, base_url=fake.url)),
            settings=settings,
            now=clock,
            store=store,
            use_llm=False,
            owner=name,
        )
        try:
            for t in times:
                clock.set(t)
                barrier.wait(timeout=60)
                statuses.setdefault(name, []).extend(r.status for r in sched.tick())
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert len(posts(fake)) == 6
    assert sorted(statuses.get("a", []) + statuses.get("b", [])) == ["posted"] * 6
    keys = {p["text"].rsplit("key ", 1)[-1] for p in posts(fake)}
    assert len(keys) == 6


def test_two_scheduler_processes_on_one_store_post_once_per_period(settings, engine, fake, tmp_path):
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    add_schedule(engine.store, "daily 09:00", channel="#eng", scope="nothing-here", now=start.timestamp())
    times = json.dumps(
        [datetime(2026, 3, d, 9, m, tzinfo=UTC).isoformat() for d in range(2, 6) for m in (0, 1)]
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.scheduler_support",
                "--data-dir",
                str(settings.data_dir),
                "--slack-url",
                fake.url,
                "--token",
                fake.token,
                "--barrier",
                str(barrier),
                "--name",
                n,
                "--times",
                times,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ("p1", "p2")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [r for out, _ in outs for r in json.loads(out.strip().splitlines()[-1])]
    assert sorted(r["status"] for r in results) == ["posted"] * 4
    assert len(posts(fake)) == 4
