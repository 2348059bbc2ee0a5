"""The Slack bot's rows in the store (a mixin of ``Store``): delivery records, the durable inbox,
answers kept for their feedback buttons, and votes. Schema migration 6 creates the tables.

Deliveries and inbox rows are written in ``bookkeeping()`` transactions, which do not bump
``generation``: recording a delivery must not throw away the retrieval caches. Not here: what the
bot does with them (``assistant.slackbot.handlers``, ``inbox``). It relies on ``Store``'s
``lock``, ``db`` and ``execute``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

_ADD_INBOX_ROW = "INSERT OR IGNORE INTO slackbot_inbox (key, kind, args, owner, created) VALUES (?,?,?,?,?)"


class BotRows:
    """Mixed into ``Store`` (``assistant.slackbot`` is the caller)."""

    # -- bookkeeping (the bot's delivery records and inbox) ----------------------------------------
    @contextmanager
    def bookkeeping(self) -> Iterator[sqlite3.Connection]:
        """A transaction for tables no search depends on (the Slack bot's ``slackbot_events`` and
        ``slackbot_inbox``): atomic like ``transaction()`` but without bumping ``generation``, so
        recording a delivery does not throw away the retrieval caches."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- deliveries (exactly-once) ----------------------------------------------------------------
    def prune_bot_records(self, *, events_before: float, answers_before: float) -> None:
        """Forget deliveries seen before ``events_before`` and answers (their feedback buttons) created
        before ``answers_before``; votes already given are kept in ``feedback``."""
        self.execute("DELETE FROM slackbot_events WHERE seen < ?", (events_before,))
        self.execute("DELETE FROM slackbot_answers WHERE created < ?", (answers_before,))

    def record_deliveries(self, keys: tuple[str, ...], *, job: tuple | None = None) -> bool:
        """Record delivery ``keys``; True when none was recorded before. ``job`` = (key, kind, args
        JSON, owner, created) becomes an inbox row in the same transaction, when every key is new."""
        with self.bookkeeping() as db:
            new = [
                bool(
                    db.execute(
                        "INSERT OR IGNORE INTO slackbot_events VALUES (?, ?) RETURNING key", (k, time.time())
                    ).fetchall()
                )
                for k in keys
            ]
            if job is not None and all(new):
                db.execute(_ADD_INBOX_ROW, job)
        return all(new)

    # -- the inbox ----------------------------------------------------------------------------------
    def add_inbox_row(self, row: tuple) -> None:
        """An inbox row alone (key, kind, args JSON, owner, created); ``record_deliveries`` writes one
        together with its delivery keys."""
        with self.bookkeeping() as db:
            db.execute(_ADD_INBOX_ROW, row)

    def note_inbox_reply(self, key: str, ts: str) -> None:
        self.execute("UPDATE slackbot_inbox SET reply_ts=? WHERE key=?", (ts, key))

    def finish_inbox_job(self, key: str) -> None:
        self.execute("DELETE FROM slackbot_inbox WHERE key=?", (key,))

    def inbox_count(self) -> int:
        return self.execute("SELECT count(*) FROM slackbot_inbox")[0][0]

    def inbox_rows(self) -> list[tuple]:
        """(key, kind, args JSON, owner, created, attempts, reply_ts), oldest first."""
        return self.execute(
            "SELECT key, kind, args, owner, created, attempts, reply_ts FROM slackbot_inbox ORDER BY created"
        )

    def claim_inbox_row(self, key: str, *, owner: str, previous_owner: str) -> int | None:
        """Take the row from ``previous_owner`` (compare-and-set); its attempt count, or None if taken."""
        got = self.execute(
            "UPDATE slackbot_inbox SET owner=?, attempts=attempts+1 WHERE key=? AND owner=? RETURNING attempts",
            (owner, key, previous_owner),
        )
        return got[0][0] if got else None

    # -- answers and votes --------------------------------------------------------------------------
    def add_bot_answer(
        self, token: str, *, question: str, answer: str, sources: str, channel: str | None, user: str | None
    ) -> None:
        """Keep an answer under its feedback ``token`` (``sources``: JSON)."""
        self.execute(
            "INSERT INTO slackbot_answers VALUES (?,?,?,?,?,?,?)",
            (token, question, answer, sources, channel, user, time.time()),
        )

    def bot_answer(self, token: str) -> tuple | None:
        """(question, answer, sources JSON, channel) of the answer behind ``token``, or None."""
        rows = self.execute(
            "SELECT question, answer, sources, channel FROM slackbot_answers WHERE token=?", (token,)
        )
        return rows[0] if rows else None

    def record_vote(self, token: str, user: str, vote: int) -> bool:
        """One vote per (answer, person); True when stored or changed, False when the same vote was given."""
        return bool(
            self.execute(
                "INSERT INTO slackbot_votes VALUES (?,?,?) ON CONFLICT(token, user) DO UPDATE SET "
                "vote=excluded.vote WHERE vote != excluded.vote RETURNING token",
                (token, user, vote),
            )
        )
