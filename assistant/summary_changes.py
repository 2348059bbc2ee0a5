"""What changed inside documents: a ledger of the sections each document has had, and when each first appeared.

The store keeps only the current text of a document. To summarise *changes* ("what changed in
#eng this week") the ledger records, per document, a hash of every section (heading + text) the first
time it is seen, with the document's modification time, and how many versions of the document it has
seen. ``update_ledger(store)`` brings it up to date: cheap (one query compares content hashes; only
changed documents are read), safe to call at any time and from several places (after each sync and
before each summary). Then, for a window [since, until):
- a document seen in one version only is **new** (its first ingest is not an "update");
- otherwise the sections first seen in the window are what changed (``changed_sections``).
A ledger started on an existing index records the current sections as its baseline.

Tables are created here through ``Store.execute`` (as the scheduler does): ``summary_docs`` and
``summary_sections``. Not done: line-level diffs, or remembering removed text (only additions and
rewrites are summarised).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s", re.M)


@dataclass(frozen=True)
class DocHistory:
    versions: int
    first_seen: float
    last_changed: float


def sections(text: str) -> list[tuple[int, int, str]]:
    """(start, end, hash) of each heading-led section of a document's text."""
    starts = sorted({0, *(m.start() for m in _HEADING.finditer(text))})
    out = []
    for a, b in zip(starts, starts[1:] + [len(text)]):
        body = " ".join(text[a:b].split())
        if body:
            out.append((a, b, hashlib.sha1(body.encode()).hexdigest()[:16]))
    return out


def document_text(chunks) -> str:
    """A document's text rebuilt from its chunks' offsets (chunks overlap; each character once)."""
    out = ""
    for c in sorted(chunks, key=lambda c: c.ordinal):
        if c.start >= len(out):
            out += "\n" * (c.start - len(out)) + c.text  # the gap between chunks is blank lines
        elif c.end > len(out):
            out += c.text[len(out) - c.start :]
    return out


def _ensure(store) -> None:
    """The ledger's tables come from the store's schema migration 6; nothing to create here."""


def update_ledger(store, *, source: str | None = None) -> int:
    """Record the sections of every document whose content changed since the ledger last saw it.
    Returns how many documents were (re)recorded."""
    _ensure(store)
    sql = (
        "SELECT d.key, d.source, d.doc_id, d.content_hash, COALESCE(d.modified, d.indexed_at), s.content_hash, "
        "s.versions FROM documents d LEFT JOIN summary_docs s ON s.source = d.source AND s.doc_id = d.doc_id "
        "WHERE (s.content_hash IS NULL OR s.content_hash != d.content_hash)"
    )
    rows = store.execute(sql + (" AND d.source = ?" if source else ""), (source,) if source else ())
    for key, src, doc_id, chash, when, old_hash, _versions in rows:
        text = document_text(store.chunks_of(key))
        with store.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO summary_sections VALUES (?, ?, ?, ?)",
                [(src, doc_id, h, when) for _, _, h in sections(text)],
            )
            if old_hash is None:
                db.execute(
                    "INSERT OR IGNORE INTO summary_docs VALUES (?, ?, ?, 1, ?, ?)",
                    (src, doc_id, chash, when, when),
                )
            else:
                db.execute(
                    "UPDATE summary_docs SET content_hash=?, versions=versions+1, last_changed=? "
                    "WHERE source=? AND doc_id=?",
                    (chash, when, src, doc_id),
                )
    return len(rows)


def history(store, source: str, doc_id: str) -> DocHistory | None:
    rows = store.execute(
        "SELECT versions, first_seen, last_changed FROM summary_docs WHERE source=? AND doc_id=?",
        (source, doc_id),
    )
    return DocHistory(*rows[0]) if rows else None


def changed_sections(
    store, source: str, doc_id: str, text: str, *, since: float, until: float | None = None
) -> list[tuple[int, int]]:
    """(start, end) of the sections of ``text`` first seen in [since, until)."""
    seen = dict(
        store.execute(
            "SELECT hash, first_seen FROM summary_sections WHERE source=? AND doc_id=?", (source, doc_id)
        )
    )
    out = []
    for a, b, h in sections(text):
        t = seen.get(h)
        if t is None or (t >= since and (until is None or t < until)):
            out.append((a, b))
    return out
