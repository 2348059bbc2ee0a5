"""What the person reads from a source: a quote built around one chosen sentence.

A quote is made of whole sentences of one excerpt (never a slice that starts or ends mid-sentence), and
only of sentences that are adjacent in the original text, so a quote can never span text that was
blanked out as an injected instruction. How much is shown depends on what the sentence is:
- a table row is shown under its table's header ("Level: L5; Title: Senior engineer; …");
- a list item keeps the line that introduces its list ("Don't:") or, failing that, its heading, so an
  item of a "don't" list is not read as advice;
- a prose sentence brings the next sentence of its paragraph when it is short or ends with ":" (the
  fact often follows), and the previous one when it opens with a back-reference ("This", "It", …).
It does not choose the sentence (the answerer ranks them) and does not sanitize (the answerer does).
"""

from __future__ import annotations

import itertools
import re

from assistant import grounding as g

_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_BACKREF = re.compile(
    r"^(?:this|that|these|those|it|they|such|however|also|but|otherwise|then|in that case)\b", re.IGNORECASE
)
_SHORT = 200
_MAX = 420


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def table_header(text: str, pos: int) -> str | None:
    """The header row of the Markdown table whose row starts at ``pos``, or None."""
    lines_before = text[:pos].split("\n")[:-1]
    block: list[str] = []
    for line in reversed(lines_before):
        if not line.strip().startswith("|"):
            break
        block.append(line)
    block.reverse()  # the table's rows above ours, top first
    for i, line in enumerate(block):
        if re.match(r"^\s*\|?\s*:?-{3,}", line) and i > 0:
            return block[i - 1]
    return None


def _row_quote(header: str | None, row: str) -> str:
    rc = cells(row)
    if header is None:
        return " | ".join(rc)
    hc = cells(header)
    if len(hc) == len(rc):
        return "; ".join(f"{h}: {c}" if h else c for h, c in zip(hc, rc) if c)
    return " | ".join(hc) + " — " + " | ".join(rc)


def _lead_in(text: str, pos: int) -> str | None:
    """The line that introduces the list holding the item at ``pos``, e.g. "Don't:" (one blank line may
    separate them when that line ends with ":")."""
    before = text[:pos].split("\n")[:-1]
    blank = False
    for line in reversed(before):
        s = line.strip()
        if not s:
            if blank:
                return None
            blank = True
            continue
        if s.startswith("#"):
            return None
        if not _ITEM.match(line):
            return g.clean_quote(s) if (not blank or s.endswith(":")) else None
    return None


def adjacent(raw: str, a: g.Span, b: g.Span) -> bool:
    """``b`` follows ``a`` directly in the same paragraph of the original text (nothing blanked between)."""
    gap = raw[a.end : b.start]
    return not gap.strip() and "\n\n" not in gap


def _follows(raw: str, a: g.Span, b: g.Span) -> bool:
    """``b`` continues ``a``: nothing but whitespace and code-block fences between them, and no blank line
    unless a fence is there (a command in a fenced block between "…without asking:" and "Then post …"
    reads as one step; a new prose paragraph does not)."""
    gap = raw[a.end : b.start]
    return not gap.replace("```", "").strip() and ("```" in gap or "\n\n" not in gap)


def compose(raw: str, spans: list[g.Span], i: int, heading: tuple[str, ...] = ()) -> str:
    """The quote for sentence ``spans[i]`` of an excerpt. ``raw`` is the excerpt's original text, ``spans``
    its sentences (computed on the text with injected instructions blanked)."""
    sp = spans[i]
    s = sp.text.strip()
    if s.startswith("|"):
        return _row_quote(table_header(raw, sp.start), s)
    if _ITEM.match(s):
        intro = _lead_in(raw, sp.start) or (heading[-1] if heading else None)
        item = g.clean_quote(s)
        return f"{intro.rstrip(':')}: {item}" if intro else item
    chosen = [sp]
    if (
        i > 0
        and _BACKREF.match(s)
        and _follows(raw, spans[i - 1], sp)
        and not spans[i - 1].text.startswith("|")
    ):
        chosen.insert(0, spans[i - 1])
        # "…may roll back without asking:" + a command + "Then post …": the step's lead-in comes too
        if i > 1 and spans[i - 2].text.rstrip().endswith(":") and _follows(raw, spans[i - 2], spans[i - 1]):
            chosen.insert(0, spans[i - 2])
    colon = s.endswith(":")
    j = i + 1
    while j < len(spans) and (colon or len(" ".join(c.text for c in chosen)) < _SHORT):
        nxt = spans[j]
        gap = raw[chosen[-1].end : nxt.start]
        fenced = colon and "```" in gap and not gap.replace("```", "").strip()  # "…asking:" + a command block
        if not fenced and (
            gap.strip()
            or ("\n\n" in gap and not (colon and _ITEM.match(nxt.text) and gap.count("\n\n") == 1))
        ):
            break
        if len(" ".join(c.text for c in chosen)) + len(nxt.text) > _MAX:
            break
        chosen.append(nxt)
        j += 1
        if not (colon and (_ITEM.match(nxt.text) or fenced)):
            break
    out = g.clean_quote(chosen[0].text)
    for prev, c in itertools.pairwise(chosen):
        out += ("; " if _ITEM.match(prev.text) and _ITEM.match(c.text) else " ") + g.clean_quote(c.text)
    return out
