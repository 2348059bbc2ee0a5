"""The bot's HTTP endpoint as an attacker and a flaky network see it, and answers that survive a crash.

Raw sockets against the running endpoint (limits, timeouts, slow clients, forged requests and what
they leave in the log), the Web API client's retries and start-up errors against the fake Slack,
and a bot process killed in the middle of an answer, then restarted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from pydantic import SecretStr
from slack_sdk import WebClient

from assistant.errors import ConfigError
from assistant.service import Assistant
from assistant.slackbot import blocks as bk
from assistant.slackbot.app import HTTPLimits, create_app, serve_http
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_bot_support import SIGNING_SECRET, SlackDelivery, northwind_world

LIMITS = HTTPLimits(max_body_bytes=64_000, header_timeout_s=0.5, body_timeout_s=0.5, max_connections=1000)


@pytest.fixture
def endpoint(settings):
    """A bot with an empty index behind its HTTP endpoint (small limits), the fake Slack and a signer."""
    with FakeSlack() as fake:
        world = northwind_world(fake)
        s = settings.model_copy(
            update={
                "slack": settings.slack.model_copy(
                    update={"signing_secret": SecretStr(SIGNING_SECRET), "api_url": fake.url}
                )
            }
        )
        assistant = Assistant(s, llm=None)
        app = create_app(s, assistant, WebClient(token=fake.token, base_url=fake.url), workers=2)
        server = serve_http(app, host="127.0.0.1", port=0, limits=LIMITS).start()
        try:
            yield fake, world, server, SlackDelivery(server.url, timeout=10)
        finally:
            server.close()
            app.assistant_bot.close()
            assistant.close()


def raw(server, data: bytes, *, wait_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait_s``)."""
    with socket.create_connection((server.host, server.port), timeout=wait_s) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


def status_of(reply: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.1 (\d{3})", reply)
    return int(m.group(1)) if m else None


def head(length: str, path: str = "/slack/events") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


# -- limits ---------------------------------------------------------------------------------------
def test_a_huge_declared_body_is_refused_at_once_unread(endpoint):
    _, _, server, _ = endpoint
    assert status_of(raw(server, head("1000000000") + b"{}")) == 413  # answered, not held for a billion bytes


def test_a_content_length_that_is_not_a_number_is_a_plain_400(endpoint, capfd):
    _, _, server, _ = endpoint
    assert status_of(raw(server, head("abc") + b"{}")) == 400
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("what", ["head", "body"])
def test_a_slow_client_is_cut_off_by_the_timeouts(endpoint, what):
    _, _, server, _ = endpoint
    partial = b"POST /slack/events HTTP/1.1\r\nHost: x\r\n" if what == "head" else head("100") + b'{"a"'
    assert status_of(raw(server, partial, wait_s=10)) == 408  # cut off, not held until the client gives up


def test_a_signed_request_is_answered_while_many_slow_clients_hold_connections(endpoint):
    """The fast version of scripts/bench_slow_clients.py: 60 connections dribbling bytes, one real request."""
    _, _, server, slack = endpoint
    stop = threading.Event()
    socks = []

    def dribble(s: socket.socket, data: bytes) -> None:
        for b in data:
            if stop.is_set():
                return
            try:
                s.sendall(bytes([b]))
            except OSError:
                return  # cut off by the server: what should happen
            time.sleep(0.05)

    threads = []
    for i in range(60):
        s = socket.create_connection((server.host, server.port), timeout=10)
        socks.append(s)
        data = head("5000") + b"x" * 200 if i % 2 else head("5000")
        threads.append(threading.Thread(target=dribble, args=(s, data), daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        body = json.dumps({"type": "url_verification", "token": "t", "challenge": "c-42"})
        status, text, _ = slack.post(body, "application/json")
        assert status == 200 and "c-42" in text
    finally:
        stop.set()
        for s in socks:
            s.close()


# -- signature first, and what reaches the log -----------------------------------------------------
def test_unsigned_malformed_json_gets_401_not_400(endpoint):
    fake, _, _, slack = endpoint
    before = fake.api_call_count()
    assert slack.post("{not json", "application/json", secret="forged")[0] == 401
    assert slack.post("{not json", "application/json")[0] == 400  # signed but broken: now it may learn that
    assert fake.api_call_count() == before


def test_a_forged_request_leaves_only_its_size_and_verdict_in_the_log(endpoint, caplog):
    _, _, _, slack = endpoint
    caplog.set_level(logging.DEBUG)
    forged = json.dumps(
        {
            "type": "event_callback",
            "event": {"type": "app_mention", "text": "x" * 50_000},
            "note": "ok\n2026-01-01 INFO assistant: admin logged in",
        }
    )
    assert slack.post(forged, "application/json", secret="forged")[0] == 401
    messages = [r.getMessage() for r in caplog.records]
    assert not any("admin logged in" in m or "x" * 100 in m for m in messages), messages
    assert any(f"({len(forged)} bytes)" in m and "signature" in m for m in messages)


def test_what_is_logged_from_a_signed_request_stays_on_one_line(endpoint, caplog):
    _, _, _, slack = endpoint
    caplog.set_level(logging.DEBUG)
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0FAKE",
            "event_id": "Ev\nFAKE ENTRY",
            "event": {"type": "reaction_added", "user": "U1", "reaction": "x\ny"},
        }
    )
    assert slack.post(body, "application/json")[0] in (200, 404)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("assistant")]
    assert lines and not any("\n" in m for m in lines), lines


# -- the Web API client --------------------------------------------------------------------------
def test_a_read_timeout_on_auth_test_is_retried(settings):
    with FakeSlack() as fake:
        northwind_world(fake)
        fake.delay_next("auth.test", 2.0)
        s = settings.model_copy(update={"slack": settings.slack.model_copy(update={"api_url": fake.url})})
        assistant = Assistant(s, llm=None)
        app = create_app(s, assistant, WebClient(token=fake.token, base_url=fake.url, timeout=0.5), workers=1)
        assert app.assistant_bot.bot_user_id == fake.bot_user
        assert len(fake.calls("auth.test")) == 2
        app.assistant_bot.close()
        assistant.close()


def test_a_timed_out_post_is_not_repeated(settings):
    """chat.postMessage may have posted before the timeout: repeating it could say the answer twice."""
    from slack_sdk.errors import SlackApiError

    from assistant.slackbot.app import with_retries

    with FakeSlack() as fake:
        w = northwind_world(fake)
        client = with_retries(WebClient(token=fake.token, base_url=fake.url, timeout=0.5))
        fake.delay_next("chat.postMessage", 1.5)
        with pytest.raises((TimeoutError, SlackApiError)):
            client.chat_postMessage(channel=w.general, text="hello")
        assert len(fake.calls("chat.postMessage")) == 1


@pytest.mark.parametrize("case", ["wrong token", "no network", "wrong app token"])
def test_start_up_failures_are_one_clear_line(settings, case):
    with FakeSlack() as fake:
        northwind_world(fake)
        if case == "no network":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                url = f"http://127.0.0.1:{s.getsockname()[1]}/api/"  # nothing listens there once closed
        else:
            url = fake.url
        s = settings.model_copy(
            update={
                "slack": settings.slack.model_copy(
                    update={
                        "api_url": url,
                        "bot_token": SecretStr("xoxb-wrong" if case == "wrong token" else fake.token),
                    }
                )
            }
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env.update(
            {
                "ASSISTANT_DATA_DIR": str(s.data_dir),
                "ASSISTANT_LLM__MODEL": "none",
                "ASSISTANT_SLACK__BOT_TOKEN": s.slack.bot_token.get_secret_value(),
                "ASSISTANT_SLACK__SIGNING_SECRET": SIGNING_SECRET,
                "ASSISTANT_SLACK__API_URL": url,
            }
        )
        mode = ["--http", "--host", "127.0.0.1", "--port", "0"]
        if case == "wrong app token":
            env["ASSISTANT_SLACK__APP_TOKEN"] = "xapp-1-wrong"
            mode = ["--socket"]
        proc = subprocess.run(
            [sys.executable, "-m", "assistant.cli", "slack", *mode, "--no-scheduler"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr, proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1
        if case == "wrong app token":
            assert "slack.app_token" in errors[0] and "Slack refused" in errors[0]
            return
        assert (
            ("invalid_auth" in errors[0] and "slack.bot_token" in errors[0])
            if case == "wrong token"
            else ("Could not reach Slack" in errors[0] and url in errors[0])
        )
        with pytest.raises(ConfigError):
            create_app(
                s, Assistant(s, llm=None), WebClient(token=s.slack.bot_token.get_secret_value(), base_url=url)
            )


# -- exactly once across a crash -------------------------------------------------------------------
def _bot_env(fake: FakeSlack, data_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env.update(
        {
            "ASSISTANT_DATA_DIR": str(data_dir),
            "ASSISTANT_LOG_LEVEL": "WARNING",
            "ASSISTANT_LLM__MODEL": "none",
            "ASSISTANT_SLACK__BOT_TOKEN": fake.token,
            "ASSISTANT_SLACK__SIGNING_SECRET": SIGNING_SECRET,
            "ASSISTANT_SLACK__API_URL": fake.url,
        }
    )
    return env


def _start_bot(fake: FakeSlack, data_dir) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "assistant.cli",
            "slack",
            "--http",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-scheduler",
        ],
        env=_bot_env(fake, data_dir),
        stderr=subprocess.PIPE,
        text=True,
    )
    line = ""
    while "listening on" not in line:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "the bot exited before listening"
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
    return proc, re.search(r"(http://\S+/slack/events)", line).group(1)


def _bot_replies(fake: FakeSlack, channel: str, ts: str) -> list[dict]:
    return [m for m in fake.thread(channel, ts) if m.get("user") == fake.bot_user]


def test_a_question_left_unanswered_by_a_killed_bot_is_answered_once_after_restart(tmp_path):
    with FakeSlack() as fake:
        w = northwind_world(fake)
        fake.hold_next("chat.update")  # the bot posts "thinking…", then hangs while writing the answer
        proc, url = _start_bot(fake, tmp_path / "data")
        try:
            ev = fake.message_event(
                w.general, w.bob, f"<@{fake.bot_user}> how do I request a laptop?", mention=True
            )
            assert SlackDelivery(url).event(ev)[0] == 200
            assert fake.held.wait(120), "the bot never got to writing its answer"
            proc.kill()  # the crash: no clean-up, no goodbye
            proc.wait(timeout=30)
        finally:
            fake.release()
            if proc.poll() is None:
                proc.kill()
        ts = ev["event"]["ts"]
        [placeholder] = _bot_replies(fake, w.general, ts)
        assert placeholder["text"].startswith(bk.THINKING)

        proc, url = _start_bot(fake, tmp_path / "data")
        try:
            deadline = time.time() + 120
            while time.time() < deadline and "couldn't find" not in str(
                _bot_replies(fake, w.general, ts)[0].get("text")
            ):
                time.sleep(0.2)
            # Slack retries the delivery too (the first one got its 200 long ago, but a retry may still come)
            assert SlackDelivery(url).event(ev, retry_num=1)[0] == 200
            time.sleep(1.0)
        finally:
            proc.terminate()
            assert proc.wait(timeout=60) == 0
        replies = _bot_replies(fake, w.general, ts)
        assert (
            len(replies) == 1 and "couldn't find" in replies[0]["text"]
        )  # the placeholder became the answer
        assert any(b.get("type") == "actions" for b in replies[0]["blocks"])
        assert len(fake.calls("chat.postMessage", channel=w.general, thread_ts=ts)) == 1

        proc, _ = _start_bot(fake, tmp_path / "data")  # and a third start finds nothing left to do
        try:
            time.sleep(2.0)
        finally:
            proc.terminate()
            assert proc.wait(timeout=60) == 0
        assert len(fake.calls("chat.postMessage", channel=w.general, thread_ts=ts)) == 1
        assert _bot_replies(fake, w.general, ts) == replies


def _dead_owner() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return f"{socket.gethostname()}|{done.stdout.strip()}|gone"


@pytest.mark.parametrize("state", ["too old", "already answered", "still owned"])
def test_recovery_tells_the_asker_leaves_finished_answers_alone_and_never_steals_live_work(settings, state):
    from assistant.slackbot.handlers import RESTART_TEXT
    from assistant.slackbot.inbox import Inbox, Job
    from assistant.store import Store

    with FakeSlack() as fake:
        w = northwind_world(fake)
        ev = fake.message_event(w.dm_alice, w.alice, "what is the laptop policy?")["event"]
        placeholder = fake.post(w.dm_alice, fake.bot_user, bk.THINKING)
        if state == "already answered":
            fake.messages[w.dm_alice][placeholder].update(
                text="The answer.", blocks=[bk.feedback_actions("t")]
            )
        store = Store(settings.data_dir / "store.sqlite")
        inbox = Inbox(store)
        if state != "still owned":
            inbox.owner = _dead_owner()  # written by a process that has since died
        created = time.time() - (2 * 86400 if state == "too old" else 10)
        inbox.add(
            Job(
                "Ev1",
                "answer_message",
                {
                    "channel": w.dm_alice,
                    "user": w.alice,
                    "text": ev["text"],
                    "ts": ev["ts"],
                    "thread_ts": None,
                    "is_dm": True,
                },
                created,
            ),
        )
        if state == "already answered":
            inbox.note_reply("Ev1", placeholder)  # noted when the placeholder was posted
        store.close()
        s = settings.model_copy(update={"slack": settings.slack.model_copy(update={"api_url": fake.url})})
        assistant = Assistant(s, llm=None)
        app = create_app(s, assistant, WebClient(token=fake.token, base_url=fake.url), workers=1)
        assert app.assistant_bot.wait_idle(30)
        bot_msgs = [m for m in fake.messages[w.dm_alice].values() if m.get("user") == fake.bot_user]
        assert len(bot_msgs) == 1 and not fake.calls("chat.postMessage")
        left = app.assistant_bot.inbox.pending()
        app.assistant_bot.close()
        assistant.close()
        if state == "too old":
            assert bot_msgs[0]["text"] == RESTART_TEXT and left == 0
        elif state == "already answered":
            assert bot_msgs[0]["text"] == "The answer." and not fake.calls("chat.update") and left == 0
        else:
            assert bot_msgs[0]["text"] == bk.THINKING and not fake.calls("chat.update") and left == 1


def test_an_ask_left_by_a_dead_process_is_answered_once_through_its_response_url(settings):
    from assistant.engine import Engine
    from assistant.slackbot.inbox import Inbox, Job
    from tests.fakes.hash_embedder import HashEmbedder

    with FakeSlack() as fake:
        w = northwind_world(fake)
        cmd = fake.slash_command("/ask", "how do I get a new laptop?", user=w.alice, channel=w.general)
        s = settings.model_copy(update={"slack": settings.slack.model_copy(update={"api_url": fake.url})})
        engine = Engine.open(s, embedder=HashEmbedder())
        dead = Inbox(engine.store)
        dead.owner = _dead_owner()  # accepted by a process that died before answering
        dead.add(
            Job(
                f"cmd:{cmd['trigger_id']}",
                "answer_command",
                {
                    "text": cmd["text"],
                    "user": w.alice,
                    "channel": w.general,
                    "response_url": cmd["response_url"],
                },
                time.time() - 30,
            ),
        )
        assistant = Assistant(s, engine=engine, llm=None)
        for _ in range(2):  # the restart answers it; a second restart finds nothing left
            app = create_app(s, assistant, WebClient(token=fake.token, base_url=fake.url), workers=1)
            assert app.assistant_bot.wait_idle(60)
            app.assistant_bot.close()
        assert len(fake.responses) == 1 and fake.responses[0]["response_type"] == "ephemeral"
        assert "couldn't find" in json.dumps(fake.responses[0])
        assert Inbox(engine.store).pending() == 0
        assistant.close()


def test_recording_a_delivery_keeps_the_retrieval_caches(settings):
    """Deliveries are bookkeeping: they must not bump the store generation that search caches key on."""
    from assistant.slackbot.handlers import Once
    from assistant.slackbot.inbox import Inbox, Job
    from assistant.store import Store

    store = Store(settings.data_dir / "store.sqlite")
    inbox = Inbox(store)
    once = Once(store, inbox=inbox)
    before = store.generation
    assert once.first("Ev1", "msg:C1:1", job=Job("Ev1", "answer_message", {"channel": "C1"}))
    assert not once.first("Ev1")
    assert store.generation == before and inbox.pending() == 1
    store.close()
