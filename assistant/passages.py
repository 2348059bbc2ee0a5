"""Passages: what the answerer reads. Retrieved chunks → whole sections of their documents.

Retrieval ranks chunks (≤ 256 tokens, often cut mid-paragraph); the sentence that answers a question is
frequently in the chunk next to the one that matched, or under the same heading. So for each of the best
documents this module rebuilds the document text from its chunks (``text[c.start:c.end] == c.text``),
takes the section around each matching chunk (from its heading to the next heading of the same or a
higher level, capped at ``max_chars`` and snapped to paragraph boundaries, so an excerpt never starts
mid-sentence), and merges windows of the same document into one excerpt. Every excerpt carries the
heading path in force at each of its positions, so a sentence can be read with its title and heading.
It does not score anything: ranking chunks and sentences is the answerer's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from assistant.retrieval import Hit

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
GAP = "\n\n[…]\n\n"


@dataclass(frozen=True)
class Excerpt:
    """One document's passage as the answerer sees it. ``hit.text`` is the excerpt; ``marks`` are
    (offset in the excerpt, heading path from there on), ascending."""

    hit: Hit
    marks: tuple[tuple[int, tuple[str, ...]], ...]
    score: float

    def heading_at(self, offset: int) -> tuple[str, ...]:
        path: tuple[str, ...] = ()
        for off, p in self.marks:
            if off > offset:
                break
            path = p
        return path


@dataclass(frozen=True)
class _Doc:
    text: str
    headings: list[tuple[int, int, int, tuple[str, ...]]]  # (line start, line end, level, path after it)


def _document(chunks) -> _Doc:
    end = max((c.end for c in chunks), default=0)
    buf = ["\n"] * end
    for c in chunks:
        buf[c.start : c.end] = list(c.text)
    text = "".join(buf)
    headings, path = [], []
    for m in _HEADING.finditer(text):
        level, title = len(m.group(1)), m.group(2).strip().strip("*_` ")
        path = [p for p in path if p[0] < level] + [(level, title)]
        headings.append((m.start(), m.end(), level, tuple(t for _, t in path)))
    return _Doc(text, headings)


def _path_at(doc: _Doc, pos: int) -> tuple[str, ...]:
    path: tuple[str, ...] = ()
    for hs, _he, _lvl, p in doc.headings:
        if hs > pos:
            break
        path = p
    return path


def _section(doc: _Doc, start: int, end: int) -> tuple[int, int]:
    """The section(s) holding [start, end): from the chunk's start (or the heading above it) to the next
    heading of the same or a higher level than the last heading inside or above the chunk."""
    lo, level = 0, 0
    for hs, _he, lvl, _p in doc.headings:
        if hs >= end:
            break
        if hs <= start:
            lo = hs
        level = lvl
    hi = len(doc.text)
    for hs, _he, lvl, _p in doc.headings:
        if hs >= end and (level == 0 or lvl <= level):
            hi = hs
            break
    return lo, hi


def _snap(text: str, lo: int, hi: int, *, slack: int = 1500) -> tuple[int, int]:
    """Move ``lo`` back to a paragraph start and ``hi`` forward to a paragraph end (at most ``slack`` chars)."""
    p = text.rfind("\n\n", max(0, lo - slack), lo + 1)
    if p >= 0:
        lo = p + 2
    elif lo <= slack:
        lo = 0
    else:
        lo = text.rfind("\n", 0, lo) + 1
    q = text.find("\n\n", hi, hi + slack)
    if q >= 0:
        hi = q
    elif len(text) - hi <= slack:
        hi = len(text)
    else:
        nl = text.find("\n", hi)
        hi = len(text) if nl < 0 else nl
    return lo, hi


def _window(doc: _Doc, cstart: int, cend: int, max_chars: int) -> tuple[int, int]:
    lo, hi = _section(doc, cstart, cend)
    if hi - lo > max_chars:  # a long section: the chunk plus what fits around it, after its start first
        extra = max(0, max_chars - (cend - cstart))
        lo = max(lo, cstart - extra // 3)
        hi = min(hi, max(cend, lo + max_chars))
    return _snap(doc.text, lo, hi)


def build_excerpts(
    store, ranked: list[tuple[Hit, float]], *, max_docs: int, max_chars: int, windows_per_doc: int = 2
) -> list[Excerpt]:
    """One excerpt per document for the best ``max_docs`` documents of ``ranked`` ((hit, score), best first).

    A document contributes a window for each of its best ``windows_per_doc`` chunks; overlapping windows
    merge. The excerpt's score is its best chunk's."""
    by_doc: dict[int, list[tuple[Hit, float]]] = {}
    for hit, sc in ranked:
        if hit.doc_key in by_doc or len(by_doc) < max_docs:
            by_doc.setdefault(hit.doc_key, []).append((hit, sc))
    out: list[Excerpt] = []
    for doc_key, items in by_doc.items():
        chunks = {c.id: c for c in store.chunks_of(doc_key)}
        if not chunks:
            continue
        doc = _document(list(chunks.values()))
        wins: list[tuple[int, int]] = []
        for hit, _sc in items[:windows_per_doc]:
            c = chunks.get(hit.chunk_id)
            if c is not None:
                wins.append(_window(doc, c.start, c.end, max_chars))
        wins.sort()
        merged: list[list[int]] = []
        for lo, hi in wins:
            if merged and lo <= merged[-1][1] + 2:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        parts: list[str] = []
        marks: list[tuple[int, tuple[str, ...]]] = []
        offset = 0
        for lo, hi in merged:
            if parts:
                parts.append(GAP)
                offset += len(GAP)
            marks.append((offset, _path_at(doc, lo)))
            marks += [(offset + hs - lo, p) for hs, _he, _l, p in doc.headings if lo < hs < hi]
            parts.append(doc.text[lo:hi])
            offset += hi - lo
        best_hit, best_score = items[0]
        text = "".join(parts).strip("\n")
        lead = len("".join(parts)) - len("".join(parts).lstrip("\n"))
        marks = [(max(0, o - lead), p) for o, p in marks]
        out.append(
            Excerpt(
                replace(best_hit, rank=len(out) + 1, text=text, heading_path=marks[0][1] if marks else ()),
                tuple(marks),
                best_score,
            )
        )
    return out
