"""Block Kit for a scheduled report (``assistant.reports.Report``): a pure function to message blocks.

Header (the report's title), a context line (scope, period, how many documents), "what changed"
sections grouped by source (new / updated, each with its numbered citation), busy threads,
decisions, a divider, the numbered sources as links, and the footer (schedule, cadence, run key).
Text is escaped with ``blocks.escape``; long lists are packed with ``blocks.pack_lines``; a report
that would exceed ``blocks.MAX_BLOCKS`` is shortened with a note, its footer kept.
Not here: what the report says (``assistant.reports``) or posting it (``report_posting``).
"""

from __future__ import annotations

from assistant.reports import Report, scope_label
from assistant.slackbot.blocks import MAX_BLOCKS, context, escape, pack_lines, section


def report_blocks(report: Report) -> list[dict]:
    """The blocks of ``report`` (at most ``MAX_BLOCKS``)."""
    footer = [context(report.footer)] if report.footer else []
    if report.empty:
        return [section(f"*{escape(report.title)}*: {escape(report.no_changes_line())}"), *footer]
    out: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": report.title[:150], "emoji": False}},
        context(
            f"What changed in *{escape(scope_label(report.scope))}* {escape(report.period)} · "
            f"{len(report.bullets)} document{'s' * (len(report.bullets) != 1)}"
        ),
    ]
    for src, bs in report.by_source().items():
        lines = [f"• {_link(b)} _({'new' if b.new else 'updated'})_: {escape(b.text)} [{b.n}]" for b in bs]
        out += _sections(f"*{escape(src)}*", lines)
    if report.busy_threads:
        out += _sections(
            "*Busy threads*", [f"• {_link(b)}: {n} messages [{b.n}]" for b, n in report.busy_threads]
        )
    if report.decisions:
        out += _sections("*Decisions*", [f"• {escape(d.text)} [{d.bullet.n}]" for d in report.decisions])
    out.append({"type": "divider"})
    out += [
        context(part) for part in pack_lines([_link(b, numbered=True) for b in report.bullets], 1500, " · ")
    ]
    if len(out) + len(footer) > MAX_BLOCKS:
        out = out[: MAX_BLOCKS - len(footer) - 1] + [context("(report shortened to fit one Slack message)")]
    return out + footer


def _link(b, *, numbered: bool = False) -> str:
    label = f"[{b.n}] {b.title}" if numbered else b.title
    if b.url and b.url.startswith(("https://", "http://")):
        return f"<{b.url}|{escape(label).replace('|', '¦')}>"
    return f"{escape(label)} (`{escape(b.path)}`)" if numbered else f"*{escape(label)}*"


def _sections(heading: str, lines: list[str]) -> list[dict]:
    parts = pack_lines(lines, 2900 - len(heading))
    return [section((heading + "\n" if i == 0 else "") + p) for i, p in enumerate(parts)]
