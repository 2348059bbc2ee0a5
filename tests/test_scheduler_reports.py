"""What a scheduled report says, who may see it, and how people schedule one (/schedule and CLI).

A corpus with controlled modified times: the sample folder (three documents changed in the week
of 23-30 March 2026, one after it, the rest in February) plus a busy Slack thread in #eng with a
decision, ingested once per module through the real connectors and copied per test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from slack_sdk import WebClient
from typer.testing import CliRunner

from assistant.engine import Engine
from assistant.reports import Scheduler, add_schedule, get_schedule, list_schedules, runs_of
from assistant.service import Assistant
from assistant.slackbot.blocks import MAX_BLOCKS
from assistant.slackbot.report_posting import SlackPoster
from assistant.slackbot.schedule_command import handle_schedule_command
from connectors.local_files import LocalFilesConnector
from connectors.slack import SlackConfig, SlackConnector
from tests.conftest import REPO, SAMPLE_DOCS, make_settings
from tests.fakes.scheduler_support import Clock, set_mtime
from tests.fakes.slack import FakeSlack

CANARY = "NW-SALARY-CANARY-7731"
MONDAY_9_BERLIN = datetime(2026, 3, 30, 7, 0, tzinfo=UTC)  # 09:00 CEST
CORPUS = [
    "acl.toml",
    "handbook/parental-leave.md",
    "handbook/pto-and-holidays.md",
    "engineering/deploy-process.md",
    "restricted/salary-bands-2026.md",
    "it/printer-setup.md",
    "policies/expense-policy.html",
]
DECISION = "We decided to move the deploy freeze to Thursdays starting in April."


def _workspace(f: FakeSlack) -> dict:
    alice = f.add_user("alice", email="alice@northwind.example", user_id="UALICE")
    bob = f.add_user("bob", email="bob@northwind.example", user_id="UBOB")
    return {
        "alice": alice,
        "bob": bob,
        "eng": f.add_channel("eng", members=[alice, bob]),
        "leads": f.add_channel("leads", members=[alice], private=True),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("report-corpus")
    folder = root / "sample"
    for rel in CORPUS:  # a part of the sample corpus keeps the embedding work small
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLE_DOCS / rel, folder / rel)
        set_mtime(folder / rel, datetime(2026, 2, 1, tzinfo=UTC))
    for rel, day in [
        ("handbook/parental-leave.md", 25),
        ("engineering/deploy-process.md", 26),
        ("restricted/salary-bands-2026.md", 27),
    ]:
        set_mtime(folder / rel, datetime(2026, 3, day, 10, tzinfo=UTC))
    set_mtime(folder / "it/printer-setup.md", datetime(2026, 3, 30, 12, tzinfo=UTC))  # after the period
    settings = make_settings(root / "data", llm={"model": "none"})
    with FakeSlack() as slack:
        ws = _workspace(slack)
        t = datetime(2026, 3, 27, 9, tzinfo=UTC).timestamp()
        thread = slack.post(
            ws["eng"], ws["alice"], "Should the deploy freeze move from Fridays to Thursdays?", ts=f"{t:.6f}"
        )
        for i, text in enumerate(
            [
                "Thursdays work better for the release train.",
                "Agreed, fewer weekend pages.",
                "What about the mobile release?",
                "Mobile ships Wednesdays, so no conflict.",
                DECISION,
            ]
        ):
            slack.post(
                ws["eng"],
                ws["bob" if i % 2 else "alice"],
                text,
                thread_ts=thread,
                ts=f"{t + 60 * (i + 1):.6f}",
            )
        eng = Engine.open(settings, embedder=embedder)
        eng.sync(LocalFilesConnector(folder, name="sample", acl_file=folder / "acl.toml"))
        eng.sync(SlackConnector(SlackConfig(bot_token=slack.token, api_url=slack.url)))
        eng.close()
    return root / "data"


@pytest.fixture
def fake():
    with FakeSlack() as f:
        f.ids = _workspace(f)
        yield f


@pytest.fixture
def settings(tmp_path, corpus, fake):
    shutil.copytree(corpus, tmp_path / "data")
    return make_settings(
        tmp_path / "data", llm={"model": "none"}, slack={"bot_token": fake.token, "api_url": fake.url}
    )


@pytest.fixture
def assistant(settings, embedder):
    with Assistant(settings, engine=Engine.open(settings, embedder=embedder), llm=None) as a:
        yield a


def _scheduler(assistant, settings, fake, clock) -> Scheduler:
    poster = SlackPoster(WebClient(token=fake.token, base_url=fake.url))
    return Scheduler(assistant, poster, settings=settings, now=clock, use_llm=False)


def _posted_to(fake, channel: str) -> list[dict]:
    return [p for p in fake.posted if p["channel"] == fake.channel_id(channel)]


def _everything(post: dict) -> str:
    return post["text"] + json.dumps(post.get("blocks"), ensure_ascii=False)


def _weekly_report(assistant, settings, fake, channel: str, *, scope: str | None = None) -> dict:
    clock = Clock(datetime(2026, 3, 20, tzinfo=UTC))
    add_schedule(
        assistant.engine.store,
        "weekly mon 09:00",
        channel=f"#{channel}",
        scope=scope,
        tz="Europe/Berlin",
        now=clock().timestamp(),
    )
    clock.set(MONDAY_9_BERLIN)
    assert [r.status for r in _scheduler(assistant, settings, fake, clock).tick()] == ["posted"]
    (post,) = _posted_to(fake, channel)
    return post


def test_report_for_a_channel_cites_the_changes_and_leaves_out_what_a_member_cannot_read(
    assistant, settings, fake
):
    post = _weekly_report(assistant, settings, fake, "eng")  # alice and bob are members
    body = _everything(post)
    assert CANARY not in body and "Salary" not in body
    text = post["text"]
    assert text.startswith("Report for all sources · Mon 23 Mar 2026 09:00 – Mon 30 Mar 2026 09:00 (CEST)")
    for title in ("Parental Leave Policy", "Deploy Process", "#eng: Should the deploy freeze move"):
        assert title in text
    assert "Printer" not in body and "Expense" not in body  # changed after the period / long before it
    assert "sample:" in text and "slack:" in text  # grouped by source
    assert "Busy threads:" in text and "6 messages" in text
    assert DECISION in text
    n = (
        next(line for line in text.splitlines() if "Parental Leave Policy (" in line)
        .rsplit("[", 1)[1]
        .rstrip("]")
    )
    assert f"[{n}] Parental Leave Policy — file://" in text  # the citation resolves in the Sources list
    assert "https://fakeco.slack.com/archives/" in json.dumps(post["blocks"])  # the thread is linked
    fake.assert_received("conversations.members", channel=fake.channel_id("eng"))
    blocks = post["blocks"]  # valid Block Kit within Slack's limits
    assert (
        0 < len(blocks) <= MAX_BLOCKS
        and blocks[0]["type"] == "header"
        and len(blocks[0]["text"]["text"]) <= 150
    )
    for b in blocks:
        assert b["type"] in ("header", "section", "context", "divider")
        assert len((b.get("text") or {}).get("text", "")) <= 3000
        assert all(len(e.get("text", "")) <= 3000 for e in b.get("elements", []))


def test_a_report_for_a_channel_of_alice_alone_includes_the_restricted_document(assistant, settings, fake):
    post = _weekly_report(assistant, settings, fake, "leads", scope="restricted/")  # the control: alice alone
    assert "Salary Bands 2026" in post["text"] and "restricted/salary-bands-2026.md" in post["text"]


@pytest.mark.parametrize("empty,posted", [("post", 1), ("skip", 0)])
def test_an_empty_period_posts_one_line_or_nothing(assistant, settings, fake, empty, posted):
    clock = Clock(datetime(2026, 3, 20, tzinfo=UTC))
    s = add_schedule(
        assistant.engine.store,
        "weekly mon 09:00",
        channel="#eng",
        scope="policies/",
        tz="Europe/Berlin",
        empty=empty,
        now=clock().timestamp(),
    )
    clock.set(MONDAY_9_BERLIN)
    _scheduler(assistant, settings, fake, clock).tick()
    got = _posted_to(fake, "eng")
    assert len(got) == posted
    assert runs_of(assistant.engine.store, s.id)[0]["status"] == ("posted" if posted else "empty")
    if posted:
        assert got[0]["text"].splitlines()[0] == (
            "Report for policies/ · Mon 23 Mar 2026 09:00 – Mon 30 Mar 2026 "
            "09:00 (CEST): No changes in policies/."
        )


# -- /schedule -------------------------------------------------------------------------------------
def test_slash_command_add_list_delete_and_the_report_goes_to_the_named_channel(assistant, settings, fake):
    store = assistant.engine.store
    eng, leads = fake.channel_id("eng"), fake.channel_id("leads")
    clock = Clock(datetime(2026, 3, 26, 12, tzinfo=UTC))
    say = lambda text, channel=eng: handle_schedule_command(
        text, channel_id=channel, user_id="UALICE", store=store, tz="Europe/Berlin", now=clock
    )
    reply = say("weekly mon 09:00 summarize #eng")
    assert "#1" in reply and "/schedule delete 1" in reply and "Next: Mon 30 Mar 2026 09:00 CEST" in reply
    s1 = get_schedule(store, 1)
    assert (s1.scope, s1.channel, s1.cadence.expr, s1.tz) == (
        "slack:#eng",
        eng,
        "0 9 * * mon",
        "Europe/Berlin",
    )
    say(f"daily 17:30 changes in drive:Security to <#{leads}|leads> --empty skip")
    s2 = get_schedule(store, 2)
    assert (s2.scope, s2.channel, s2.empty, s2.origin_channel) == ("gdrive:Security", leads, "skip", eng)
    say("every 6h summarize <#C999|random> to #leads")
    assert get_schedule(store, 3).scope == "slack:#random" and get_schedule(store, 3).channel == "#leads"

    assert "#1" in say("list") and "#2" in say("list")
    assert "No reports are scheduled" in say("list", channel="C000000")
    assert "No schedule 1 in this channel" in say("delete 1", channel=leads)
    assert "Deleted scheduled report #1" in say("delete 1")
    assert [s.id for s in list_schedules(store)] == [2, 3]

    bad = say("every blursday summarize #eng")
    assert "Cannot read the schedule 'every blursday'" in bad and "0 9 * * MON" in bad
    assert "/schedule weekly mon 09:00 summarize #eng" in say("weekly mon 09:00")  # no scope: usage
    assert "Name the channel as #name" in say("daily 9:00 summarize <#C123>")
    handle_schedule_command(
        f"daily 9:00 summarize <#{eng}|>",
        channel_id=eng,
        user_id="UALICE",
        store=store,
        now=clock,
        channel_name=lambda cid: fake.channels[cid].name,
    )
    assert get_schedule(store, 4).scope == "slack:#eng"

    clock.set(
        datetime(2026, 3, 26, 17, tzinfo=UTC)
    )  # 6-hourly from midnight Berlin: 18:00 CET; #2 was due 17:30
    results = _scheduler(assistant, settings, fake, clock).tick()
    assert [(r.schedule_id, r.status) for r in results] == [(2, "empty"), (3, "posted")]
    assert len(_posted_to(fake, "leads")) == 1 and not _posted_to(fake, "eng")


def test_scheduler_thread_posts_when_due_and_stops(assistant, settings, fake):
    clock = Clock(datetime(2026, 3, 20, tzinfo=UTC))
    add_schedule(
        assistant.engine.store,
        "weekly mon 09:00",
        channel="#eng",
        scope="policies/",
        tz="Europe/Berlin",
        now=clock().timestamp(),
    )
    clock.set(MONDAY_9_BERLIN)
    sched = _scheduler(assistant, settings, fake, clock)
    sched.start()
    deadline = time.monotonic() + 30
    while not _posted_to(fake, "eng") and time.monotonic() < deadline:
        time.sleep(0.05)
    sched.stop()
    assert len(_posted_to(fake, "eng")) == 1


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_add_list_run_now_remove(settings, fake, monkeypatch):
    from assistant.cli import app

    for k in [k for k in os.environ if k.startswith("ASSISTANT_")]:
        monkeypatch.delenv(k)
    env = {
        "ASSISTANT_DATA_DIR": str(settings.data_dir),
        "ASSISTANT_LLM__MODEL": "none",
        "ASSISTANT_SLACK__BOT_TOKEN": fake.token,
        "ASSISTANT_SLACK__API_URL": fake.url,
        "ASSISTANT_SCHEDULER__USE_LLM": "false",
        "ASSISTANT_LOG_LEVEL": "WARNING",
    }
    cli = CliRunner()
    got = cli.invoke(
        app,
        [
            "schedule",
            "add",
            "--cron",
            "0 9 * * MON",
            "--tz",
            "Europe/Berlin",
            "--scope",
            "policies/",
            "--to",
            "#eng",
        ],
        env=env,
    )
    assert got.exit_code == 0, got.output
    assert (
        "added #1: '0 9 * * MON' = cron '0 9 * * mon' (Europe/Berlin)" in got.output
        and "next run: Mon" in got.output
    )
    listed = json.loads(cli.invoke(app, ["schedule", "list", "--json"], env=env).output)
    assert [(x["id"], x["scope"], x["channel"], x["tz"]) for x in listed] == [
        (1, "policies/", "#eng", "Europe/Berlin")
    ]
    got = cli.invoke(app, ["schedule", "run-now", "1"], env=env)
    assert got.exit_code == 0, got.output
    assert got.output.startswith("posted: r1-") and len(_posted_to(fake, "eng")) == 1
    assert "run-now" not in got.output and "No changes in policies/" in got.output
    assert cli.invoke(app, ["schedule", "remove", "1"], env=env).exit_code == 0
    assert "No schedules" in cli.invoke(app, ["schedule", "list"], env=env).output


def test_cli_rejects_a_bad_phrase_with_an_example(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env["ASSISTANT_DATA_DIR"] = str(tmp_path / "data")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistant.cli",
            "schedule",
            "add",
            "--cron",
            "every fortnight-ish",
            "--to",
            "#eng",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "Cannot read the schedule 'every fortnight-ish'" in p.stderr and "0 9 * * MON" in p.stderr
