"""Access-filtered lookups of the store (a mixin of ``Store``): the chunk ids an audience may read,
keyword search with the access rule inside FTS5 (an ``acl`` column of opaque principal tokens), and
the one-off rebuild that adds that column to older stores.

It relies on ``Store``'s connection, lock, ``transaction``/``execute`` and write ``generation``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence

import numpy as np

_STOP = frozenset(
    "a an and are as at be by can do does for from get got have how i if in is it me my "
    "of on or our should so that the their there this to us was we what when where which "
    "who why will with you your".split()
)


def fts_terms(text: str) -> list[str]:
    """The query's distinct words, stop words dropped (kept when nothing else is left), at most 32."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in _STOP and len(w) > 1]
    if not words:
        words = re.findall(r"\w+", text.lower())
    return list(dict.fromkeys(words))[:32]


def fts_query(text: str) -> str | None:
    """A safe FTS5 query: quoted terms OR-ed (BM25 ranks by how many match); None if no terms."""
    seen = fts_terms(text)
    return " OR ".join(f'"{w}"' for w in seen) if seen else None


# Keyword search scores every match of its terms, so its cost follows their posting lists. Past this
# many postings, the most common terms are left out of the query (rarest first, the rarest always
# kept): they weigh little in BM25 and would dominate the cost at a million chunks.
KEYWORD_POSTINGS_BUDGET = 30_000


class AccessSearch:
    """Mixed into ``Store``: every method runs on the store's one connection."""

    # -- access-filtered lookups ------------------------------------------------------------------
    def allowed_chunk_ids(self, tokens: frozenset[str]) -> np.ndarray:
        """Sorted ids of the chunks whose document grants any of ``tokens``.

        Per-principal id arrays are cached until the next write, so a channel of thirty members reads
        the company-wide grant once, not thirty times."""
        with self.lock:
            cache = self._token_chunks
            if cache.get("") != self.generation or len(cache) > 5000:
                cache.clear()
                cache[""] = self.generation
            parts = []
            for t in sorted(tokens):
                if t not in cache:
                    rows = self.execute(
                        "SELECT c.id FROM access a JOIN chunks c ON c.doc_key = a.doc_key "
                        "WHERE a.principal = ?",
                        (t,),
                    )
                    cache[t] = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                parts.append(cache[t])
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(parts))  # sorted, distinct

    def keyword_search(
        self,
        text: str,
        *,
        limit: int,
        allowed: set[int] | None = None,
        audience: Sequence[frozenset[str]] | None = None,
    ) -> list[tuple[int, float]]:
        """BM25 over chunk text (title and headings weighted 2x; the acl column weighs 0).

        ``audience`` (one principal-token set per person who will see the result) is enforced inside
        FTS5: every chunk carries its document's principals as opaque tokens in the ``acl`` column,
        and the query becomes ``text MATCH … AND acl MATCH (member 1's tokens) AND acl MATCH (member
        2's …)``, so FTS5 intersects posting lists instead of Python walking every match. An empty
        audience, or a member with no known principal, matches nothing (fail closed). ``allowed``
        (a set of chunk ids, e.g. a folder scope) is applied while walking the ranked matches."""
        terms, conjunctive = self._affordable_terms(fts_terms(text))
        if not terms:
            return []
        q = "{text title} : (" + (" AND " if conjunctive else " OR ").join(f'"{w}"' for w in terms) + ")"
        if audience is not None:
            acl = self._acl_query(audience)
            if acl is None:
                return []
            q += " AND " + acl
        sql = "SELECT rowid, bm25(chunks_fts, 1.0, 2.0, 0.0) AS s FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY s"
        try:
            with self.lock:
                cur = self.db.execute(
                    sql if allowed is not None else sql + " LIMIT ?",
                    (q,) if allowed is not None else (q, limit),
                )
                out: list[tuple[int, float]] = []
                for rowid, score in cur:
                    if allowed is None or rowid in allowed:
                        out.append((rowid, -score))
                        if len(out) >= limit:
                            break
                cur.close()
        except sqlite3.OperationalError:
            return []
        return out

    def _affordable_terms(self, terms: list[str]) -> tuple[list[str], bool]:
        """(terms, AND them?): the rarest ``terms`` within ``keyword_postings_budget`` postings, OR-ed;
        when even the rarest is over the budget, up to three of them AND-ed (a smaller match set).
        Document frequencies are counted up to budget + 1 (a bounded cost) and cached."""
        if len(terms) <= 1:
            return terms, False
        budget, cache = self.keyword_postings_budget, self._df_cache
        if len(cache) > 50_000:
            cache.clear()
        df: dict[str, int] = {}
        for w in terms:
            if w not in cache:
                try:
                    cache[w] = self.execute(
                        "SELECT count(*) FROM (SELECT rowid FROM chunks_fts WHERE chunks_fts "
                        "MATCH ? LIMIT ?)",
                        ('{text title} : "' + w + '"', budget + 1),
                    )[0][0]
                except sqlite3.OperationalError:
                    cache[w] = 0
            df[w] = cache[w]
        ranked = sorted(terms, key=lambda t: df[t])
        if df[ranked[0]] > budget:
            return ranked[:3], True
        kept, total = [], 0
        for w in ranked:
            if kept and total + df[w] > budget:
                break
            kept.append(w)
            total += df[w]
        return kept, False

    def _acl_query(self, audience: Sequence[frozenset[str]]) -> str | None:
        """The access condition for FTS5; None when nothing can match (fail closed).

        One person: ``acl : (p1 OR p2 …)``. Several (a channel): a chunk must match each member's
        group; principals every member holds (``public``, the company domain) are factored out, so
        the query is ``acl : (shared) OR (acl : (rest of 1) AND acl : (rest of 2) …)`` rather than
        thirty copies of the same big posting lists."""
        members = [frozenset(t) for t in dict.fromkeys(frozenset(t) for t in audience)]
        if not members or any(not m for m in members):
            return None
        shared = frozenset.intersection(*members) if len(members) > 1 else frozenset()

        def group(tokens: frozenset[str]) -> str | None:
            toks = sorted(tokens)
            if not toks:
                return None
            rows = self.execute(
                f"SELECT id FROM acl_tokens WHERE principal IN ({','.join('?' * len(toks))})", toks
            )
            return "acl : (" + " OR ".join(sorted(f"p{r[0]}" for r in rows)) + ")" if rows else None

        if len(members) == 1:
            return group(members[0])
        parts = [g for g in [group(shared)] if g]
        rest = [m - shared for m in members]
        if all(rest) and self._one_document_grants_each(rest):
            each = [group(m) for m in rest]
            if all(each):
                parts.append("(" + " AND ".join(each) + ")")  # type: ignore[arg-type]
        return "(" + " OR ".join(parts) + ")" if parts else None

    def audience_chunk_ids(self, audience: Sequence[frozenset[str]]) -> np.ndarray:
        """Sorted ids of the chunks every member of ``audience`` may read (the channel rule), without
        reading each member's whole allowed set: chunks granted to a principal all members hold
        (``public``, the company domain), plus chunks of the documents that grant each member
        through one of their own principals (found on the access table, usually none)."""
        members = [frozenset(t) for t in dict.fromkeys(frozenset(t) for t in audience)]
        if not members or any(not m for m in members):
            return np.zeros(0, dtype=np.int64)
        if len(members) == 1:
            return self.allowed_chunk_ids(members[0])
        shared = frozenset.intersection(*members)
        ids = self.allowed_chunk_ids(shared)
        keys = self._documents_granting_each([m - shared for m in members])
        if keys:
            k = sorted(keys)
            more = [
                r[0]
                for i in range(0, len(k), 900)
                for r in self.execute(
                    f"SELECT id FROM chunks WHERE doc_key IN ({','.join('?' * len(k[i : i + 900]))})",
                    k[i : i + 900],
                )
            ]
            ids = np.union1d(ids, np.array(more, dtype=np.int64))
        return ids

    def _one_document_grants_each(self, token_sets: list[frozenset[str]]) -> bool:
        """Whether some document grants a token of every set. When none does (the usual case for a
        big channel) the per-member part of the query is dropped: it could only match nothing, and
        thirty OR-groups cost FTS5 far more than that check. Dropping it can only hide, never show."""
        return bool(self._documents_granting_each(token_sets))

    def _documents_granting_each(self, token_sets: list[frozenset[str]]) -> set[int]:
        """Keys of the documents that grant a token of every set (smallest sets first, stops when empty)."""
        keys: set[int] | None = None
        for toks in sorted(token_sets, key=len):
            t = sorted(toks)
            if not t:
                return set()
            got = {
                r[0]
                for r in self.execute(
                    f"SELECT DISTINCT doc_key FROM access WHERE principal IN ({','.join('?' * len(t))})", t
                )
            }
            keys = got if keys is None else keys & got
            if not keys:
                return set()
        return keys or set()

    def _acl_text(self, tokens: Iterable[str]) -> str:
        """The acl column for a document: ``p<id>`` per principal (digits last, so the porter stemmer
        leaves them alone; ids are stable, so no two principals share a token). Call inside a write."""
        toks = sorted(tokens)
        if not toks:
            return ""
        self.db.executemany("INSERT OR IGNORE INTO acl_tokens (principal) VALUES (?)", [(t,) for t in toks])
        rows = self.db.execute(
            f"SELECT id FROM acl_tokens WHERE principal IN ({','.join('?' * len(toks))})", toks
        ).fetchall()
        return " ".join(f"p{r[0]}" for r in rows)

    def _migrate_fts_acl(self) -> None:
        """Stores made before the acl column: rebuild the FTS table with it (once; seconds per 100k chunks)."""
        cols = [d[0] for d in self.db.execute("SELECT * FROM chunks_fts LIMIT 0").description]
        if "acl" in cols:
            return
        with self.transaction() as db:
            db.execute("ALTER TABLE chunks_fts RENAME TO chunks_fts_old")
            db.execute(
                "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, title, acl, tokenize = 'porter unicode61')"
            )
            acl_of: dict[int, str] = {}
            for (key,) in db.execute("SELECT key FROM documents").fetchall():
                acl_of[key] = self._acl_text(
                    r[0]
                    for r in db.execute("SELECT principal FROM access WHERE doc_key=?", (key,)).fetchall()
                )
            rows = db.execute(
                "SELECT o.rowid, o.text, o.title, c.doc_key FROM chunks_fts_old o "
                "JOIN chunks c ON c.id = o.rowid"
            ).fetchall()
            db.executemany(
                "INSERT INTO chunks_fts (rowid, text, title, acl) VALUES (?, ?, ?, ?)",
                [(r[0], r[1], r[2], acl_of.get(r[3], "")) for r in rows],
            )
            db.execute("DROP TABLE chunks_fts_old")
