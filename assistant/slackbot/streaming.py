"""Streaming a model's words into the bot's "thinking…" placeholder, at most every ``every_s`` seconds.

``Streamer`` is the ``on_delta`` callback ``Assistant.ask`` is given: it collects the deltas and
updates the placeholder (``chat.update``) with what was written so far, marked as not yet checked
(``blocks.streaming_message``). A failed update is logged and skipped: it must not lose the answer,
which replaces the placeholder when it is done. Not here: the final answer (``handlers``).
"""

from __future__ import annotations

import logging
import time

from assistant.slackbot import blocks as bk

log = logging.getLogger("assistant.slackbot.handlers")


class Streamer:
    """Collects model deltas and pushes them into the placeholder at most every ``every_s`` seconds."""

    def __init__(self, client, channel: str, ts: str, *, every_s: float, allowed_urls=frozenset()) -> None:
        self.client, self.channel, self.ts, self.every_s = client, channel, ts, every_s
        self.parts: list[str] = []
        self.last = time.monotonic()
        self.updates = 0
        self.allowed_urls = set(allowed_urls)

    def __call__(self, delta: str) -> None:
        self.parts.append(delta)
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            try:
                self.client.chat_update(
                    channel=self.channel,
                    ts=self.ts,
                    **bk.streaming_message("".join(self.parts), allowed_urls=self.allowed_urls),
                )
                self.updates += 1
            except Exception as e:  # noqa: BLE001 - a failed progress update must not lose the answer
                log.warning("slackbot: streaming update failed: %s", e)
