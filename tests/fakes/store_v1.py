"""A schema-1 database exactly as the code before versioned migrations wrote it (store.py's
``_SCHEMA`` at version 1, and the scheduler's tables created ad hoc), for the upgrade tests.

Frozen on purpose: do not update it when the schema changes — it stands for files in the field.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, title, tokenize = 'porter unicode61');
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

V1_SCHEDULER_TABLES = [
    """CREATE TABLE IF NOT EXISTS schedules (
      id INTEGER PRIMARY KEY AUTOINCREMENT, spec TEXT NOT NULL, kind TEXT NOT NULL, expr TEXT NOT NULL,
      tz TEXT NOT NULL, scope TEXT, channel TEXT NOT NULL, empty TEXT NOT NULL DEFAULT 'post',
      created_by TEXT, origin_channel TEXT, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS schedule_runs (
      id INTEGER PRIMARY KEY, schedule_id INTEGER NOT NULL, kind TEXT NOT NULL DEFAULT 'scheduled',
      period_start REAL NOT NULL, period_end REAL NOT NULL, run_key TEXT NOT NULL,
      status TEXT NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
      errors INTEGER NOT NULL DEFAULT 0, channel TEXT, ts TEXT, error TEXT, claimed_at REAL NOT NULL, finished_at REAL,
      UNIQUE (schedule_id, kind, period_start))""",
    "CREATE INDEX IF NOT EXISTS schedule_runs_pending ON schedule_runs (status, lease_until)",
]


def build_v1_store(path: Path, *, with_scheduler_tables: bool) -> None:
    """What ``Store(path)`` (+ ``scheduler.ensure_tables``) at schema 1 left on disk, with one
    document, its chunk and access rows, a cursor and (optionally) a schedule with one posted run."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    key = db.execute(
        "INSERT INTO documents (source, doc_id, path, title, mime, url, modified, version, content_hash, "
        "metadata, indexed_at) VALUES ('sample', 'a.md', 'a.md', 'Leave policy', 'text/markdown', NULL, "
        "1700000000, 'v1', 'h1', '{}', 1700000001)"
    ).lastrowid
    db.execute("INSERT INTO access VALUES (?, 'public')", (key,))
    cid = db.execute(
        'INSERT INTO chunks (doc_key, ordinal, text, heading_path, start, "end", vector) VALUES '
        "(?, 0, 'Parental leave is 16 weeks.', '[]', 0, 27, ?)",
        (key, b"\0" * 4 * 384),
    ).lastrowid
    db.execute(
        "INSERT INTO chunks_fts (rowid, text, title) VALUES (?, 'Parental leave is 16 weeks.', 'Leave policy')",
        (cid,),
    )
    db.execute("INSERT INTO cursors VALUES ('sample', 'cursor-1', 1700000002)")
    if with_scheduler_tables:
        for sql in V1_SCHEDULER_TABLES:
            db.execute(sql)
        sid = db.execute(
            "INSERT INTO schedules (spec, kind, expr, tz, scope, channel, empty, created_by, "
            "origin_channel, created_at) VALUES ('daily 09:00', 'cron', '0 9 * * *', 'UTC', NULL, "
            "'C1', 'post', 'cli', NULL, 1700000000)"
        ).lastrowid
        db.execute(
            "INSERT INTO schedule_runs (schedule_id, kind, period_start, period_end, run_key, status, owner, "
            "lease_until, claimed_at, ts) VALUES (?, 'scheduled', 1700000000, 1700086400, 'r1-x', 'posted', "
            "'host:1', 0, 1700086400, '1.0')",
            (sid,),
        )
    db.close()
