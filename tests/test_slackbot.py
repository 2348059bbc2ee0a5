# ruff: noqa: F811  (the llm_model_dir fixture is imported and used as a parameter)
"""The Slack bot end to end: signed HTTP deliveries to the running bolt app, real WebClient, fake Slack.

One ingested sample corpus and one bot for the module (a scripted model keeps it fast); every test
uses fresh messages, so tests do not see each other's answers.
"""

from __future__ import annotations

import json
import time

import pytest
from pydantic import SecretStr

from assistant.service import Assistant
from assistant.slackbot import blocks as bk
from connectors.local_files import LocalFilesConnector
from tests.conftest import SAMPLE_DOCS, make_settings
from tests.doubles import ScriptedLLM
from tests.fakes.slack_bot_support import ALICE_EMAIL, BotRig, block_action
from tests.llm_fixtures import llm_model_dir  # noqa: F401  (fixture)

CANARY = "NW-SALARY-CANARY-7731"
SALARY_Q = "What is the salary band for an L5 engineer?"
LEAVE_Q = "How many weeks of paid parental leave does a primary caregiver get?"


def scripted(messages: list[dict]) -> str:
    """A model that answers from the sources it is shown, like a good model would."""
    prompt = messages[-1]["content"]
    question = prompt.rsplit("Question:", 1)[-1].lower()
    if "kaboom" in question:
        raise RuntimeError("the model crashed")
    if "secondary" in question and "6 weeks" in prompt:
        return "Secondary caregivers get 6 weeks of fully paid leave [1]."
    if "caregiver" in question and "16 weeks" in prompt:
        return "Primary caregivers get 16 weeks of fully paid leave [1]."
    if "salary" in question and "182,000" in prompt:
        return f"The L5 band is $182,000 to $214,000 [1]. {CANARY} <!channel> see http://evil.example/x"
    if "laptop" in question and "IT portal" in prompt:
        return "Open the IT portal and choose Hardware request [1]."
    return "I couldn't find this in the documents you can access."


@pytest.fixture(scope="module")
def rig(tmp_path_factory, embedder):
    from assistant.engine import Engine

    settings = make_settings(tmp_path_factory.mktemp("slackbot") / "data", slack={"stream_every_s": 0.01})
    engine = Engine.open(settings, embedder=embedder)
    engine.sync(LocalFilesConnector(SAMPLE_DOCS, name="sample", acl_file=SAMPLE_DOCS / "acl.toml"))
    assistant = Assistant(settings, engine=engine, llm=ScriptedLLM(scripted))
    with BotRig(settings, assistant, workers=4) as r:
        yield r
    engine.close()


def everything_posted(fake) -> str:
    """Every text the bot made visible to anyone: posts, edits, ephemerals, response_url replies."""
    parts = [json.dumps(m.get("blocks")) + m.get("text", "") for m in fake.posted]
    parts += [json.dumps(u.get("blocks")) + str(u.get("text", "")) for u in fake.updates]
    parts += [json.dumps(e.get("blocks")) + str(e.get("text", "")) for e in fake.ephemerals]
    parts += [json.dumps(r) for r in fake.responses]
    return "\n".join(parts)


def final_reply(fake, channel: str, thread_ts: str) -> dict:
    msgs = [m for m in fake.thread(channel, thread_ts) if m.get("user") == fake.bot_user]
    assert len(msgs) == 1, f"expected one bot reply in the thread, got {len(msgs)}"
    return msgs[0]


def test_mention_answers_in_the_thread_with_citations_and_feedback_buttons(rig):
    ev = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q)
    status, _, _ = rig.slack.event(ev)
    assert status == 200
    rig.wait()
    ts = ev["event"]["ts"]
    post = rig.fake.assert_received("chat.postMessage", channel=rig.world.general, thread_ts=ts)[-1]
    assert post.params["unfurl_links"] is False and post.params["unfurl_media"] is False
    msg = final_reply(rig.fake, rig.world.general, ts)
    text = bk.plain_text(msg)
    assert "16 weeks" in text and "*Sources*" in text and "Parental Leave" in text
    assert "[1]" in text and "handbook/parental-leave.md" in text  # no URL → the path is shown
    assert rig.fake.updates, "the placeholder is replaced with chat.update"
    actions = [e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert actions == [bk.FEEDBACK_UP, bk.FEEDBACK_DOWN]


def test_the_same_event_delivered_three_times_is_answered_once(rig):
    ev = rig.mention(rig.world.bob, rig.world.general, "How do I request a new laptop?")
    for retry in (None, 1, 2):
        status, _, _ = rig.slack.event(ev, retry_num=retry)
        assert status == 200
    twin = dict(ev, event_id="EvTWIN0001")  # the same message under another event id
    rig.slack.event(twin)
    rig.wait()
    msg = final_reply(rig.fake, rig.world.general, ev["event"]["ts"])
    assert "laptop" in bk.plain_text(msg).lower()
    assert len(rig.fake.calls("chat.postMessage", thread_ts=ev["event"]["ts"])) == 1


def test_direct_message_is_answered_in_the_dm(rig):
    ev = rig.fake.message_event(rig.world.dm_bob, rig.world.bob, LEAVE_Q)
    assert rig.slack.event(ev)[0] == 200
    rig.wait()
    replies = [m for m in rig.fake.posted if m["channel"] == rig.world.dm_bob]
    assert len(replies) == 1 and "thread_ts" not in replies[0]
    final = rig.fake.message(rig.world.dm_bob, replies[0]["ts"])
    assert "16 weeks" in bk.plain_text(final)


def test_canary_never_reaches_a_channel_with_bob_but_reaches_alice_in_a_dm(rig):
    before = len(rig.fake.posted)
    # bob asks in #general: nothing he (or the channel) may read has the answer
    ev = rig.mention(rig.world.bob, rig.world.general, SALARY_Q)
    rig.slack.event(ev)
    # alice asks in #general: she may read it, bob and carol may not → private answer to alice only
    ev2 = rig.mention(rig.world.alice, rig.world.general, SALARY_Q)
    rig.slack.event(ev2)
    rig.wait()
    public = [m for m in rig.fake.posted[before:]] + rig.fake.updates
    assert not any("182,000" in json.dumps(m) or CANARY in json.dumps(m) for m in public)
    assert not any("salary-bands" in json.dumps(m) for m in public)
    assert bk.PRIVATE_NOTICE in bk.plain_text(final_reply(rig.fake, rig.world.general, ev2["event"]["ts"]))
    eph = [e for e in rig.fake.ephemerals if e["thread_ts"] == ev2["event"]["ts"]]
    assert len(eph) == 1 and eph[0]["user"] == rig.world.alice
    assert "182,000" in json.dumps(eph[0]["blocks"])
    assert not any(e["user"] == rig.world.bob for e in rig.fake.ephemerals)
    # alice in a DM: her own access
    dm = rig.fake.message_event(rig.world.dm_alice, rig.world.alice, SALARY_Q)
    rig.slack.event(dm)
    rig.wait()
    reply = [m for m in rig.fake.posted if m["channel"] == rig.world.dm_alice][-1]
    text = json.dumps(rig.fake.message(rig.world.dm_alice, reply["ts"])["blocks"])
    assert "182,000" in text and "salary-bands-2026.md" in text


def test_answer_text_has_no_broadcasts_or_foreign_links(rig):
    dm = rig.fake.message_event(rig.world.dm_alice, rig.world.alice, "salary band L5 engineer, please")
    rig.slack.event(dm)
    rig.wait()
    out = everything_posted(rig.fake)
    assert "<!channel>" not in out and "@channel" not in out and "evil.example" not in out


def test_thread_follow_up_uses_the_earlier_question(rig):
    ev = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q)
    rig.slack.event(ev)
    rig.wait()
    root = ev["event"]["ts"]
    rig.assistant.llm.prompts.clear()
    follow = rig.mention(rig.world.bob, rig.world.general, "and what about secondary ones?", thread_ts=root)
    rig.slack.event(follow)
    rig.wait()
    rig.fake.assert_received("conversations.replies", channel=rig.world.general, ts=root)
    prompt = rig.assistant.llm.prompts[0]
    assert [m["role"] for m in prompt[1:3]] == ["user", "assistant"]
    assert "primary caregiver" in prompt[1]["content"] and "16 weeks" in prompt[2]["content"]
    replies = [m for m in rig.fake.thread(rig.world.general, root) if m.get("user") == rig.fake.bot_user]
    assert len(replies) == 2 and "6 weeks" in bk.plain_text(replies[-1])


def test_slash_ask_and_summarize_reply_privately(rig):
    cmd = rig.fake.slash_command("/ask", LEAVE_Q, user=rig.world.bob, channel=rig.world.general)
    status, body, _ = rig.slack.command(cmd)
    assert status == 200 and "Looking that up" in body
    summ = rig.fake.slash_command(
        "/summarize", "handbook since 30d", user=rig.world.bob, channel=rig.world.general
    )
    status, _, _ = rig.slack.command(summ)
    assert status == 200
    rig.wait()
    by_name = {r["name"]: r for r in rig.fake.responses}
    ask = by_name[cmd["response_url"].rsplit("/", 1)[-1]]
    assert ask["response_type"] == "ephemeral" and "16 weeks" in json.dumps(ask["blocks"])
    summary = by_name[summ["response_url"].rsplit("/", 1)[-1]]
    text = json.dumps(summary["blocks"])
    assert "Summary of handbook" in text and "Parental Leave" in text and "salary" not in text.lower()


def test_summarize_a_channel_reference_and_bad_window(rig):
    core = rig.bot
    assert core.parse_summary_request(f"<#{rig.world.general}|general> since 7d")[0] == "slack:#general"
    assert core.parse_summary_request(f"<#{rig.world.general}> 2w")[0] == "slack:#general"  # name looked up
    assert core.parse_summary_request("drive:Security")[0] == "gdrive:Security"
    cmd = rig.fake.slash_command("/summarize", "", user=rig.world.bob, channel=rig.world.general)
    rig.slack.command(cmd)
    rig.wait()
    reply = [r for r in rig.fake.responses if r["name"] == cmd["response_url"].rsplit("/", 1)[-1]]
    assert "/summarize #eng" in reply[0]["text"]


def test_feedback_click_is_stored_once_per_person(rig):
    ev = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q)
    rig.slack.event(ev)
    rig.wait()
    msg = final_reply(rig.fake, rig.world.general, ev["event"]["ts"])
    n0 = len(rig.assistant.engine.store.list_feedback())
    payload = block_action(
        rig.fake,
        user=rig.world.alice,
        channel=rig.world.general,
        message=msg,
        action_id=bk.FEEDBACK_UP,
        name="fb1",
    )
    assert rig.slack.action(payload)[0] == 200
    rig.slack.action(payload)  # a double click
    rig.wait()
    rows = rig.assistant.engine.store.list_feedback()[n0:]
    assert len(rows) == 1
    fb = rows[0]
    assert fb.vote == 1 and fb.user == ALICE_EMAIL and fb.channel == rig.world.general
    assert fb.question == LEAVE_Q and "16 weeks" in fb.answer
    assert fb.sources and fb.sources[0]["path"] == "handbook/parental-leave.md"
    assert any(r["name"] == "fb1" and "Thanks" in r["text"] for r in rig.fake.responses)


@pytest.mark.parametrize("how", ["forged", "stale", "tampered"])
def test_bad_signatures_get_401_and_cause_no_web_api_calls(rig, how):
    ev = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q)
    rig.wait()
    rig.fake.clear_requests()
    kw = {
        "forged": {"secret": "not-the-secret"},
        "stale": {"timestamp": int(time.time()) - 6 * 60},
        "tampered": {"tamper": json.dumps(ev).replace("parental", "paternal")},
    }[how]
    status, _, _ = rig.slack.event(ev, **kw)
    assert status == 401
    cmd = rig.fake.slash_command("/ask", LEAVE_Q, user=rig.world.bob, channel=rig.world.general)
    assert rig.slack.command(cmd, **kw)[0] == 401
    time.sleep(0.2)
    rig.wait()
    assert rig.fake.api_call_count() == 0
    assert not [r for r in rig.fake.responses if r["name"] == cmd["response_url"].rsplit("/", 1)[-1]]


def test_a_failure_becomes_a_friendly_message_and_the_bot_keeps_working(rig, caplog):
    ev = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q + " kaboom")
    rig.slack.event(ev)
    rig.wait()
    assert "went wrong" in bk.plain_text(final_reply(rig.fake, rig.world.general, ev["event"]["ts"]))
    assert any(r.levelname == "ERROR" and "answering in" in r.getMessage() for r in caplog.records)
    ev2 = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q)
    rig.slack.event(ev2)
    rig.wait()
    assert "16 weeks" in bk.plain_text(final_reply(rig.fake, rig.world.general, ev2["event"]["ts"]))


def test_rate_limited_web_api_calls_are_retried(rig):
    rig.fake.fail_next("chat.postMessage", 2, status=429, retry_after=0)
    ev = rig.mention(rig.world.bob, rig.world.general, LEAVE_Q)
    rig.slack.event(ev)
    rig.wait()
    assert "16 weeks" in bk.plain_text(final_reply(rig.fake, rig.world.general, ev["event"]["ts"]))
    assert len(rig.fake.calls("chat.postMessage", thread_ts=ev["event"]["ts"])) == 3


def test_socket_mode_handler_is_wired_to_the_app(rig):
    from assistant.errors import ConfigError
    from assistant.slackbot.app import socket_mode_handler

    with pytest.raises(ConfigError, match="app_token"):
        socket_mode_handler(rig.app, rig.settings)
    s = rig.settings.model_copy(
        update={"slack": rig.settings.slack.model_copy(update={"app_token": SecretStr("xapp-1-fake")})}
    )
    handler = socket_mode_handler(rig.app, s)
    assert handler.app is rig.app and handler.client.app_token == "xapp-1-fake"
    assert (
        handler.client.web_client.base_url == rig.fake.url
    )  # apps.connections.open goes to the configured API


@pytest.mark.slow
def test_bundled_model_streams_into_the_placeholder_then_posts_the_checked_answer(rig, llm_model_dir):
    llm = rig.settings.llm.model_copy(
        update={"model": str(llm_model_dir), "adapter": "none", "max_new_tokens": 48}
    )
    settings = rig.settings.model_copy(update={"llm": llm})
    real = Assistant(settings, engine=rig.assistant.engine)
    with BotRig(settings, real, workers=2, stream_every_s=0.05) as r2:
        ev = r2.fake.message_event(r2.world.dm_bob, r2.world.bob, LEAVE_Q)
        ev["event_id"] = "EvSLOWMODEL1"  # this second fake workspace shares the store with the first
        assert r2.slack.event(ev)[0] == 200
        r2.wait(600)
        reply = next(p for p in r2.fake.posted if p["channel"] == r2.world.dm_bob)
        edits = [u for u in r2.fake.updates if u["ts"] == reply["ts"]]
        assert any("writing…" in json.dumps(u.get("blocks"), ensure_ascii=False) for u in edits[:-1]), edits
        final = bk.plain_text(r2.fake.message(r2.world.dm_bob, reply["ts"]))
        assert "*Sources*" in final and "parental-leave.md" in final


def test_slash_schedule_adds_and_lists_reports_for_the_channel(rig):
    def run(text: str) -> str:
        cmd = rig.fake.slash_command("/schedule", text, user=rig.world.alice, channel=rig.world.general)
        assert rig.slack.command(cmd)[0] == 200
        rig.wait()
        name = cmd["response_url"].rsplit("/", 1)[-1]
        return next(r["text"] for r in rig.fake.responses if r["name"] == name)

    assert "No reports are scheduled" in run("list")
    added = run(f"weekly mon 09:00 summarize <#{rig.world.general}|general>")
    assert "#" in added and "Next" in added, added
    assert "slack:#general" in run("list") or "general" in run("list")
