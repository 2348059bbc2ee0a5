"""The durable store: one SQLite database (WAL) holding documents, chunks (text + vector), access
principals, an FTS5 keyword index, sync cursors, failures, sync runs and feedback.

SQLite is the source of truth. The FAISS index (``assistant.index``) is derived from the vectors
stored here and is reconciled against this database at start-up, so a crash between the two never
leaves them inconsistent for long. Each document is replaced in one transaction (rows, chunks, FTS,
access), and a page's cursor is written only after its documents are committed.

Thread-safety: one connection guarded by a re-entrant lock (the bot answers from several threads).

Schema: ordered migrations (``_MIGRATIONS``); the database records the version it is at and is
upgraded in place on open, in one transaction. Version 2 added the scheduler's tables, version 3
the Slack bot's (both were created ad hoc before). The scheduler's SQL lives here too, as named
methods (``add_schedule_row`` … ``finish_schedule_run``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.documents import Access, Chunk, Document, Failure
from assistant.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
  key INTEGER PRIMARY KEY,
  source TEXT NOT NULL, doc_id TEXT NOT NULL,
  path TEXT NOT NULL, title TEXT NOT NULL, mime TEXT NOT NULL, url TEXT,
  modified REAL, version TEXT NOT NULL, content_hash TEXT NOT NULL,
  metadata TEXT NOT NULL DEFAULT '{}', indexed_at REAL NOT NULL,
  UNIQUE (source, doc_id)
);
CREATE INDEX IF NOT EXISTS documents_modified ON documents (source, modified);
CREATE TABLE IF NOT EXISTS access (
  doc_key INTEGER NOT NULL REFERENCES documents(key) ON DELETE CASCADE,
  principal TEXT NOT NULL,
  PRIMARY KEY (doc_key, principal)
);
CREATE INDEX IF NOT EXISTS access_principal ON access (principal, doc_key);
CREATE TABLE IF NOT EXISTS chunks (
  id INTEGER PRIMARY KEY,
  doc_key INTEGER NOT NULL REFERENCES documents(key) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL, text TEXT NOT NULL, heading_path TEXT NOT NULL,
  start INTEGER NOT NULL, "end" INTEGER NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc_key, ordinal);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, title, acl, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS cursors (source TEXT PRIMARY KEY, cursor TEXT, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
  source TEXT NOT NULL, item_id TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 1, last_at REAL NOT NULL, PRIMARY KEY (source, item_id)
);
CREATE TABLE IF NOT EXISTS sync_runs (
  id INTEGER PRIMARY KEY, source TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  status TEXT NOT NULL, stats TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY, question TEXT NOT NULL, answer TEXT NOT NULL, sources TEXT NOT NULL,
  vote INTEGER NOT NULL, user TEXT, channel TEXT, created REAL NOT NULL
);
"""

_SCHEDULER_TABLES = """
CREATE TABLE IF NOT EXISTS schedules (
  id INTEGER PRIMARY KEY AUTOINCREMENT, spec TEXT NOT NULL, kind TEXT NOT NULL, expr TEXT NOT NULL,
  tz TEXT NOT NULL, scope TEXT, channel TEXT NOT NULL, empty TEXT NOT NULL DEFAULT 'post',
  created_by TEXT, origin_channel TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS schedule_runs (
  id INTEGER PRIMARY KEY, schedule_id INTEGER NOT NULL, kind TEXT NOT NULL DEFAULT 'scheduled',
  period_start REAL NOT NULL, period_end REAL NOT NULL, run_key TEXT NOT NULL,
  status TEXT NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  errors INTEGER NOT NULL DEFAULT 0, channel TEXT, ts TEXT, error TEXT, claimed_at REAL NOT NULL, finished_at REAL,
  UNIQUE (schedule_id, kind, period_start));
CREATE INDEX IF NOT EXISTS schedule_runs_pending ON schedule_runs (status, lease_until);
"""

_SLACKBOT_TABLES = """
CREATE TABLE IF NOT EXISTS slackbot_events (key TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slackbot_answers (token TEXT PRIMARY KEY, question TEXT NOT NULL, answer TEXT NOT NULL,
    sources TEXT NOT NULL, channel TEXT, user TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slackbot_votes (token TEXT NOT NULL, user TEXT NOT NULL, vote INTEGER NOT NULL,
    PRIMARY KEY (token, user));
"""

_SOURCE_SETTINGS = """
CREATE TABLE IF NOT EXISTS source_settings (
  source TEXT PRIMARY KEY, kind TEXT NOT NULL, settings TEXT NOT NULL, updated_at REAL NOT NULL
);
"""

_ACL_TOKENS = """
CREATE TABLE IF NOT EXISTS acl_tokens (id INTEGER PRIMARY KEY, principal TEXT NOT NULL UNIQUE);
"""

_INBOX_AND_LEDGER = """
CREATE TABLE IF NOT EXISTS slackbot_inbox (key TEXT PRIMARY KEY, kind TEXT NOT NULL, args TEXT NOT NULL,
    owner TEXT NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 1, reply_ts TEXT);
CREATE TABLE IF NOT EXISTS summary_docs (
  source TEXT NOT NULL, doc_id TEXT NOT NULL, content_hash TEXT NOT NULL,
  versions INTEGER NOT NULL, first_seen REAL NOT NULL, last_changed REAL NOT NULL,
  PRIMARY KEY (source, doc_id));
CREATE TABLE IF NOT EXISTS summary_sections (
  source TEXT NOT NULL, doc_id TEXT NOT NULL, hash TEXT NOT NULL, first_seen REAL NOT NULL,
  PRIMARY KEY (source, doc_id, hash));
"""

# Version N's statements turn a version N-1 database into version N. Never edit a shipped one: add
# the next. (``IF NOT EXISTS`` because v1 databases may hold tables the code used to create ad hoc.)
_MIGRATIONS: dict[int, str] = {
    1: _SCHEMA,
    2: _SCHEDULER_TABLES,
    3: _SLACKBOT_TABLES,
    4: _SOURCE_SETTINGS,
    5: _ACL_TOKENS,
    6: _INBOX_AND_LEDGER,
}
SCHEMA_VERSION = max(_MIGRATIONS)

_STOP = frozenset(
    "a an and are as at be by can do does for from get got have how i if in is it me my "
    "of on or our should so that the their there this to us was we what when where which "
    "who why will with you your".split()
)


@dataclass(frozen=True)
class DocumentRow:
    key: int
    source: str
    doc_id: str
    path: str
    title: str
    mime: str
    url: str | None
    modified: float | None
    version: str
    content_hash: str
    indexed_at: float
    metadata: dict


@dataclass(frozen=True)
class ChunkRow:
    id: int
    doc_key: int
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class FeedbackRow:
    id: int
    question: str
    answer: str
    sources: list
    vote: int
    user: str | None
    channel: str | None
    created: float


_DOC_COLS = (
    "key, source, doc_id, path, title, mime, url, modified, version, content_hash, indexed_at, metadata"
)


def _doc(row) -> DocumentRow:
    return DocumentRow(*row[:11], metadata=json.loads(row[11]))


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


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"The store at {self.path} is unreadable ({e}). Move it away and re-ingest: "
                "nothing else is kept there."
            ) from None
        self.lock = threading.RLock()
        self.generation = 0  # bumped on every write; caches key on it
        self.keyword_postings_budget = KEYWORD_POSTINGS_BUDGET
        self._df_cache: dict[
            str, int
        ] = {}  # term -> chunks containing it (approximate is fine: pruning only)
        self._token_chunks: dict = {"": -1}  # principal -> chunk ids granted, for self.generation ("" key)
        self.migrate()
        self._migrate_fts_acl()  # a data migration (FTS5 tables cannot add a column): rebuilds once

    def migrate(self) -> list[int]:
        """Bring the database to ``SCHEMA_VERSION``, one migration after another, in one transaction
        (another process opening the same file waits, then finds it done). Returns what was applied."""
        with self.transaction() as db:
            got = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            have = int(got[0]) if got else 0
            if have > SCHEMA_VERSION:
                raise StoreError(
                    f"The store at {self.path} has schema {have}, newer than this version of the "
                    f"assistant understands ({SCHEMA_VERSION}). Upgrade the assistant, or use another data_dir."
                )
            applied = list(range(have + 1, SCHEMA_VERSION + 1))
            for version in applied:
                for stmt in filter(str.strip, _MIGRATIONS[version].split(";")):
                    db.execute(stmt)
            if applied:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        return applied

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            self.generation += 1

    def execute(self, sql: str, params: Iterable = ()) -> list:
        with self.lock:
            return self.db.execute(sql, tuple(params)).fetchall()

    def get_meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key=?", (key,))
        return row[0][0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- documents ------------------------------------------------------------------------------
    def get_document(self, source: str, doc_id: str) -> DocumentRow | None:
        rows = self.execute(
            f"SELECT {_DOC_COLS} FROM documents WHERE source=? AND doc_id=?", (source, doc_id)
        )
        return _doc(rows[0]) if rows else None

    def iter_documents(
        self, source: str | None = None, path_prefix: str | None = None, modified_since: float | None = None
    ) -> Iterator[DocumentRow]:
        sql, params = f"SELECT {_DOC_COLS} FROM documents WHERE 1=1", []
        if source:
            sql += " AND source=?"
            params.append(source)
        if path_prefix:
            sql += " AND path LIKE ? ESCAPE '\\'"
            params.append(path_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if modified_since is not None:
            sql += " AND modified >= ?"
            params.append(modified_since)
        for row in self.execute(sql + " ORDER BY source, path", params):
            yield _doc(row)

    def document_ids(self, source: str) -> set[str]:
        return {r[0] for r in self.execute("SELECT doc_id FROM documents WHERE source=?", (source,))}

    def document_count(self, source: str | None = None) -> int:
        if source:
            return self.execute("SELECT count(*) FROM documents WHERE source=?", (source,))[0][0]
        return self.execute("SELECT count(*) FROM documents")[0][0]

    def chunk_count(self) -> int:
        return self.execute("SELECT count(*) FROM chunks")[0][0]

    def access_of(self, key: int) -> Access:
        return Access.from_tokens(
            r[0] for r in self.execute("SELECT principal FROM access WHERE doc_key=?", (key,))
        )

    def chunks_of(self, key: int) -> list[ChunkRow]:
        rows = self.execute(
            'SELECT id, doc_key, ordinal, text, heading_path, start, "end" FROM chunks '
            "WHERE doc_key=? ORDER BY ordinal",
            (key,),
        )
        return [ChunkRow(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6]) for r in rows]

    def upsert_document(
        self, doc: Document, content_hash: str, chunks: list[Chunk] | None, vectors: np.ndarray | None
    ) -> tuple[int, list[int], list[int]]:
        """Write one document atomically. ``chunks=None`` keeps the existing chunks (metadata or
        access change only). Returns (doc key, removed chunk ids, added chunk ids)."""
        meta = json.dumps(dict(doc.metadata), sort_keys=True)
        now = time.time()
        with self.transaction() as db:
            old = db.execute(
                "SELECT key FROM documents WHERE source=? AND doc_id=?", (doc.source, doc.id)
            ).fetchone()
            if old:
                key = old[0]
                db.execute(
                    "UPDATE documents SET path=?, title=?, mime=?, url=?, modified=?, version=?, content_hash=?, "
                    "metadata=?, indexed_at=? WHERE key=?",
                    (
                        doc.path,
                        doc.title,
                        doc.mime,
                        doc.url,
                        doc.modified,
                        doc.version,
                        content_hash,
                        meta,
                        now,
                        key,
                    ),
                )
                db.execute("DELETE FROM access WHERE doc_key=?", (key,))
            else:
                key = self._insert_document_row(db, doc, content_hash, meta, now)
            db.executemany(
                "INSERT INTO access VALUES (?, ?)", [(key, t) for t in sorted(doc.access.tokens())]
            )
            acl = self._acl_text(doc.access.tokens())
            removed: list[int] = []
            added: list[int] = []
            if chunks is not None:
                removed = [r[0] for r in db.execute("SELECT id FROM chunks WHERE doc_key=?", (key,))]
                if removed:
                    db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in removed])
                    db.execute("DELETE FROM chunks WHERE doc_key=?", (key,))
                assert vectors is not None and len(vectors) == len(chunks)
                added = self._insert_chunks(db, key, doc.title, chunks, vectors, acl)
            elif old:
                # title, path or access may have changed: keep the keyword index's title and acl columns current
                for cid, hp in db.execute(
                    "SELECT id, heading_path FROM chunks WHERE doc_key=?", (key,)
                ).fetchall():
                    db.execute(
                        "UPDATE chunks_fts SET title=?, acl=? WHERE rowid=?",
                        (" ".join((doc.title, *json.loads(hp))), acl, cid),
                    )
            db.execute("DELETE FROM failures WHERE source=? AND item_id=?", (doc.source, doc.id))
        return key, removed, added

    def delete_document(self, source: str, doc_id: str) -> list[int]:
        """Delete a document and everything derived from it; returns its removed chunk ids."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT key FROM documents WHERE source=? AND doc_id=?", (source, doc_id)
            ).fetchone()
            db.execute("DELETE FROM failures WHERE source=? AND item_id=?", (source, doc_id))
            if not row:
                return []
            ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE doc_key=?", (row[0],))]
            db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in ids])
            db.execute("DELETE FROM documents WHERE key=?", (row[0],))  # cascades to chunks, access
        return ids

    # -- vectors --------------------------------------------------------------------------------
    def chunk_ids(self) -> np.ndarray:
        return np.array([r[0] for r in self.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)

    def vectors(self, ids: Iterable[int] | None = None, *, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, dim)) for the given chunk ids (all when None)."""
        if ids is None:
            rows = self.execute("SELECT id, vector FROM chunks ORDER BY id")
        else:
            wanted = list(ids)
            rows = []
            for i in range(0, len(wanted), 900):
                part = wanted[i : i + 900]
                rows += self.execute(
                    f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(part))})", part
                )
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        out_ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return out_ids, vecs

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

    def add_documents_bulk(self, items: Iterable[tuple[Document, str, list[Chunk], np.ndarray]]) -> list[int]:
        """Insert many NEW documents (document, content hash, chunks, vectors) in one transaction:
        for bulk loads and benchmarks, where one transaction per document is the bottleneck.
        Returns the new chunk ids in order. A document that already exists raises (use upsert_document)."""
        now = time.time()
        added: list[int] = []
        with self.transaction() as db:
            for doc, content_hash, chunks, vectors in items:
                key = self._insert_document_row(
                    db, doc, content_hash, json.dumps(dict(doc.metadata), sort_keys=True), now
                )
                db.executemany(
                    "INSERT INTO access VALUES (?, ?)", [(key, t) for t in sorted(doc.access.tokens())]
                )
                acl = self._acl_text(doc.access.tokens())
                added += self._insert_chunks(db, key, doc.title, chunks, vectors, acl)
        return added

    @staticmethod
    def _insert_document_row(db, doc: Document, content_hash: str, meta: str, now: float) -> int:
        return db.execute(
            "INSERT INTO documents (source, doc_id, path, title, mime, url, modified, version, "
            "content_hash, metadata, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                doc.source,
                doc.id,
                doc.path,
                doc.title,
                doc.mime,
                doc.url,
                doc.modified,
                doc.version,
                content_hash,
                meta,
                now,
            ),
        ).lastrowid

    @staticmethod
    def _insert_chunks(db, key: int, title: str, chunks: list[Chunk], vectors, acl: str) -> list[int]:
        """Chunk rows (text, heading path, offsets, float32 vector) and their FTS rows; returns the new ids."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)  # (len(chunks), dim)
        ids: list[int] = []
        for c, v in zip(chunks, vecs):
            ids.append(
                db.execute(
                    'INSERT INTO chunks (doc_key, ordinal, text, heading_path, start, "end", vector) '
                    "VALUES (?,?,?,?,?,?,?)",
                    (key, c.ordinal, c.text, json.dumps(list(c.heading_path)), c.start, c.end, v.tobytes()),
                ).lastrowid
            )
        db.executemany(
            "INSERT INTO chunks_fts (rowid, text, title, acl) VALUES (?, ?, ?, ?)",
            [(cid, c.text, " ".join((title, *c.heading_path)), acl) for cid, c in zip(ids, chunks)],
        )
        return ids

    def chunk_rows(self, ids: list[int]) -> dict[int, tuple[ChunkRow, DocumentRow]]:
        out: dict[int, tuple[ChunkRow, DocumentRow]] = {}
        for i in range(0, len(ids), 900):
            part = ids[i : i + 900]
            rows = self.execute(
                'SELECT c.id, c.doc_key, c.ordinal, c.text, c.heading_path, c.start, c."end", '
                + ", ".join(f"d.{col.strip()}" for col in _DOC_COLS.split(","))
                + f" FROM chunks c JOIN documents d ON d.key = c.doc_key WHERE c.id IN ({','.join('?' * len(part))})",
                part,
            )
            for r in rows:
                out[r[0]] = (
                    ChunkRow(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6]),
                    _doc(r[7:]),
                )
        return out

    # -- cursors, failures, runs ----------------------------------------------------------------
    def get_cursor(self, source: str) -> str | None:
        rows = self.execute("SELECT cursor FROM cursors WHERE source=?", (source,))
        return rows[0][0] if rows else None

    def set_cursor(self, source: str, cursor: str | None) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)", (source, cursor, time.time()))

    def cursors(self) -> dict[str, tuple[str | None, float]]:
        return {r[0]: (r[1], r[2]) for r in self.execute("SELECT source, cursor, updated_at FROM cursors")}

    def record_failure(self, f: Failure) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO failures VALUES (?,?,?,?,1,?) ON CONFLICT(source, item_id) DO UPDATE SET "
                "stage=excluded.stage, reason=excluded.reason, attempts=attempts+1, last_at=excluded.last_at",
                (f.source, f.item_id, f.stage, f.reason[:2000], time.time()),
            )

    def failures(self, source: str | None = None) -> list[tuple[Failure, int]]:
        sql = "SELECT source, item_id, stage, reason, attempts FROM failures"
        rows = self.execute(
            sql + " WHERE source=? ORDER BY last_at" if source else sql + " ORDER BY last_at",
            (source,) if source else (),
        )
        return [(Failure(r[0], r[1], r[2], r[3]), r[4]) for r in rows]

    def clear_failure(self, source: str, item_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM failures WHERE source=? AND item_id=?", (source, item_id))

    def start_run(self, source: str) -> int:
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO sync_runs (source, started, status) VALUES (?, ?, 'running')",
                (source, time.time()),
            ).lastrowid

    def finish_run(self, run_id: int, status: str, stats: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sync_runs SET finished=?, status=?, stats=? WHERE id=?",
                (time.time(), status, json.dumps(stats), run_id),
            )

    def last_runs(self) -> dict[str, dict]:
        rows = self.execute(
            "SELECT source, started, finished, status, stats FROM sync_runs WHERE id IN "
            "(SELECT max(id) FROM sync_runs GROUP BY source)"
        )
        return {r[0]: {"started": r[1], "finished": r[2], "status": r[3], **json.loads(r[4])} for r in rows}

    def sources(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.execute("SELECT source, count(*) FROM documents GROUP BY source")}

    # -- feedback -------------------------------------------------------------------------------
    def add_feedback(
        self,
        *,
        question: str,
        answer: str,
        sources: list,
        vote: int,
        user: str | None,
        channel: str | None = None,
    ) -> int:
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO feedback (question, answer, sources, vote, user, channel, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (question, answer, json.dumps(sources), int(vote), user, channel, time.time()),
            ).lastrowid

    def list_feedback(self) -> list[FeedbackRow]:
        rows = self.execute(
            "SELECT id, question, answer, sources, vote, user, channel, created FROM feedback ORDER BY id"
        )
        return [FeedbackRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def integrity_ok(self) -> bool:
        return self.execute("PRAGMA integrity_check")[0][0] == "ok"

    # -- schedules (assistant.scheduler) ------------------------------------------------------------
    _SCHEDULE_COLS = "id, spec, kind, expr, tz, scope, channel, empty, created_by, origin_channel, created_at"
    _RUN_COLS = (
        "id",
        "kind",
        "period_start",
        "period_end",
        "run_key",
        "status",
        "attempts",
        "channel",
        "ts",
        "error",
    )

    def add_schedule_row(
        self,
        *,
        spec: str,
        kind: str,
        expr: str,
        tz: str,
        scope: str | None,
        channel: str,
        empty: str,
        created_by: str | None,
        origin_channel: str | None,
        created_at: float,
    ) -> int:
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO schedules (spec, kind, expr, tz, scope, channel, empty, created_by, "
                "origin_channel, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (spec, kind, expr, tz, scope, channel, empty, created_by, origin_channel, created_at),
            ).lastrowid

    def schedule_rows(self, schedule_id: int | None = None) -> list[tuple]:
        """Rows in ``_SCHEDULE_COLS`` order: one schedule, or all by id."""
        if schedule_id is None:
            return self.execute(f"SELECT {self._SCHEDULE_COLS} FROM schedules ORDER BY id")
        return self.execute(f"SELECT {self._SCHEDULE_COLS} FROM schedules WHERE id=?", (int(schedule_id),))

    def delete_schedule(self, schedule_id: int) -> bool:
        with self.transaction() as db:
            gone = db.execute("DELETE FROM schedules WHERE id=?", (int(schedule_id),)).rowcount
            db.execute("DELETE FROM schedule_runs WHERE schedule_id=?", (int(schedule_id),))
        return bool(gone)

    def schedule_runs(self, schedule_id: int) -> list[dict]:
        rows = self.execute(
            f"SELECT {', '.join(self._RUN_COLS)} FROM schedule_runs WHERE schedule_id=? ORDER BY period_end",
            (int(schedule_id),),
        )
        return [dict(zip(self._RUN_COLS, r)) for r in rows]

    def schedule_run_state(
        self, schedule_id: int, kind: str, period_start: float
    ) -> tuple[str, float] | None:
        """(status, lease_until) of a period's run, or None when nobody claimed it yet."""
        rows = self.execute(
            "SELECT status, lease_until FROM schedule_runs WHERE schedule_id=? AND kind=? AND period_start=?",
            (schedule_id, kind, period_start),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def claim_schedule_run(
        self,
        schedule_id: int,
        kind: str,
        period_start: float,
        period_end: float,
        *,
        run_key: str,
        owner: str,
        lease_until: float,
        now: float,
    ) -> tuple[int, int, int] | None:
        """Claim a period's run (the UNIQUE insert is the lock), or take over a claim whose lease ran out
        and that never finished. Returns (run id, attempts, errors), or None when someone else holds it."""
        with self.transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO schedule_runs (schedule_id, kind, period_start, period_end, run_key, status, "
                "owner, lease_until, claimed_at) VALUES (?,?,?,?,?,'claimed',?,?,?)",
                (schedule_id, kind, period_start, period_end, run_key, owner, lease_until, now),
            ).rowcount
            if not inserted:
                taken = db.execute(
                    "UPDATE schedule_runs SET owner=?, lease_until=? WHERE schedule_id=? AND kind=? AND period_start=? "
                    "AND status='claimed' AND lease_until <= ?",
                    (owner, lease_until, schedule_id, kind, period_start, now),
                ).rowcount
                if not taken:
                    return None
            return db.execute(
                "SELECT id, attempts, errors FROM schedule_runs WHERE schedule_id=? AND kind=? "
                "AND period_start=?",
                (schedule_id, kind, period_start),
            ).fetchone()

    def count_schedule_attempt(self, run_id: int, *, owner: str, lease_until: float) -> bool:
        """Count a post attempt and renew the lease; False when ``owner`` no longer holds the claim."""
        with self.transaction() as db:
            return bool(
                db.execute(
                    "UPDATE schedule_runs SET attempts=attempts+1, lease_until=? WHERE id=? AND owner=? "
                    "AND status='claimed'",
                    (lease_until, run_id, owner),
                ).rowcount
            )

    def fail_schedule_run(
        self, run_id: int, *, owner: str, final: bool, retry_at: float, error: str, now: float
    ) -> None:
        """Record a failed attempt: 'failed' for good when ``final``, else claimable again at ``retry_at``."""
        with self.transaction() as db:
            db.execute(
                "UPDATE schedule_runs SET status=?, lease_until=?, errors=errors+1, error=?, finished_at=? "
                "WHERE id=? AND owner=?",
                (
                    "failed" if final else "claimed",
                    retry_at,
                    error[:500],
                    now if final else None,
                    run_id,
                    owner,
                ),
            )

    def finish_schedule_run(
        self, run_id: int, status: str, *, channel: str | None, ts: str | None, error: str | None, now: float
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE schedule_runs SET status=?, channel=?, ts=?, error=?, finished_at=? WHERE id=?",
                (status, channel, ts, error, now, run_id),
            )

    # -- bookkeeping (the bot's delivery records and inbox) ----------------------------------------
    @contextmanager
    def bookkeeping(self) -> Iterator[sqlite3.Connection]:
        """A transaction for tables no search depends on (the Slack bot's ``slackbot_events`` and
        ``slackbot_inbox``): atomic like ``transaction()`` but without bumping ``generation``, so
        recording a delivery does not throw away the retrieval caches."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- per-source settings (what a source was ingested with: folder, access rules) ---------------
    # Schema migration 4 creates the table.
    def get_source_settings(self, source: str) -> dict | None:
        rows = self.execute("SELECT kind, settings FROM source_settings WHERE source=?", (source,))
        return {"kind": rows[0][0], **json.loads(rows[0][1])} if rows else None

    def set_source_settings(self, source: str, kind: str, settings: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO source_settings VALUES (?, ?, ?, ?)",
                (source, kind, json.dumps(settings, sort_keys=True), time.time()),
            )

    def all_source_settings(self) -> dict[str, dict]:
        return {
            r[0]: {"kind": r[1], **json.loads(r[2])}
            for r in self.execute("SELECT source, kind, settings FROM source_settings ORDER BY source")
        }

    def access_by_doc(self, source: str) -> dict[str, Access]:
        """doc_id -> Access for every document of ``source`` (what the index enforces now)."""
        toks: dict[str, set[str]] = {}
        for doc_id, principal in self.execute(
            "SELECT d.doc_id, a.principal FROM documents d LEFT JOIN access a ON a.doc_key = d.key "
            "WHERE d.source=?",
            (source,),
        ):
            toks.setdefault(doc_id, set())
            if principal is not None:
                toks[doc_id].add(principal)
        return {d: Access.from_tokens(t) for d, t in toks.items()}

    def skipped_counts(self) -> dict[str, int]:
        """Per source, documents kept without text because their type cannot be read (``metadata.skipped``)."""
        return {
            r[0]: r[1]
            for r in self.execute(
                "SELECT source, count(*) FROM documents WHERE json_extract(metadata, '$.skipped') IS NOT NULL "
                "GROUP BY source"
            )
        }
