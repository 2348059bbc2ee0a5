"""The store's schema: ordered migrations. Version N's statements turn a version N-1 database into
version N; ``Store.migrate`` applies them in one transaction on open. Never edit a shipped migration
(except for what a later one repairs in code, like the FTS ``acl`` column): add the next.

Only ``assistant.store`` and its mixins (``store_access``, ``store_schedules``) run this SQL.
"""

from __future__ import annotations

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
