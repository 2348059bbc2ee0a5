"""The bot's durable inbox: every accepted question is a row until it has been answered.

Together with ``Once`` (which records that a delivery was seen, in the same transaction as
the row written here) this turns Slack's at-least-once delivery into exactly-once answers across a
crash: a question recorded but not answered when the process died is still a row at the next
start, and ``BotCore.recover`` answers it then — or tells the asker, when it is too old or has
already failed twice. A row names its owner (host, pid, start id); rows of a process that is still
alive are never taken, rows of a dead process on this host are taken at once, and rows of another
host after ``foreign_lease_s``.

The reply's message ``ts`` is written to the row as soon as the "thinking…" placeholder is posted,
so a recovered answer replaces that placeholder instead of posting a second message.

``posted_reply`` finds that reply in Slack (or a placeholder posted just before a crash could note
it); ``is_final`` tells a finished answer from a placeholder. Not here: what a job does
(``handlers``), or SQL (``assistant.store_bot``; schema migration 6 creates the table).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from assistant.slackbot import blocks as bk

_KEEP_EVENTS_S = 3 * 86400
_KEEP_ANSWERS_S = 90 * 86400


@dataclass(frozen=True)
class Job:
    """One accepted request: ``kind`` names the ``BotCore`` method, ``args`` its JSON-able keyword arguments."""

    key: str
    kind: str
    args: dict
    created: float = 0.0
    attempts: int = 1
    reply_ts: str | None = None


def posted_reply(
    client,
    channel: str,
    ts: str,
    *,
    thread_ts: str | None,
    is_dm: bool,
    known_ts: str | None,
    bot_user_id: str,
) -> dict | None:
    """Our reply to the question at ``ts``: the message ``known_ts``, else a "thinking…" placeholder after it."""
    root = thread_ts or (None if is_dm else ts)
    if root:
        msgs = client.conversations_replies(channel=channel, ts=root, limit=200).get("messages") or []
    else:
        msgs = client.conversations_history(channel=channel, oldest=ts, limit=100).get("messages") or []
    for m in sorted(msgs, key=lambda m: float(m.get("ts", 0))):
        if float(m.get("ts", 0)) <= float(ts) or m.get("user") != bot_user_id:
            continue
        if m.get("ts") == known_ts or (known_ts is None and (m.get("text") or "").startswith(bk.THINKING)):
            return m
    return None


def is_final(message: dict) -> bool:
    """An answer (it carries the feedback buttons) or a closing notice, not a placeholder being written."""
    return any(b.get("type") == "actions" for b in message.get("blocks") or []) or message.get("text") in (
        bk.PRIVATE_NOTICE,
        bk.ERROR_TEXT,
        bk.RESTART_TEXT,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Inbox:
    """Rows of accepted, unfinished jobs in the store (``Store``'s inbox methods, ``assistant.store_bot``)."""

    def __init__(self, store, *, foreign_lease_s: float = 900.0) -> None:
        self.store = store
        self.host = socket.gethostname()
        self.owner = f"{self.host}|{os.getpid()}|{uuid.uuid4().hex[:12]}"
        self.foreign_lease_s = foreign_lease_s

    def row(self, job: Job) -> tuple:
        """``job`` as the inbox row ``Store.record_deliveries`` writes with its delivery keys."""
        return (job.key, job.kind, json.dumps(job.args), self.owner, job.created or time.time())

    def add(self, job: Job) -> None:
        """Write ``job`` alone (a delivery writes its row through ``Once.first``)."""
        self.store.add_inbox_row(self.row(job))

    def note_reply(self, key: str, ts: str) -> None:
        self.store.note_inbox_reply(key, ts)

    def finish(self, key: str) -> None:
        self.store.finish_inbox_job(key)

    def pending(self) -> int:
        return self.store.inbox_count()

    def _orphaned(self, owner: str, created: float) -> bool:
        host, pid, _ = (owner.split("|") + ["", "", ""])[:3]
        if owner == self.owner:
            return False
        if host == self.host and pid.isdigit():
            return not _pid_alive(int(pid))
        return time.time() - created > self.foreign_lease_s

    def take_orphans(self) -> list[Job]:
        """Claim the rows whose owner is gone (compare-and-set on the owner, so two starters never share one)."""
        taken: list[Job] = []
        for key, kind, args, owner, created, _attempts, reply_ts in self.store.inbox_rows():
            if not self._orphaned(owner, created):
                continue
            attempts = self.store.claim_inbox_row(key, owner=self.owner, previous_owner=owner)
            if attempts is not None:
                taken.append(Job(key, kind, json.loads(args), created, attempts, reply_ts))
        return taken


class Once:
    """Has this key been handled before? Memory first (fast path), then a row in the store (restarts)."""

    def __init__(self, store, *, memory: int = 10_000, inbox: Inbox | None = None) -> None:
        self.store, self.inbox = store, inbox
        self._mem: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._memory = memory
        # feedback buttons older than _KEEP_ANSWERS_S answer "I no longer have this answer"; votes are kept
        now = time.time()
        store.prune_bot_records(events_before=now - _KEEP_EVENTS_S, answers_before=now - _KEEP_ANSWERS_S)

    def first(self, *keys: str, job: Job | None = None) -> bool:
        """True when none of ``keys`` was seen; records them all either way. Atomic within the process
        (an original and its retry may arrive at the same moment); the table settles it across processes.
        ``job`` is written to the inbox in the same transaction when the keys are new."""
        keys = tuple(k for k in keys if k)
        with self._lock:
            seen = any(k in self._mem for k in keys)
            for k in keys:
                self._mem[k] = None
                self._mem.move_to_end(k)
            while len(self._mem) > self._memory:
                self._mem.popitem(last=False)
            if seen:
                return False
            # the delivery and its inbox row: both or neither
            row = self.inbox.row(job) if job is not None and self.inbox is not None else None
            return self.store.record_deliveries(keys, job=row)
