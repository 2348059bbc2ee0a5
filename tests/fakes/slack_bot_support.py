"""Driving the Slack bot the way Slack does: signed HTTP deliveries to the running bot, plus a small world.

Slack signs every request: ``X-Slack-Signature: v0=HMAC_SHA256(secret, "v0:{timestamp}:{body}")`` and
``X-Slack-Request-Timestamp``. ``SlackDelivery`` builds and POSTs events (JSON), slash commands
(form) and block actions (form ``payload=``) to the bot's URL and returns (status, body, seconds).
``BotRig`` is the whole set-up used by the bot tests, the demo and the benchmarks: a ``FakeSlack``
with the Northwind people and channels, the bolt app from ``create_app`` with a real ``WebClient``
pointed at the fake, and the bot's HTTP server on 127.0.0.1 (port 0).

Not here: the fake Web API itself (``tests/fakes/slack.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlencode

from pydantic import SecretStr
from slack_sdk import WebClient

from tests.fakes.slack import FakeSlack

SIGNING_SECRET = "test-signing-secret-8f1c"
ALICE_EMAIL, BOB_EMAIL, CAROL_EMAIL = (
    "alice@northwind.example",
    "bob@northwind.example",
    "carol@northwind.example",
)


def signature(secret: str, timestamp: int | str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackDelivery:
    """Signs and POSTs payloads to the bot, as Slack's servers would."""

    def __init__(self, url: str, secret: str = SIGNING_SECRET, *, timeout: float = 30.0) -> None:
        self.url, self.secret, self.timeout = url, secret, timeout

    def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        retry_num: int | None = None,
        tamper: str | None = None,
    ) -> tuple[int, str, float]:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature(secret or self.secret, ts, body),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        data = (tamper if tamper is not None else body).encode()
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode(), time.perf_counter() - t0
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), time.perf_counter() - t0

    def event(self, envelope: dict, **kw) -> tuple[int, str, float]:
        return self.post(json.dumps(envelope), "application/json", **kw)

    def command(self, fields: dict, **kw) -> tuple[int, str, float]:
        return self.post(urlencode(fields), "application/x-www-form-urlencoded", **kw)

    def action(self, payload: dict, **kw) -> tuple[int, str, float]:
        return self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded", **kw
        )


def block_action(
    fake: FakeSlack, *, user: str, channel: str, message: dict, action_id: str, name: str = "act"
) -> dict:
    """The ``block_actions`` payload Slack sends when ``user`` clicks the button ``action_id`` in ``message``."""
    button = next(
        e
        for b in message.get("blocks") or []
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["action_id"] == action_id
    )
    return {
        "type": "block_actions",
        "team": {"id": fake.team_id, "domain": fake.domain},
        "user": {"id": user, "username": fake.users[user].name, "team_id": fake.team_id},
        "api_app_id": "AFAKE",
        "token": "verification-token",
        "trigger_id": fake._new_id("trig"),
        "container": {
            "type": "message",
            "message_ts": message.get("ts"),
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "channel": {"id": channel, "name": fake.channels[channel].name},
        "message": message,
        "response_url": fake.response_url(name),
        "actions": [
            {
                "action_id": action_id,
                "block_id": "feedback",
                "value": button["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}",
                "text": button["text"],
            }
        ],
    }


@dataclass
class World:
    alice: str
    bob: str
    carol: str
    general: str  # alice + bob (+ carol)
    leads: str  # alice only
    dm_alice: str
    dm_bob: str


def northwind_world(fake: FakeSlack) -> World:
    alice = fake.add_user("alice", email=ALICE_EMAIL, real_name="Alice Chen")
    bob = fake.add_user("bob", email=BOB_EMAIL, real_name="Bob Diaz")
    carol = fake.add_user("carol", email=CAROL_EMAIL, real_name="Carol Ito")
    fake.add_user("ci-bot", is_bot=True)
    general = fake.add_channel("general", members=[alice, bob, carol])
    leads = fake.add_channel("people-leads", private=True, members=[alice])
    dm_alice = fake.add_channel("dm-alice", is_im=True, members=[alice])
    dm_bob = fake.add_channel("dm-bob", is_im=True, members=[bob])
    return World(alice, bob, carol, general, leads, dm_alice, dm_bob)


class BotRig:
    """FakeSlack + world + bolt app + the bot's HTTP server. Use as a context manager."""

    def __init__(
        self,
        settings,
        assistant,
        *,
        workers: int = 8,
        latency_s: float = 0.0,
        stream_every_s: float | None = None,
    ) -> None:
        from assistant.slackbot.app import create_app, serve_http

        self.fake = FakeSlack(latency_s=latency_s)
        self.world = northwind_world(self.fake)
        slack = {
            "signing_secret": SecretStr(SIGNING_SECRET),
            "bot_token": SecretStr(self.fake.token),
            "api_url": self.fake.url,
        }
        if stream_every_s is not None:
            slack["stream_every_s"] = stream_every_s
        self.settings = settings.model_copy(update={"slack": settings.slack.model_copy(update=slack)})
        self.assistant = assistant
        self.client = WebClient(token=self.fake.token, base_url=self.fake.url)
        self.app = create_app(self.settings, assistant, self.client, workers=workers)
        self.bot = self.app.assistant_bot
        self.server = serve_http(self.app, host="127.0.0.1", port=0).start()
        self.slack = SlackDelivery(self.server.url)

    def mention(self, user: str, channel: str, text: str, *, thread_ts: str | None = None) -> dict:
        return self.fake.message_event(
            channel, user, f"<@{self.fake.bot_user}> {text}", thread_ts=thread_ts, mention=True
        )

    def wait(self, timeout: float = 60.0) -> None:
        assert self.bot.wait_idle(timeout), "the bot did not finish its work in time"

    def close(self) -> None:
        self.server.close()
        self.bot.close()
        self.fake.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- for benchmarks and the load test ------------------------------------------------------------
def is_final(message: dict) -> bool:
    """A bot message in its final state: an answer (feedback buttons) or a notice (private answer, error)."""
    blocks = message.get("blocks") or []
    if any(b.get("type") == "actions" for b in blocks):
        return True
    from assistant.slackbot import blocks as bk

    return message.get("text") in (bk.PRIVATE_NOTICE, bk.ERROR_TEXT)


def bot_messages(fake: FakeSlack, channel: str, thread_ts: str) -> list[dict]:
    return [m for m in fake.thread(channel, thread_ts) if m.get("user") == fake.bot_user]


def wait_final(
    fake: FakeSlack, channel: str, thread_ts: str, *, timeout: float = 300.0, poll_s: float = 0.02
) -> float | None:
    """Seconds (perf_counter) at which the thread's bot reply became final, or None on timeout."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if any(is_final(m) for m in bot_messages(fake, channel, thread_ts)):
            return time.perf_counter()
        time.sleep(poll_s)
    return None


def copy_first_source_llm():
    """A stand-in model for load tests: answers with the first sentence of source [1], cited — instant."""
    import re as _re

    from tests.doubles import ScriptedLLM

    def reply(messages: list[dict]) -> str:
        prompt = messages[-1]["content"]
        m = _re.search(r"<<<\n(.*?)\n>>>", prompt, _re.DOTALL)
        text = " ".join((m.group(1) if m else "").split())
        first = next((s for s in _re.split(r"(?<=[.!?])\s+", text) if len(s) > 30), text[:200])
        return f"{first} [1]." if first else "I couldn't find this in the documents you can access."

    return ScriptedLLM(reply)
