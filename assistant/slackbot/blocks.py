"""Block Kit formatting for answers and summaries: pure functions from core results to message payloads.

A final answer is: the answer text, the supporting quotes, a *Sources* block of ``<url|[n] Title>``
links (the document path when it has no URL), and 👍/👎 buttons whose ``value`` is a feedback token.
Every piece of text that came from documents or the model is escaped (``& < >``) and sanitized
(foreign links and broadcast mentions removed), so a document cannot make the bot ping
``@channel`` or link to an attacker's site. Links are only ever built here, from the cited
documents' own URLs. Long text is split on line/sentence boundaries so that no section exceeds
Slack's 3,000 characters and no message exceeds 50 blocks.

Payloads are dicts for ``chat.postMessage`` / ``chat.update`` / ``chat.postEphemeral`` / ``respond``:
``{"text": fallback, "blocks": [...], "unfurl_links": False, "unfurl_media": False}``.
Scheduled reports are rendered by ``report_blocks`` with the same helpers (``escape``,
``split_text``/``pack_lines``, ``MAX_BLOCKS``).
Not here: Slack calls (``handlers``) and deciding what to say (``assistant.answering``).
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from assistant import grounding as g

SECTION_LIMIT = 3000
MAX_BLOCKS = 50
TEXT_LIMIT = 3000  # fallback ``text`` (notifications, screen readers)
FEEDBACK_UP, FEEDBACK_DOWN = "feedback_up", "feedback_down"
FEEDBACK_ACTION = re.compile(r"^feedback_(up|down)$")

THINKING = "Thinking… :hourglass_flowing_sand:"
PRIVATE_NOTICE = (
    "I found an answer in documents not everyone in this channel can read — I sent it to you privately."
)
ERROR_TEXT = (
    "Sorry — something went wrong while I was working on this. It has been logged; "
    "please try again in a minute."
)
RESTART_TEXT = (
    "Sorry — I was restarted before I could answer this, and it has been too long (or it failed "
    "twice) for me to answer it now. Please ask again."
)

_NO_UNFURL = {"unfurl_links": False, "unfurl_media": False}


def escape(text: str) -> str:
    """Slack mrkdwn escaping: ``&``, ``<``, ``>`` become entities, so nothing becomes a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_text(text: str, *, allowed_urls: set[str] = frozenset()) -> str:
    """Model or document text made safe to post: foreign links and broadcasts removed, then escaped."""
    return escape(g.sanitize(text or "", allowed_urls=set(allowed_urls)))


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at a newline, else a sentence end, else a space."""
    out: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n"), 0)
        if cut < limit // 2:
            cut = max(window.rfind(". ") + 1, window.rfind("! ") + 1, window.rfind("? ") + 1)
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        cut = _not_inside_entity(rest, cut)
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        out.append(rest)
    return out


def _not_inside_entity(text: str, cut: int) -> int:
    amp = text.rfind("&", max(0, cut - 6), cut)
    if amp != -1 and ";" not in text[amp:cut]:
        return amp or cut
    return cut


def pack_lines(lines: list[str], limit: int, sep: str = "\n") -> list[str]:
    """Whole lines (each cut to ``limit``) packed into as few pieces of at most ``limit`` characters
    as their order allows, joined by ``sep`` (``split_text`` instead cuts one long text)."""
    out, cur = [], ""
    for line in lines:
        line = line[:limit]
        if cur and len(cur) + len(sep) + len(line) > limit:
            out.append(cur)
            cur = line
        else:
            cur = f"{cur}{sep}{line}" if cur else line
    return out + ([cur] if cur else [])


def section(text: str) -> dict:
    """A mrkdwn section block (cut to Slack's 3,000 characters)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def sections(text: str) -> list[dict]:
    """``text`` as as many section blocks as it needs (cut at line/sentence boundaries)."""
    return [section(p) for p in split_text(text)]


def context(text: str) -> dict:
    """A small-print context block (cut to 3,000 characters)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT]}]}


def source_link(n: int, title: str, url: str | None, path: str) -> str:
    """``<url|[n] Title>`` for an http(s) URL; otherwise ``[n] Title — `path` ``."""
    label = safe_text(f"[{n}] {title or path}", allowed_urls={url} if url else set()).replace("|", "¦")
    if url and urlparse(url).scheme in ("http", "https") and not re.search(r"[\s<>|]", url):
        return f"<{url}|{label}>"
    return f"{label} — `{escape(path).replace('`', chr(39))}`"


def _cap(blocks: list[dict]) -> list[dict]:
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    tail = [b for b in blocks[-1:] if b.get("type") == "actions"]
    keep = blocks[: MAX_BLOCKS - 1 - len(tail)]
    return keep + [context("_(answer shortened to fit one Slack message)_")] + tail


def _fallback(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


# -- answers -----------------------------------------------------------------------------------
def thinking_message(*, note: str | None = None) -> dict:
    text = THINKING + (f"\n{note}" if note else "")
    return {"text": text, "blocks": [context(text)], **_NO_UNFURL}


def streaming_message(partial: str, *, allowed_urls: set[str] = frozenset()) -> dict:
    """The placeholder while the model writes: its words so far, marked as not yet checked."""
    text = safe_text(partial, allowed_urls=allowed_urls) or THINKING
    blocks = sections(text)[: MAX_BLOCKS - 1] + [context("_writing… (checking sources when done)_")]
    return {"text": _fallback(text), "blocks": blocks, **_NO_UNFURL}


def answer_message(answer, *, feedback_token: str | None = None, note: str | None = None) -> dict:
    """The final answer message for an ``assistant.answering.Answer``."""
    urls = {c.url for c in answer.citations if c.url}
    text = safe_text(answer.answer, allowed_urls=urls)
    blocks: list[dict] = []
    if note:
        blocks.append(context(escape(note)))
    blocks += sections(text)
    if answer.citations:
        said = " ".join(answer.answer.split())
        quotes = "\n".join(
            f"> “{safe_text(c.quote[:500], allowed_urls=urls)}” [{c.n}]"
            for c in answer.citations
            if c.quote and " ".join(c.quote.split()) not in said
        )  # no quote that repeats the answer
        if quotes:
            blocks += sections("*Supporting quotes*\n" + quotes)
        blocks.append({"type": "divider"})
        links = "\n".join(source_link(c.n, c.title, c.url, c.path) for c in answer.citations)
        blocks += sections("*Sources*\n" + links)
    elif answer.refused:
        blocks.append(context("Answers use only documents everyone who can see this message may read."))
    if feedback_token:
        blocks.append(feedback_actions(feedback_token))
    return {"text": _fallback(text), "blocks": _cap(blocks), **_NO_UNFURL}


def feedback_actions(token: str) -> dict:
    return {
        "type": "actions",
        "block_id": "feedback",
        "elements": [
            {
                "type": "button",
                "action_id": FEEDBACK_UP,
                "value": token,
                "text": {"type": "plain_text", "text": "👍 Helpful", "emoji": True},
            },
            {
                "type": "button",
                "action_id": FEEDBACK_DOWN,
                "value": token,
                "text": {"type": "plain_text", "text": "👎 Not helpful", "emoji": True},
            },
        ],
    }


def notice_message(text: str) -> dict:
    return {"text": text, "blocks": [section(escape(text))], **_NO_UNFURL}


# -- summaries ---------------------------------------------------------------------------------
def summary_message(summary) -> dict:
    """An ``assistant.summaries.Summary``: title, bullets grouped by source with [n], Sources links."""
    title = g.sanitize(summary.title, allowed_urls=set())
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": False}}
    ]
    if summary.empty:
        empty = getattr(summary, "note", "") or (
            "No changes in this period."
            if summary.since
            else "Nothing to summarize that everyone here may read."
        )
        blocks.append(section(escape(empty)))
        return {"text": _fallback(f"{title}\n{empty}"), "blocks": blocks, **_NO_UNFURL}
    by_source: dict[str, list] = {}
    for b in summary.bullets:
        by_source.setdefault(b.source, []).append(b)
    for src, bullets in by_source.items():
        lines = [f"*{safe_text(src)}*"]
        for b in bullets:
            allowed = {b.url} if b.url else set()
            new = " _(new)_" if getattr(b, "new", False) else ""
            lines.append(
                f"• *{safe_text(b.title, allowed_urls=allowed)}*{new}: {safe_text(b.text, allowed_urls=allowed)} [{b.n}]"
            )
        blocks += sections("\n".join(lines))
    blocks.append({"type": "divider"})
    blocks += sections(
        "*Sources*\n" + "\n".join(source_link(b.n, b.title, b.url, b.path) for b in summary.bullets)
    )
    fallback = safe_text(summary.as_text(), allowed_urls={b.url for b in summary.bullets if b.url})
    return {"text": _fallback(fallback), "blocks": _cap(blocks), **_NO_UNFURL}


def plain_text(message: dict) -> str:
    """All visible text of a payload (for logs, the demo and tests)."""
    parts: list[str] = []
    for b in message.get("blocks") or []:
        if b.get("type") in ("section", "header"):
            parts.append(b["text"]["text"])
        elif b.get("type") == "context":
            parts += [e.get("text", "") for e in b.get("elements", [])]
        elif b.get("type") == "actions":
            parts.append(" ".join(e["text"]["text"] for e in b.get("elements", [])))
    return "\n".join(parts) if parts else message.get("text", "")
