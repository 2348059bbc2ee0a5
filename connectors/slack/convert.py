"""Slack messages → what we index: thread Markdown, titles, versions, links and Access.

- ``thread_markdown``: a thread (root + replies) as Markdown with author names and UTC times;
  Slack mrkdwn (``<@U1>``, ``<#C1|name>``, ``<url|label>``, ``<!here>``, ``&amp;``) rendered readably.
- Noise (joins, leaves, topic changes ...) is skipped; bot messages only when asked; the
  assistant's own messages never (it must not index its own answers).
- ``message_signature`` / ``thread_version``: what changes when a message is edited, deleted or
  replied to, so an unchanged thread is skipped without fetching.
- Access: public channel → the workspace principal ``slack:<team_id>``; private channel → its
  members' emails; no emails known → nobody (fail closed). DMs are never indexed (the connector
  never lists them; ``is_indexable_channel`` is the guard).

What it does not do: call Slack (``client``) or decide which messages to list (``connector``).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from assistant.documents import Access

NOISE_SUBTYPES = frozenset(
    {
        "channel_join",
        "channel_leave",
        "channel_topic",
        "channel_purpose",
        "channel_name",
        "channel_archive",
        "channel_unarchive",
        "channel_convert_to_private",
        "channel_convert_to_public",
        "group_join",
        "group_leave",
        "group_topic",
        "group_purpose",
        "group_name",
        "group_archive",
        "group_unarchive",
        "pinned_item",
        "unpinned_item",
        "bot_add",
        "bot_remove",
        "bot_enable",
        "bot_disable",
        "reminder_add",
        "reminder_delete",
        "ekm_access_denied",
        "joiner_notification",
        "slackbot_response",
        "huddle_thread",
        "sh_room_created",
        "app_conversation_leave",
        "channel_posting_permissions",
        "assistant_app_thread",
    }
)
BOT_SUBTYPES = frozenset({"bot_message", "bot_add", "bot_remove"})
_TOKEN = re.compile(r"<([^<>]+)>")


def is_indexable_channel(ch: dict) -> bool:
    return not (ch.get("is_im") or ch.get("is_mpim"))


def is_private_channel(ch: dict) -> bool:
    return bool(ch.get("is_private") or ch.get("is_group"))


def keep_message(m: dict, *, include_bots: bool, self_ids: Iterable[str] = ()) -> bool:
    """False for noise, the assistant's own messages, and (unless ``include_bots``) other bots."""
    sub = m.get("subtype") or ""
    if sub in NOISE_SUBTYPES or sub == "tombstone":
        return False
    own = set(self_ids)
    if (m.get("user") and m.get("user") in own) or (m.get("bot_id") and m.get("bot_id") in own):
        return False
    if not include_bots and (sub in BOT_SUBTYPES or m.get("bot_id") or m.get("bot_profile")):
        return False
    return bool((m.get("text") or "").strip() or m.get("files") or m.get("attachments"))


def render_mrkdwn(
    text: str, *, user_name: Callable[[str], str], channel_name: Callable[[str], str | None]
) -> str:
    """Slack's mrkdwn control sequences as plain readable text (links as Markdown links)."""

    def sub(match: re.Match) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            return "@" + (label or user_name(target[1:]))
        if target.startswith("#"):
            return "#" + (label or channel_name(target[1:]) or target[1:])
        if target.startswith("!subteam^"):
            return label or "@group"
        if target.startswith("!date^"):
            return label or ""
        if target.startswith("!"):
            return "@" + (label or target[1:]).lstrip("@")
        if target.startswith("mailto:"):
            return label or target[len("mailto:") :]
        if label and label != target:
            return f"[{label}]({target})"
        return target

    return html.unescape(_TOKEN.sub(sub, text or ""))


def ts_time(ts: str | float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def permalink(workspace_url: str, channel: str, ts: str, *, thread_ts: str | None = None) -> str:
    """Slack's permalink format: ``<workspace>/archives/C123/p1712345678000100``."""
    link = f"{workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel}"
    return link


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:16]


def message_signature(m: dict) -> str:
    """Changes when the message is edited, deleted (tombstoned), gets or loses replies or files."""
    files = ",".join(f.get("id", "") for f in m.get("files") or [])
    return _digest(
        m.get("ts"),
        m.get("subtype"),
        m.get("text"),
        (m.get("edited") or {}).get("ts"),
        m.get("reply_count"),
        m.get("latest_reply"),
        files,
    )


def thread_version(messages: list[dict], *, channel_sig: str, include_bots: bool) -> str:
    """The version of a thread document: every message's own signature, plus the channel's
    signature (name, visibility, member emails) so a rename or membership change re-syncs it."""
    per = [
        _digest(
            m.get("ts"),
            m.get("subtype"),
            m.get("text"),
            (m.get("edited") or {}).get("ts"),
            ",".join(f.get("id", "") for f in m.get("files") or []),
        )
        for m in messages
    ]
    return "t1-" + _digest(channel_sig, include_bots, *per)


def file_version(f: dict, *, channel_sig: str) -> str:
    return "f1-" + _digest(
        f.get("id"),
        f.get("updated") or f.get("timestamp") or f.get("created"),
        f.get("size"),
        f.get("name"),
        channel_sig,
    )


def channel_signature(name: str, private: bool, emails: Iterable[str] = ()) -> str:
    return _digest(name, private, *sorted(emails))


def channel_access(team_id: str, *, private: bool, emails: Iterable[str] = ()) -> Access:
    if not private:
        return Access(groups=frozenset({f"slack:{team_id}"}))
    return Access(users=frozenset(emails))  # empty → nobody (fail closed)


def _author(m: dict, user_name: Callable[[str], str]) -> str:
    if m.get("user"):
        return user_name(m["user"])
    return m.get("username") or (m.get("bot_profile") or {}).get("name") or "bot"


def thread_markdown(
    channel_name: str,
    messages: list[dict],
    *,
    user_name: Callable[[str], str],
    channel_name_of: Callable[[str], str | None],
    include_bots: bool,
    self_ids: Iterable[str] = (),
) -> str:
    """The thread as Markdown: a heading, then one block per kept message (author, time, text, files)."""
    self_ids = tuple(self_ids)
    root = messages[0] if messages else {}
    out = [f"# #{channel_name} — thread of {ts_time(root.get('ts'))}", ""]
    if root.get("subtype") == "tombstone":
        out += ["_(the first message of this thread was deleted)_", ""]
    for m in messages:
        if not keep_message(m, include_bots=include_bots, self_ids=self_ids):
            continue
        edited = " (edited)" if m.get("edited") else ""
        out.append(f"**{_author(m, user_name)}** ({ts_time(m.get('ts'))}){edited}:")
        text = render_mrkdwn(m.get("text") or "", user_name=user_name, channel_name=channel_name_of).strip()
        if text:
            out.append(text)
        for a in m.get("attachments") or []:
            extra = a.get("text") or a.get("fallback") or ""
            if extra:
                out.append("> " + render_mrkdwn(extra, user_name=user_name, channel_name=channel_name_of))
        for f in m.get("files") or []:
            if f.get("name") or f.get("title"):
                out.append(f"[file: {f.get('title') or f.get('name')}]")
        out.append("")
    return "\n".join(out).strip() + "\n"


def thread_title(
    channel_name: str,
    messages: list[dict],
    *,
    user_name: Callable[[str], str],
    channel_name_of: Callable[[str], str | None],
    include_bots: bool,
    self_ids: Iterable[str] = (),
) -> str:
    """``#channel: first line of the first kept message`` (at most ~80 characters)."""
    for m in messages:
        if keep_message(m, include_bots=include_bots, self_ids=self_ids):
            text = render_mrkdwn(m.get("text") or "", user_name=user_name, channel_name=channel_name_of)
            line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            line = re.sub(r"\s+", " ", line.lstrip("#>*-_ "))
            if len(line) > 80:
                line = line[:77].rsplit(" ", 1)[0] + "…"
            return f"#{channel_name}: {line or 'thread'}"
    return f"#{channel_name}: thread"
