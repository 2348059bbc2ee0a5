"""The durable store: one SQLite database (WAL) holding documents, chunks (text + vector), access
principals, an FTS5 keyword index, sync cursors, failures, sync runs and feedback.

SQLite is the source of truth. The FAISS index (``assistant.index``) is derived from the vectors
stored here and is reconciled against this database at start-up, so a crash between the two never
leaves them inconsistent for long. Each document is replaced in one transaction (rows, chunks, FTS,
access), and a page's cursor is written only after its documents are committed.

Thread-safety: one connection guarded by a re-entrant lock (the bot answers from several threads).

Schema: ordered migrations (``assistant.store_schema``); the database records the version it is at
and is upgraded in place on open, in one transaction. Split by responsibility, all SQL still in the
store: access-filtered lookups and keyword search in ``store_access`` (a mixin), the scheduler's rows
in ``store_schedules`` (a mixin), documents, vectors, cursors, failures, runs and feedback here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.documents import Access, Chunk, Document, Failure
from assistant.errors import StoreError
from assistant.store_access import KEYWORD_POSTINGS_BUDGET, AccessSearch, fts_query, fts_terms  # noqa: F401
from assistant.store_bot import BotRows
from assistant.store_schedules import ScheduleRows
from assistant.store_schema import _MIGRATIONS, SCHEMA_VERSION  # noqa: F401 (re-exported)


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


class Store(AccessSearch, ScheduleRows, BotRows):
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
