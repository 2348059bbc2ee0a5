"""Persisted schedules of summary reports, posted to Slack exactly once per period.

A schedule (``schedules`` table; the store owns the tables and their SQL) names a cadence (``assistant.cadence``: APScheduler
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

``handle_schedule_command`` is the ``/schedule`` slash command's logic (the bot calls it).
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
from typing import Protocol

from assistant.cadence import Cadence, next_fire, parse_cadence, previous_fire
from assistant.errors import AssistantError, ConfigError
from assistant.reports import Report, build_report, scope_label

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
    store,
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


def get_schedule(store, schedule_id: int) -> Schedule | None:
    rows = store.schedule_rows(int(schedule_id))
    return _row(rows[0]) if rows else None


def list_schedules(store) -> list[Schedule]:
    return [_row(r) for r in store.schedule_rows()]


def remove_schedule(store, schedule_id: int) -> bool:
    return store.delete_schedule(int(schedule_id))


def runs_of(store, schedule_id: int) -> list[dict]:
    return store.schedule_runs(int(schedule_id))


class Poster(Protocol):
    """Where reports go (``assistant.report_posting.SlackPoster`` in production)."""

    def resolve(self, channel: str) -> str: ...
    def audience(self, channel_id: str): ...
    def post(self, channel_id: str, *, text: str, blocks: list[dict], run_key: str) -> str: ...
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
        assistant,
        poster: Poster,
        *,
        settings,
        now: Callable[[], datetime] | None = None,
        store=None,
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
            ts = self.poster.post(channel_id, text=report.text(), blocks=report.blocks(), run_key=key)
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


# -- /schedule ------------------------------------------------------------------------------------
SLASH_HELP = (
    "Usage: `/schedule weekly mon 09:00 summarize #eng`, `/schedule daily 17:30 changes in drive:Security "
    "to #security`, `/schedule list`, `/schedule delete <id>`. Add a time zone after the time "
    "(`daily 17:30 Europe/Berlin`) and `--empty skip` to post nothing when nothing changed."
)
_VERBS = r"summarize|summarise|summary of|changes in|changes to|what changed in|report on|report"
_ADD = re.compile(rf"^(?P<when>.+?)\s+(?:{_VERBS})\s+(?P<rest>.+)$", re.IGNORECASE)
_TO = re.compile(r"\s+(?:to|into|in)\s+(?P<to><#[A-Z0-9]+(?:\|[^>]*)?>|#[\w.\-]+)\s*$", re.IGNORECASE)
_EMPTY = re.compile(r"\s*--empty\s+(?P<e>\w+)\s*", re.IGNORECASE)
_REF = re.compile(r"^<#([A-Z0-9]+)(?:\|([^>]*))?>$")


def parse_scope_words(text: str, *, channel_name: Callable[[str], str] | None = None) -> str | None:
    """'#eng' / '<#C1|eng>' → 'slack:#eng'; 'drive:Security' → 'gdrive:Security'; 'everything' → None.
    ``channel_name`` (id → name, e.g. conversations.info) names a bare ``<#C1>`` or ``<#C1|>``."""
    text = text.strip()
    ref = _REF.match(text)
    if ref:
        name = ref.group(2) or (channel_name(ref.group(1)) if channel_name else None)
        if not name:
            raise ConfigError("Name the channel as #name (e.g. `summarize #eng`).")
        return f"slack:#{name}"
    if text.lower() in ("everything", "all", "all sources", "*"):
        return None
    if text.startswith("#"):
        return f"slack:{text}"
    if text.lower().startswith("drive:"):
        return "gdrive:" + text[6:]
    return text or None


def handle_schedule_command(
    text: str,
    *,
    channel_id: str,
    user_id: str,
    store,
    tz: str = "UTC",
    now: Callable[[], datetime] | None = None,
    channel_name: Callable[[str], str] | None = None,
) -> str:
    """The reply to ``/schedule <text>`` typed in ``channel_id`` (show it to the user ephemerally).
    Never raises for bad input: the reply explains what to write instead. ``tz``: the zone of
    phrases without one (``settings.scheduler.timezone``); ``channel_name``: id → name, for
    ``<#C123>`` references that arrive without a name."""
    text = (text or "").strip()
    words = text.split()
    try:
        if not words or words[0].lower() in ("help", "-h", "--help"):
            return SLASH_HELP
        if words[0].lower() in ("list", "ls"):
            mine = [s for s in list_schedules(store) if channel_id in (s.channel, s.origin_channel)]
            if not mine:
                return "No reports are scheduled for this channel. " + SLASH_HELP
            return "Scheduled reports here:\n" + "\n".join("• " + s.describe() for s in mine)
        if words[0].lower() in ("delete", "remove", "rm", "cancel"):
            sid = words[1].lstrip("#") if len(words) > 1 else ""
            s = get_schedule(store, int(sid)) if sid.isdigit() else None
            if s is None or channel_id not in (s.channel, s.origin_channel):
                return f"No schedule {sid or '(missing id)'} in this channel; `/schedule list` shows the ids."
            remove_schedule(store, s.id)
            return f"Deleted scheduled report #{s.id} ({s.spec})."
        empty = "post"
        m = _EMPTY.search(text)
        if m:
            empty, text = m.group("e").lower(), (text[: m.start()] + " " + text[m.end() :]).strip()
        add = _ADD.match(text)
        if not add:
            return f"I could not find what to report on in {text!r}. " + SLASH_HELP
        rest, target = add.group("rest"), channel_id
        to = _TO.search(rest)
        if to:
            rest = rest[: to.start()]
            ref = _REF.match(to.group("to"))
            target = ref.group(1) if ref else to.group("to")
        s = add_schedule(
            store,
            add.group("when"),
            channel=target,
            scope=parse_scope_words(rest, channel_name=channel_name),
            tz=tz,
            empty=empty,
            created_by=user_id,
            origin_channel=channel_id,
            now=(now() if now else datetime.now(UTC)).timestamp(),
        )
        nxt = next_fire(s.cadence, now() if now else datetime.now(UTC), anchor=s.created_at)
        nxt = nxt and nxt.astimezone(s.cadence.zone)
        when = f" Next: {nxt:%a %d %b %Y %H:%M %Z}." if nxt else ""
        return f"Scheduled report {s.describe()}.{when} Remove it with `/schedule delete {s.id}`."
    except AssistantError as e:
        return str(e)
