"""Scheduled summary reports: what changed in a scope during one period, for one audience.

``build_report(assistant, schedule, period_start, period_end, audience)`` asks the summarizer
(``Assistant.summarize`` with ``since``/``until``) for what changed in the scope during the period, in
the documents EVERY member of the audience may read (a document on its first ingest is new; of an
updated one only its changed sections are summarised), and arranges them as a ``Report``: "what changed" bullets grouped by source (new / updated, each with a numbered
citation), the busiest Slack threads, sentences that record decisions, and a Sources list.
``Report.text()`` is the plain-text form (what the CLI prints, and the fallback text of a post).
The audience is given by the caller (the poster computes a Slack channel's members).

Not done here: deciding when to run (``assistant.reports.scheduler``), Block Kit and posting
(``assistant.slackbot.report_blocks`` / ``report_posting``: this package knows nothing of Slack),
reading Slack messages that were never ingested (reports see what the Slack connector indexed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from assistant import grounding as g
from assistant.retrieval import Audience
from assistant.summaries import Bullet, parse_scope

if TYPE_CHECKING:
    from assistant.reports.scheduler import Schedule
    from assistant.service import Assistant

BUSY_THREAD_MESSAGES = 4  # a Slack thread with at least this many messages counts as busy
# strongest first: a sentence with a stronger marker wins; among equals, the latest (threads end in decisions)
_DECISION = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(we|they|team|it was|has been|have)\s+(decided|agreed (to|on|that))\b|\bdecision\s*:",
        r"\bdecided\b|\bdecision\b",
        r"\b(agreed (to|on|that)|signed off|settled on|going forward|resolved to)\b",
    )
]


@dataclass(frozen=True)
class Decision:
    text: str
    bullet: Bullet


@dataclass
class Report:
    """One rendered period of one schedule. ``empty`` when nothing in scope changed."""

    title: str
    scope: str | None
    period_start: datetime
    period_end: datetime
    bullets: list[Bullet] = field(default_factory=list)
    busy_threads: list[tuple[Bullet, int]] = field(default_factory=list)  # (thread, message count)
    decisions: list[Decision] = field(default_factory=list)
    footer: str = ""

    @property
    def empty(self) -> bool:
        return not self.bullets

    @property
    def period(self) -> str:
        return _period(self.period_start, self.period_end)

    def by_source(self) -> dict[str, list[Bullet]]:
        out: dict[str, list[Bullet]] = {}
        for b in self.bullets:
            out.setdefault(b.source, []).append(b)
        return out

    def no_changes_line(self) -> str:
        return f"No changes in {scope_label(self.scope)}."

    # -- rendering ----------------------------------------------------------------------------
    def text(self) -> str:
        if self.empty:
            return "\n".join(x for x in (f"{self.title}: {self.no_changes_line()}", self.footer) if x)
        lines = [self.title, "", "What changed:"]
        for src, bs in self.by_source().items():
            lines.append(f"{src}:")
            lines += [f"  • {b.title} ({'new' if b.new else 'updated'}): {b.text} [{b.n}]" for b in bs]
        if self.busy_threads:
            lines += ["", "Busy threads:"] + [
                f"  • {b.title}: {n} messages [{b.n}]" for b, n in self.busy_threads
            ]
        if self.decisions:
            lines += ["", "Decisions:"] + [f"  • {d.text} [{d.bullet.n}]" for d in self.decisions]
        lines += ["", "Sources:"] + [f"  [{b.n}] {b.title} — {b.url or b.path}" for b in self.bullets]
        if self.footer:
            lines += ["", self.footer]
        return "\n".join(lines)


def scope_label(scope: str | None) -> str:
    """'slack:#eng' → '#eng'; None → 'all sources'; anything else as written."""
    if not scope:
        return "all sources"
    return scope[len("slack:") :] if scope.startswith("slack:#") else scope


def _period(start: datetime, end: datetime) -> str:
    fmt = "%a %d %b %Y %H:%M"
    same_day = start.date() == end.date()
    return (
        f"{start.strftime(fmt)} – {end.strftime('%H:%M' if same_day else fmt)} ({end.tzname() or end.tzinfo})"
    )


# -- building -----------------------------------------------------------------------------------
def build_report(
    assistant: Assistant,
    schedule: Schedule | object,
    period_start: datetime,
    period_end: datetime,
    audience: Audience,
    *,
    use_llm: bool = False,
    max_items: int = 12,
) -> Report:
    """The report of ``schedule`` (anything with ``.scope`` and optionally ``.title``/``.tz``)
    for [period_start, period_end), using only documents every member of ``audience`` can read."""
    scope = getattr(schedule, "scope", None) or None
    tz = ZoneInfo(getattr(schedule, "tz", None) or str(period_end.tzinfo or "UTC"))
    start, end = period_start.astimezone(tz), period_end.astimezone(tz)
    t0, t1 = start.timestamp(), end.timestamp()
    store = assistant.engine.store
    name = getattr(schedule, "title", None) or f"Report for {scope_label(scope)}"
    source, prefix = parse_scope(scope, set(store.sources()))
    if not any(
        d.modified is not None and d.modified < t1
        for d in store.iter_documents(source=source, path_prefix=prefix, modified_since=t0)
    ):
        return Report(
            f"{name} · {_period(start, end)}", scope, start, end
        )  # nothing changed: no model needed
    # the summarizer reads only documents modified in [t0, t1), and of those only what changed
    summary = assistant.summarize(
        who=audience, scope=scope, since=t0, until=t1, use_llm=use_llm, max_docs=max_items
    )
    bullets = [
        Bullet(
            b.text,
            n,
            b.doc_id,
            b.source,
            b.path,
            b.title,
            b.url,
            b.modified,
            b.new or _created_in(b, t0),
            b.key,
            b.metadata,
            b.sentences,
        )
        for n, b in enumerate(summary.bullets[:max_items], start=1)
    ]
    report = Report(f"{name} · {_period(start, end)}", scope, start, end, bullets)
    for b in bullets:
        meta = b.metadata
        messages = int(meta.get("messages") or 0) if meta.get("kind") == "thread" else 0
        if messages and b.text.strip(" ?.!") in b.title:  # the summary just repeats the thread's title
            b.text = f"{messages} messages" + (f" from {meta['authors']}" if meta.get("authors") else "")
        if messages >= BUSY_THREAD_MESSAGES:
            report.busy_threads.append((b, messages))
        found = _decision(" ".join(c.text for c in store.chunks_of(b.key)[:6])) if b.key is not None else None
        if found:
            report.decisions.append(Decision(g.sanitize(found, allowed_urls={b.url} if b.url else set()), b))
    report.busy_threads.sort(key=lambda x: -x[1])
    del report.busy_threads[5:]
    del report.decisions[8:]
    return report


def _created_in(b: Bullet, t0: float) -> bool:
    """A Slack thread is new when its root was posted in the period (files say so through the summarizer's
    ledger: a document seen in one version only is new)."""
    ts = b.metadata.get("thread_ts") if b.metadata.get("kind") == "thread" else None
    try:
        return ts is not None and float(ts) >= t0
    except (TypeError, ValueError):
        return False


def _decision(text: str) -> str | None:
    best: tuple[int, int, str] | None = None
    for i, span in enumerate(g.sentences(text, min_chars=20)):
        strength = next((len(_DECISION) - k for k, p in enumerate(_DECISION) if p.search(span.text)), 0)
        if strength and (best is None or (strength, i) >= best[:2]):
            best = (strength, i, span.text)
    return g.clean_quote(best[2])[:300] if best else None
