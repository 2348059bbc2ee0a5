"""The bot's durable inbox: every accepted question is a row until it has been answered.

Together with ``handlers.Once`` (which records that a delivery was seen, in the same transaction as
the row written here) this turns Slack's at-least-once delivery into exactly-once answers across a
crash: a question recorded but not answered when the process died is still a row at the next
start, and ``BotCore.recover`` answers it then — or tells the asker, when it is too old or has
already failed twice. A row names its owner (host, pid, start id); rows of a process that is still
alive are never taken, rows of a dead process on this host are taken at once, and rows of another
host after ``foreign_lease_s``.

The reply's message ``ts`` is written to the row as soon as the "thinking…" placeholder is posted,
so a recovered answer replaces that placeholder instead of posting a second message.

``posted_reply`` finds that reply in Slack (or a placeholder posted just before a crash could note
it); ``is_final`` tells a finished answer from a placeholder. Not here: what a job does (``handlers``). The table is created ad hoc like the bot's other tables
(``slackbot_events`` etc.); it moves into the store's migrations with them.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

from assistant.slackbot import blocks as bk


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
    """Rows of accepted, unfinished jobs in the store (``store.execute``; ``add`` inside ``store.bookkeeping()``)."""

    def __init__(self, store, *, foreign_lease_s: float = 900.0) -> None:
        self.store = store
        self.host = socket.gethostname()
        self.owner = f"{self.host}|{os.getpid()}|{uuid.uuid4().hex[:12]}"
        self.foreign_lease_s = foreign_lease_s

    def add(self, db, job: Job) -> None:
        """Write ``job`` inside the caller's transaction ``db`` (the one that records the delivery)."""
        db.execute(
            "INSERT OR IGNORE INTO slackbot_inbox (key, kind, args, owner, created) VALUES (?,?,?,?,?)",
            (job.key, job.kind, json.dumps(job.args), self.owner, job.created or time.time()),
        )

    def note_reply(self, key: str, ts: str) -> None:
        self.store.execute("UPDATE slackbot_inbox SET reply_ts=? WHERE key=?", (ts, key))

    def finish(self, key: str) -> None:
        self.store.execute("DELETE FROM slackbot_inbox WHERE key=?", (key,))

    def pending(self) -> int:
        return self.store.execute("SELECT count(*) FROM slackbot_inbox")[0][0]

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
        rows = self.store.execute(
            "SELECT key, kind, args, owner, created, attempts, reply_ts FROM slackbot_inbox ORDER BY created"
        )
        for key, kind, args, owner, created, _attempts, reply_ts in rows:
            if not self._orphaned(owner, created):
                continue
            got = self.store.execute(
                "UPDATE slackbot_inbox SET owner=?, attempts=attempts+1 WHERE key=? AND owner=? "
                "RETURNING attempts",
                (self.owner, key, owner),
            )
            if got:
                taken.append(Job(key, kind, json.loads(args), created, got[0][0], reply_ts))
        return taken
