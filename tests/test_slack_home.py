"""Slack's one home: the report poster's client, the one cursor loop and the one scope parser.

The poster is the real ``SlackPoster`` with the client ``slackbot.web.make_client`` builds, against the
fake Slack; ``pages`` is driven by a recording callable (it takes any keyword-call that returns a
mapping, which is how the bot hands it ``WebClient`` methods).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from assistant.errors import ConfigError
from assistant.reports import Report
from assistant.slackbot.report_posting import SlackPoster
from assistant.slackbot.schedule_command import handle_schedule_command, scope_from_words
from connectors.slack.client import pages
from tests.conftest import make_settings
from tests.fakes.slack import FakeSlack


def _poster(tmp_path, fake: FakeSlack) -> SlackPoster:
    s = make_settings(tmp_path / "data", slack={"bot_token": fake.token, "api_url": fake.url})
    poster = SlackPoster.from_settings(s)
    poster.client.timeout = 0.5  # seconds: the fake's delayed answers arrive after it
    return poster


def test_a_timed_out_auth_test_is_retried_but_a_timed_out_report_post_is_not(tmp_path):
    with FakeSlack() as fake:
        eng = fake.add_channel("eng", members=[fake.add_user("alice", email="alice@example.com")])
        poster = _poster(tmp_path, fake)
        fake.delay_next("auth.test", 1.5)
        assert poster.auth()["user_id"]  # the read-only call was asked again and answered
        assert len(fake.calls("auth.test")) == 2

        start = datetime(2026, 3, 30, 7, tzinfo=UTC)
        report = Report("Report for #eng", "slack:#eng", start, start)
        fake.delay_next("chat.postMessage", 1.5)
        with pytest.raises(TimeoutError):
            poster.post(eng, report=report, run_key="r1-x")
        assert len(fake.calls("chat.postMessage")) == 1  # may have posted: the scheduler searches first


def test_the_poster_renders_the_report_it_is_given(tmp_path):
    with FakeSlack() as fake:
        eng = fake.add_channel("eng", members=[fake.add_user("alice", email="alice@example.com")])
        poster = _poster(tmp_path, fake)
        start = datetime(2026, 3, 30, 7, tzinfo=UTC)
        report = Report("Report for #eng", "slack:#eng", start, start, footer="key r1-x")
        ts = poster.post(eng, report=report, run_key="r1-x")
        (sent,) = fake.calls("chat.postMessage")
        assert ts and "No changes in #eng" in sent.params["text"]
        assert "No changes in #eng" in str(sent.params["blocks"])
        assert poster.find(eng, "r1-x") == ts


def test_a_poster_without_a_bot_token_says_which_setting_to_set(tmp_path):
    with pytest.raises(ConfigError, match="slack.bot_token"):
        SlackPoster.from_settings(make_settings(tmp_path / "data"))


def test_pages_follows_cursors_and_asks_for_the_next_page_only_when_wanted():
    served = {None: ("a", "c2"), "c2": ("b", "c3"), "c3": ("c", "")}
    asked: list = []

    def call(**kw):
        asked.append(kw.get("cursor"))
        item, nxt = served[kw.get("cursor")]
        return {"items": [item], "response_metadata": {"next_cursor": nxt}}

    assert [r["items"][0] for r in pages(call, limit=1)] == ["a", "b", "c"]
    assert asked == [None, "c2", "c3"]
    asked.clear()
    for _ in pages(call, limit=1):
        break
    assert asked == [None]  # leaving the loop leaves the next page unrequested


@pytest.mark.parametrize(
    "typed,scope",
    [
        ("<#C123|eng>", "slack:#eng"),
        ("<#C123>", "slack:#named-by-lookup"),
        ("#eng", "slack:#eng"),
        ("drive:Security", "gdrive:Security"),
        ("gdrive:R&amp;D", "gdrive:R&D"),  # Slack sends & as an entity
        ("handbook", "handbook"),
        ("", None),
    ],
)
def test_summarize_and_schedule_read_scope_words_the_same_way(typed, scope, tmp_path):
    assert scope_from_words(typed, channel_name=lambda cid: "named-by-lookup") == scope
    if not scope:
        return
    from assistant.store import Store

    store = Store(tmp_path / "store.sqlite")
    try:
        reply = handle_schedule_command(
            f"daily 09:00 summarize {typed}",
            channel_id="C999",
            user_id="U1",
            store=store,
            channel_name=lambda cid: "named-by-lookup",
        )
        from assistant.reports import list_schedules

        assert reply.startswith("Scheduled report") and [s.scope for s in list_schedules(store)] == [scope]
    finally:
        store.close()
