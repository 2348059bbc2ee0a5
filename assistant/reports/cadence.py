"""When a scheduled report runs: natural phrases and cron expressions → fire times.

``parse_cadence("weekdays 8am", tz="Europe/Berlin")`` → a ``Cadence`` (a normalised cron
expression or an interval, plus the time zone). ``previous_fire`` (the last fire time at or before
a moment) turns "now" into the period a run reports on; ``next_fire`` says when the next one is.
APScheduler's ``CronTrigger`` matches the cron fields against local wall-clock time; this module
turns wall times into instants itself so that clock changes neither repeat nor drop a period
(see "fire times" below).

Accepted (case-insensitive; an IANA time zone may follow, e.g. ``daily 17:30 Europe/Berlin``):
``every monday 9:00``, ``weekly mon 09:00``, ``mondays at 9am``, ``every mon,thu 9:00``,
``daily 17:30``, ``every day at 5pm``, ``weekdays 8am``, ``hourly``, ``every 6h``,
``every 30 minutes``, and 5-field cron with standard weekday numbers (0 or 7 = Sunday) or names:
``0 9 * * MON``, ``30 8 * * 1-5``.

Not done: phrases relative to a date ("next tuesday"), monthly phrases (use cron: ``0 9 1 * *``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from assistant.errors import ConfigError

EXAMPLES = (
    "'every monday 9:00', 'weekly mon 09:00', 'daily 17:30', 'weekdays 8am', 'every 6h' "
    "or a cron expression like '0 9 * * MON'"
)
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAY_WORDS = {
    **{d: d for d in _DAYS},
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
    "tues": "tue",
    "thur": "thu",
    "thurs": "thu",
    "weds": "wed",
}
_TIME = re.compile(r"^(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")
_EVERY = re.compile(r"^every\s+(\d+)\s*(m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL_S = 60


@dataclass(frozen=True)
class Cadence:
    """``kind`` "cron" with a 5-field ``expr`` (APScheduler weekday names), or "interval" with
    ``expr`` = seconds; ``tz`` an IANA zone name. Intervals count in wall-clock time from the
    local midnight of the schedule's ``anchor`` (the day it was made), so 'every 6h' fires at 00,
    06, 12 and 18 local time, before and after a clock change."""

    kind: str
    expr: str
    tz: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def describe(self) -> str:
        if self.kind == "interval":
            s = int(self.expr)
            unit = next(((n, u) for n, u in ((86400, "d"), (3600, "h"), (60, "m")) if s % n == 0), (1, "s"))
            return f"every {s // unit[0]}{unit[1]} ({self.tz})"
        return f"cron '{self.expr}' ({self.tz})"


def local_midnight(ts: float, zone: ZoneInfo) -> datetime:
    d = datetime.fromtimestamp(ts, zone)
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


def check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin', "
            "'America/New_York' or 'UTC'."
        ) from None
    return name


def _bad(text: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"Cannot read the schedule {text!r}{': ' + why if why else ''}. Write it like {EXAMPLES}."
    )


def _time(tokens: list[str], text: str) -> tuple[int, int]:
    """['9:00'] / ['at', '5pm'] / ['8', 'am'] / [] → (hour, minute); 09:00 when absent."""
    joined = " ".join(tokens).strip()
    if not joined:
        return 9, 0
    m = _TIME.match(joined)
    if not m:
        raise _bad(text, f"{joined!r} is not a time of day (use 9:00, 17:30 or 8am)")
    hour, minute, ampm = int(m.group(1)), int(m.group(2) or 0), m.group(3)
    if ampm:
        if not 1 <= hour <= 12:
            raise _bad(text, f"{joined!r} is not a time of day")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59:
        raise _bad(text, f"{joined!r} is not a time of day")
    return hour, minute


def _days(word: str) -> list[str] | None:
    """'monday' / 'mondays' / 'mon,thu' / 'mon-fri' → APScheduler day names; None if not days."""
    out: list[str] = []
    for part in word.split(","):
        part = part.strip()
        if "-" in part:
            a, _, b = part.partition("-")
            da, db = (
                _DAY_WORDS.get(a.rstrip("s")) or _DAY_WORDS.get(a),
                _DAY_WORDS.get(b.rstrip("s")) or _DAY_WORDS.get(b),
            )
            if not da or not db:
                return None
            out.append(f"{da}-{db}")
            continue
        d = _DAY_WORDS.get(part) or _DAY_WORDS.get(part.rstrip("s"))
        if not d:
            return None
        out.append(d)
    return out or None


def _cron_dow(field: str, text: str) -> str:
    """Standard cron weekdays (0/7 = Sunday, 1 = Monday) → names, because APScheduler 3 reads
    numbers with 0 = Monday. Names and '*' pass through."""
    if re.search(r"[a-z]", field) or field in ("*", "?"):
        return "*" if field == "?" else field
    days: set[int] = set()
    for item in field.split(","):
        rng, _, step = item.partition("/")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo, hi = (
                (int(x) for x in rng.split("-", 1))
                if all(x.isdigit() for x in rng.split("-", 1))
                else (-1, -1)
            )
        elif rng.isdigit():
            lo = int(rng)
            hi = 7 if step else lo  # "1/2" = from Monday every second day
        else:
            raise _bad(text, f"day of week {field!r}")
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi) or (step and not step.isdigit()):
            raise _bad(text, f"day of week {field!r}")
        days |= {d % 7 for d in range(lo, hi + 1, int(step) if step else 1)}
    names = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    return ",".join(names[d] for d in sorted(days))


def _zone_suffix(tokens: list[str], default_tz: str) -> tuple[list[str], str]:
    if tokens and (
        ("/" in tokens[-1] and re.search("[A-Za-z]{2}", tokens[-1])) or tokens[-1].upper() in ("UTC", "GMT")
    ):
        name = tokens[-1]
        name = "UTC" if name.upper() in ("UTC", "GMT") else name
        zone = next(
            (z for z in (name, "/".join(p.capitalize() for p in name.split("/"))) if _valid_zone(z)), None
        )
        if zone is None:
            check_zone(name)
        return tokens[:-1], zone
    return tokens, check_zone(default_tz)


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


def parse_cadence(text: str, *, tz: str = "UTC") -> Cadence:
    """A phrase or cron expression → ``Cadence``. Raises ``ConfigError`` naming an example."""
    raw = (text or "").strip()
    if not raw:
        raise _bad(raw, "it is empty")
    tokens, zone = _zone_suffix(raw.split(), tz)
    low = [t.lower() for t in tokens]
    phrase = " ".join(low)
    if (
        len(tokens) == 5
        and all(re.fullmatch(r"[\d*/,\-?a-z]+", t) for t in low)
        and re.match(r"[\d*]", low[0])
    ):
        expr = " ".join([*low[:4], _cron_dow(low[4], raw)])
        try:
            CronTrigger.from_crontab(expr, timezone=ZoneInfo(zone))
        except ValueError as e:
            raise _bad(raw, str(e)) from None
        return Cadence("cron", expr, zone)
    if len(tokens) in (4, 6, 7) and all(re.fullmatch(r"[\d*/,\-?]+", t) for t in low):
        raise _bad(
            raw, f"a cron expression has 5 fields (minute hour day month weekday), this has {len(tokens)}"
        )
    if phrase == "hourly":
        return Cadence("interval", "3600", zone)
    m = _EVERY.match(phrase)
    if m:
        seconds = int(m.group(1)) * _UNITS[m.group(2)[0]]
        if seconds < MIN_INTERVAL_S:
            raise _bad(raw, "the shortest interval is 1 minute")
        return Cadence("interval", str(seconds), zone)
    if low and low[0] == "every":
        low = low[1:]
    if not low:
        raise _bad(raw)
    head, rest = low[0], low[1:]
    if head in ("day", "daily", "everyday"):
        days = "*"
    elif head in ("weekday", "weekdays"):
        days = "mon-fri"
    elif head in ("weekly", "week"):
        found = _days(rest[0]) if rest else None
        days, rest = (",".join(found), rest[1:]) if found else ("mon", rest)
    else:
        found = _days(head)
        if not found:
            raise _bad(raw)
        days = ",".join(found)
    if rest[:1] == ["on"] and rest[1:2] and _days(rest[1]):
        days, rest = ",".join(_days(rest[1]) or []), rest[2:]
    hour, minute = _time(rest, raw)
    return Cadence("cron", f"{minute} {hour} * * {days}", zone)


# -- fire times ---------------------------------------------------------------------------------
# A cadence is a sequence of local wall-clock times (cron fields, or midnight + k * interval), and
# each wall time becomes one instant:
#   * a wall time that happens twice (autumn: 02:30 comes round again) fires once, the first time;
#   * a wall time that does not exist (spring: 02:30 is skipped) fires at the change itself (03:00).
# That mapping never goes backwards, so the fire times are sorted, each fires once, and the periods
# [previous fire, fire) join up. (APScheduler's own triggers do neither: at the autumn change a
# fire time can be returned as its own successor and a repeated hour fires twice.)
_SLACK = timedelta(hours=3)  # more than any zone's clock change (2 h at most)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The local wall-clock time of an instant, as a naive datetime."""
    return instant.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a naive local wall time fires: the first of two, or the change for none."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first  # exists (the first occurrence when it is repeated)
    # in a spring-forward gap: the change happened between the two readings of the wall time
    lo, hi = wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first
    lo, hi = min(lo, hi), max(lo, hi)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


class _Walls:
    """The cadence's wall-clock times in order: ``first_at_or_after(w)`` and ``after(w)``."""

    def __init__(self, cadence: Cadence, anchor: float | None) -> None:
        self.cadence = cadence
        if cadence.kind == "interval":
            self.step = timedelta(seconds=int(cadence.expr))
            self.origin = local_midnight(anchor or 0.0, cadence.zone).replace(tzinfo=None)
        else:  # cron fields matched against wall time: a trigger in UTC has no clock changes
            self.cron = CronTrigger.from_crontab(cadence.expr, timezone=UTC)

    def first_at_or_after(self, wall: datetime) -> datetime | None:
        if self.cadence.kind == "interval":
            k = max(
                0, -((self.origin - wall) // self.step)
            )  # ceil((wall - origin) / step), not before the origin
            return self.origin + k * self.step
        got = self.cron.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        return got.replace(tzinfo=None) if got else None

    def after(self, wall: datetime) -> datetime | None:
        if self.cadence.kind == "interval":
            return wall + self.step
        return self.first_at_or_after(wall + timedelta(seconds=1))


def previous_fire(cadence: Cadence, at: datetime, *, anchor: float | None = None) -> datetime | None:
    """The latest fire time ≤ ``at`` (aware, in UTC), or None if there is none within five years
    (or, for an interval, before its anchor's midnight). UTC, because Python never finds a time
    in a repeated hour equal to the same instant in another zone (PEP 495)."""
    zone, walls = cadence.zone, _Walls(cadence, anchor)
    at = at.astimezone(UTC)
    for back in (
        _SLACK,
        timedelta(days=1),
        timedelta(days=8),
        timedelta(days=32),
        timedelta(days=367),
        timedelta(days=5 * 367),
    ):
        if cadence.kind == "interval":  # jump close instead of walking from far back
            back = min(back, _SLACK + walls.step)
        wall = walls.first_at_or_after(_wall(at, zone) - back)
        if wall is None or _instant(wall, zone) > at:
            continue
        while (nxt := walls.after(wall)) is not None and _instant(nxt, zone) <= at:
            wall = nxt
        return _instant(wall, zone)
    return None


def next_fire(cadence: Cadence, after: datetime, *, anchor: float | None = None) -> datetime | None:
    """The first fire time strictly after ``after`` (aware, in UTC; ``.astimezone(cadence.zone)``
    to show it)."""
    zone, walls = cadence.zone, _Walls(cadence, anchor)
    after = after.astimezone(UTC)
    wall = walls.first_at_or_after(_wall(after, zone) - _SLACK)
    while wall is not None and _instant(wall, zone) <= after:
        wall = walls.after(wall)
    return None if wall is None else _instant(wall, zone)
