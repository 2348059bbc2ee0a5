"""Persisted schedules of summary reports, posted to Slack exactly once per period.

A schedule (``schedules`` table; the store owns the tables and their SQL) names a cadence (``cadence``: APScheduler
cron/interval triggers with a time zone), a scope and a target channel. ``Scheduler.tick()`` looks
at the injected clock, finds each schedule's latest fire time and runs that period if it is due.

Exactly once, per period [previous fire, fire):
1. Claim: ``INSERT`` (schedule, kind, period_start) into ``schedule_runs`` (UNIQUE) with a lease,
   BEFORE anything is posted. The insert is the lock: two processes on one store → one claimant.
2. Count the attempt (committed), then post with the run's key in the message metadata
   (``event_payload.run_key``) and in its footer; record the returned ``ts``.
3. A claimed run without a ``ts`` whose lease expired (the claimant crashed or the post failed) is
   taken over; if an attempt was counted, the channel history (``conversations.history``) is
   searched for the key first, so a post that went out before the crash is recorded, not repeated.
A period missed while no scheduler ran is run once at start-up if its fire time is at most
``scheduler.grace_s`` old; older periods are recorded as ``missed``. Only the latest period counts
(runs coalesce). Web API calls are not retried on connection errors (that could double-post);
rate limits (429) are.

The poster (``Poster``) is injected: this package knows nothing of Slack (``assistant.slackbot.
report_posting.SlackPoster`` renders and posts; ``assistant.slackbot.schedule_command`` is ``/schedule``).
Not done: per-user time zones from Slack profiles (use a zone in the phrase or
``scheduler.timezone``), editing a schedule in place (delete and add).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from assistant.errors import ConfigError
from assistant.reports.cadence import Cadence, next_fire, parse_cadence, previous_fire
from assistant.reports.report import Report, build_report, scope_label
from assistant.retrieval import Audience

if TYPE_CHECKING:
    from assistant.service import Assistant
    from assistant.settings import Settings
    from assistant.store import Store

log = logging.getLogger(__name__)

FINAL = ("posted", "empty", "missed", "failed")
EMPTY_POLICIES = ("post", "skip")


@dataclass(frozen=True)
class Schedule:
    id: int
    spec: str
    cadence: Cadence
    scope: str | None
    channel: str  # a channel id (C123) or '#name', resolved when posting
    empty: str  # "post" a one-line "no changes", or "skip"
    created_by: str | None
    origin_channel: str | None
    created_at: float

    @property
    def tz(self) -> str:
        return self.cadence.tz

    @property
    def title(self) -> str:
        return f"Report for {scope_label(self.scope)}"

    def describe(self) -> str:
        return (
            f"#{self.id}: '{self.spec}' = {self.cadence.describe()}, what changed in "
            f"{self.scope or 'all sources'} → {_channel_ref(self.channel)}"
            f"{'' if self.empty == 'post' else ' (nothing posted when empty)'}"
        )


def _channel_ref(ch: str) -> str:
    return f"<#{ch}>" if re.fullmatch(r"[CGD][A-Z0-9]+", ch) else ch


def _row(r) -> Schedule:
    return Schedule(r[0], r[1], Cadence(r[2], r[3], r[4]), r[5], r[6], r[7], r[8], r[9], r[10])


def add_schedule(
    store: Store,
    spec: str,
    *,
    channel: str,
    scope: str | None = None,
    tz: str = "UTC",
    empty: str = "post",
    created_by: str | None = None,
    origin_channel: str | None = None,
    now: float | None = None,
) -> Schedule:
    """Validate and persist a schedule. ``spec`` is a phrase or cron expression (see cadence)."""
    cadence = parse_cadence(spec, tz=tz)
    if empty not in EMPTY_POLICIES:
        raise ConfigError(f"--empty must be 'post' or 'skip', not {empty!r}.")
    if not channel:
        raise ConfigError("A schedule needs a channel to post to, e.g. --to '#eng'.")
    sid = store.add_schedule_row(
        spec=spec,
        kind=cadence.kind,
        expr=cadence.expr,
        tz=cadence.tz,
        scope=scope or None,
        channel=channel,
        empty=empty,
        created_by=created_by,
        origin_channel=origin_channel,
        created_at=time.time() if now is None else now,
    )
    return get_schedule(store, sid)


def get_schedule(store: Store, schedule_id: int) -> Schedule | None:
    rows = store.schedule_rows(int(schedule_id))
    return _row(rows[0]) if rows else None


def list_schedules(store: Store) -> list[Schedule]:
    return [_row(r) for r in store.schedule_rows()]


def remove_schedule(store: Store, schedule_id: int) -> bool:
    return store.delete_schedule(int(schedule_id))


def runs_of(store: Store, schedule_id: int) -> list[dict]:
    return store.schedule_runs(int(schedule_id))


class Poster(Protocol):
    """Where reports go (``assistant.slackbot.report_posting.SlackPoster`` in production): it
    resolves a channel reference, says who reads the channel, renders and posts a report with its
    run key, and finds an earlier post of a run key."""

    def resolve(self, channel: str) -> str: ...
    def audience(self, channel_id: str) -> Audience: ...
    def post(self, channel_id: str, *, report: Report, run_key: str) -> str: ...
    def find(self, channel_id: str, run_key: str) -> str | None: ...


@dataclass(frozen=True)
class RunResult:
    schedule_id: int
    run_key: str
    status: str  # posted | found | empty | missed | failed | retry
    ts: str | None = None
    report: Report | None = None


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Scheduler:
    """Runs due schedules. ``now`` is injectable so tests drive time; several instances (threads
    or processes) may share one store."""

    def __init__(
        self,
        assistant: Assistant,
        poster: Poster,
        *,
        settings: Settings,
        now: Callable[[], datetime] | None = None,
        store: Store | None = None,
        use_llm: bool | None = None,
        owner: str | None = None,
    ) -> None:
        self.assistant, self.poster, self.settings = assistant, poster, settings.scheduler
        self.store = store or assistant.engine.store
        self.now = now or (lambda: datetime.now(UTC))
        self.use_llm = self.settings.use_llm if use_llm is None else use_llm
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ------------------------------------------------------------------------------
    def tick(self) -> list[RunResult]:
        """Run every schedule whose latest period is due and not yet done. Returns what happened."""
        now = self.now()
        out: list[RunResult] = []
        for s in list_schedules(self.store):
            fire = previous_fire(s.cadence, now, anchor=s.created_at)
            if fire is None or fire.timestamp() < s.created_at:
                continue  # the schedule did not exist at that fire time
            start = previous_fire(s.cadence, fire - timedelta(microseconds=1), anchor=s.created_at)
            start = start or fire - (next_fire(s.cadence, fire, anchor=s.created_at) - fire)
            try:
                got = self._run(s, start.timestamp(), fire.timestamp(), "scheduled", now)
            except Exception:  # one bad schedule must not stop the others
                log.exception("scheduler: schedule #%s failed", s.id)
                continue
            if got:
                out.append(got)
        return out

    def run_now(self, schedule_id: int) -> RunResult:
        """An extra run right now covering [the last scheduled fire, now); does not use up a period."""
        s = get_schedule(self.store, schedule_id)
        if s is None:
            raise ConfigError(f"No schedule #{schedule_id}. See `assistant schedule list`.")
        now = self.now()
        start = previous_fire(s.cadence, now, anchor=s.created_at) or now - timedelta(days=7)
        got = self._run(s, start.timestamp(), now.timestamp(), f"manual-{now.timestamp():.0f}", now)
        if got is None:
            raise ConfigError(
                f"Schedule #{schedule_id} is already being run right now; try again in a moment."
            )
        return got

    def next_due(self) -> datetime | None:
        now = self.now()
        times = [next_fire(s.cadence, now, anchor=s.created_at) for s in list_schedules(self.store)]
        return min((t for t in times if t), default=None)

    # -- the exactly-once protocol -------------------------------------------------------------
    def _run(self, s: Schedule, start: float, end: float, kind: str, now: datetime) -> RunResult | None:
        t = now.timestamp()
        key = f"r{s.id}-{_utc(end):%Y%m%dT%H%M%SZ}" + ("" if kind == "scheduled" else "-m")
        seen = self.store.schedule_run_state(s.id, kind, start)
        if seen and (seen[0] in FINAL or seen[1] > t):
            return None  # done, or someone (maybe a retry backing off) holds the lease: no write needed
        claim = self.store.claim_schedule_run(
            s.id,
            kind,
            start,
            end,
            run_key=key,
            owner=self.owner,
            lease_until=t + self.settings.lease_s,
            now=t,
        )
        if claim is None:  # someone else holds a live claim
            return None
        run_id, attempts, errors = claim
        try:
            channel_id = self.poster.resolve(s.channel)
            if attempts:  # an earlier attempt may have reached Slack: look before posting again
                ts = self.poster.find(channel_id, key)
                if ts:
                    self._finish(run_id, "posted", channel=channel_id, ts=ts)
                    return RunResult(s.id, key, "found", ts)
            if kind == "scheduled" and t - end > self.settings.grace_s:
                self._finish(run_id, "missed", error=f"due {_utc(end):%Y-%m-%d %H:%M} UTC, beyond grace_s")
                log.warning(
                    "scheduler: schedule #%s missed the period ending %s (beyond the grace window)",
                    s.id,
                    _utc(end),
                )
                return RunResult(s.id, key, "missed")
            audience = self.poster.audience(channel_id)
            zone = s.cadence.zone
            report = build_report(
                self.assistant,
                s,
                _utc(start).astimezone(zone),
                _utc(end).astimezone(zone),
                audience,
                use_llm=self.use_llm,
                max_items=self.settings.max_items,
            )
            report.footer = f"Scheduled report #{s.id} · {s.cadence.describe()} · key {key}"
            if report.empty and s.empty == "skip":
                self._finish(run_id, "empty", channel=channel_id)
                return RunResult(s.id, key, "empty", report=report)
            if not self._attempt(run_id):
                return None  # lost the lease while building
            ts = self.poster.post(channel_id, report=report, run_key=key)
            self._finish(run_id, "posted", channel=channel_id, ts=ts)
            log.info("scheduler: posted report #%s (%s) to %s", s.id, key, channel_id)
            return RunResult(s.id, key, "posted", ts, report)
        except Exception as e:  # noqa: BLE001 - any failure: release the lease and retry later
            final = errors + 1 >= self.settings.max_attempts
            backoff = min(
                30.0 * 2**errors, 1800.0
            )  # the next try (history first) after 30 s, 60 s, 120 s ...
            self.store.fail_schedule_run(
                run_id, owner=self.owner, final=final, retry_at=t + backoff, error=str(e), now=t
            )
            log.warning(
                "scheduler: report #%s (%s) failed: %s%s", s.id, key, e, " — giving up" if final else ""
            )
            return RunResult(s.id, key, "failed" if final else "retry")

    def _attempt(self, run_id: int) -> bool:
        """Count the post attempt (so a successor searches the history first) and renew the lease."""
        t = self.now().timestamp()
        return self.store.count_schedule_attempt(
            run_id, owner=self.owner, lease_until=t + self.settings.lease_s
        )

    def _finish(
        self,
        run_id: int,
        status: str,
        *,
        channel: str | None = None,
        ts: str | None = None,
        error: str | None = None,
    ) -> None:
        self.store.finish_schedule_run(
            run_id, status, channel=channel, ts=ts, error=error, now=self.now().timestamp()
        )

    # -- running -------------------------------------------------------------------------------
    def serve(self, *, stop: threading.Event | None = None) -> None:
        """Tick until ``stop`` is set: at each fire time, and every ``poll_s`` for new schedules/retries."""
        stop = stop or self._stop
        log.info("scheduler: running (%d schedules)", len(list_schedules(self.store)))
        while not stop.is_set():
            try:
                self.tick()
                due = self.next_due()
            except Exception:
                log.exception("scheduler: tick failed")
                due = None
            wait = self.settings.poll_s
            if due is not None:
                wait = min(wait, max(0.5, (due - self.now()).total_seconds()))
            stop.wait(wait)

    def start(self) -> threading.Thread:
        """Run ``serve`` in a daemon thread (inside the bot process)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.serve, name="report-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, *, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
