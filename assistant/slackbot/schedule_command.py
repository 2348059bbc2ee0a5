"""``/schedule`` in Slack, and the one parser of scope words typed in Slack (``/schedule``, ``/summarize``).

``handle_schedule_command(text, channel_id=, user_id=, store=)`` is the reply to ``/schedule <text>``:
``list``, ``delete <id>``, or ``<when> summarize <scope> [to #channel] [--empty skip]``, stored through
the Slack-free API of ``assistant.reports`` (``add_schedule``, ``list_schedules``, ...).
``scope_from_words(text, channel_name=)`` turns what a person typed into a scope: ``<#C1|eng>`` / ``#eng``
→ ``slack:#eng``; ``drive:Security`` → ``gdrive:Security``; anything else as written.
Not here: running schedules or rendering reports (``assistant.reports``, ``report_blocks``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from assistant.errors import AssistantError, ConfigError
from assistant.reports import add_schedule, get_schedule, list_schedules, next_fire, remove_schedule

if TYPE_CHECKING:
    from assistant.store import Store

SLASH_HELP = (
    "Usage: `/schedule weekly mon 09:00 summarize #eng`, `/schedule daily 17:30 changes in drive:Security "
    "to #security`, `/schedule list`, `/schedule delete <id>`. Add a time zone after the time "
    "(`daily 17:30 Europe/Berlin`) and `--empty skip` to post nothing when nothing changed."
)
_VERBS = r"summarize|summarise|summary of|changes in|changes to|what changed in|report on|report"
_ADD = re.compile(rf"^(?P<when>.+?)\s+(?:{_VERBS})\s+(?P<rest>.+)$", re.IGNORECASE)
_TO = re.compile(r"\s+(?:to|into|in)\s+(?P<to><#[A-Z0-9]+(?:\|[^>]*)?>|#[\w.\-]+)\s*$", re.IGNORECASE)
_EMPTY = re.compile(r"\s*--empty\s+(?P<e>\w+)\s*", re.IGNORECASE)
CHANNEL_REF = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")
_EVERYTHING = ("everything", "all", "all sources", "*")


def scope_from_words(text: str, *, channel_name: Callable[[str], str] | None = None) -> str | None:
    """'#eng' / '<#C1|eng>' → 'slack:#eng'; 'drive:Security' → 'gdrive:Security'; '' → None.
    ``channel_name`` (id → name, e.g. conversations.info) names a bare ``<#C1>`` or ``<#C1|>``."""
    text = (text or "").strip()
    ref = CHANNEL_REF.search(text)
    if ref:
        name = ref.group(2) or (channel_name(ref.group(1)) if channel_name else None)
        if not name:
            raise ConfigError("Name the channel as #name (e.g. `summarize #eng`).")
        return f"slack:#{name}"
    text = html.unescape(text)  # Slack sends & < > as entities
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
    store: Store,
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
            ref = CHANNEL_REF.fullmatch(to.group("to"))
            target = ref.group(1) if ref else to.group("to")
        scope = (
            None if rest.strip().lower() in _EVERYTHING else scope_from_words(rest, channel_name=channel_name)
        )
        s = add_schedule(
            store,
            add.group("when"),
            channel=target,
            scope=scope,
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
