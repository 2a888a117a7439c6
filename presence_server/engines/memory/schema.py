"""The embedded engine's SQLite file: every table, and the migrations between versions.

One file (``<data_dir>/messages.sqlite3``) holds the message records, the
broadcasts, the send queue, carrier submissions, tracked links, routing
statistics and the API keys created and revoked at run time, so that a record and its send job are written in one transaction.
``PRAGMA user_version`` is the file's schema version:

- 1: the message records of the first release (no pipeline tables).
- 2: the messaging pipeline's record fields (``ALTER TABLE ADD COLUMN``, with
  defaults that old rows take), broadcasts, jobs, submissions, links, clicks
  and routing statistics.
- 3: API keys revoked at run time (``revoked_keys``).
- 4: API keys created at run time (``api_keys``).

A file of a newer version than this code knows is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 4

_MESSAGES_V1 = """
CREATE TABLE IF NOT EXISTS messages (
    -- An explicit INTEGER PRIMARY KEY keeps storage order stable (VACUUM may renumber
    -- an implicit rowid): it is the tie-break of 'newest first'.
    seq INTEGER PRIMARY KEY,
    sid TEXT NOT NULL UNIQUE,
    account_sid TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    from_addr TEXT NOT NULL,
    body TEXT NOT NULL,
    media_urls TEXT NOT NULL,            -- JSON array
    direction TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    provider TEXT,
    provider_message_id TEXT,
    error_code INTEGER,
    error_message TEXT,
    fallback_reason TEXT,
    related_call_sid TEXT,
    messaging_service_sid TEXT,
    num_segments INTEGER NOT NULL,
    date_created REAL NOT NULL,
    date_updated REAL NOT NULL,
    date_sent REAL
)
"""

# Version 2's record fields: (column, declaration). A new file gets them from
# ALTER TABLE too, so new and migrated files have exactly the same table.
# Tuples are JSON arrays, booleans 0/1.
MESSAGES_V2_COLUMNS = (
    ("status_callback", "TEXT"),
    ("priority", "INTEGER NOT NULL DEFAULT 1"),
    ("send_at", "REAL"),
    ("valid_until", "REAL"),
    ("broadcast_sid", "TEXT"),
    ("channels", "TEXT NOT NULL DEFAULT '[]'"),
    ("app_payload", "TEXT"),
    ("content_version", "TEXT"),
    ("channel_reason", "TEXT"),
    ("route", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("tried_providers", "TEXT NOT NULL DEFAULT '[]'"),
    ("track_links", "INTEGER NOT NULL DEFAULT 0"),
    ("smart_encoded", "INTEGER NOT NULL DEFAULT 0"),
    ("send_as_mms", "INTEGER NOT NULL DEFAULT 0"),
    ("max_segments", "INTEGER"),
    ("max_cost", "REAL"),
    ("encoding", "TEXT"),
)

_INDEXES_AND_TABLES = """
CREATE INDEX IF NOT EXISTS messages_by_account ON messages (account_sid, date_created DESC, seq DESC);
CREATE INDEX IF NOT EXISTS messages_by_to ON messages (account_sid, to_addr, date_created DESC);
CREATE INDEX IF NOT EXISTS messages_by_from ON messages (account_sid, from_addr, date_created DESC);
CREATE INDEX IF NOT EXISTS messages_by_provider_id ON messages (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_broadcast ON messages (broadcast_sid, date_created DESC, seq DESC)
    WHERE broadcast_sid IS NOT NULL;
-- The sticky sender: the newest record of a messaging service to a destination.
CREATE INDEX IF NOT EXISTS messages_by_service_to
    ON messages (account_sid, messaging_service_sid, to_addr, date_created DESC, seq DESC)
    WHERE messaging_service_sid IS NOT NULL;

CREATE TABLE IF NOT EXISTS broadcasts (
    seq INTEGER PRIMARY KEY,
    sid TEXT NOT NULL UNIQUE,
    account_sid TEXT NOT NULL,
    destinations INTEGER NOT NULL,
    intent TEXT NOT NULL,                -- JSON
    content TEXT NOT NULL,               -- JSON
    date_created REAL NOT NULL,
    messaging_service_sid TEXT,
    from_addr TEXT
);
CREATE INDEX IF NOT EXISTS broadcasts_by_account ON broadcasts (account_sid, date_created DESC, seq DESC);

-- The send queue. seq is the enqueue order (the tie-break of 'earliest due first').
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    account_sid TEXT NOT NULL,
    message_sid TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due_at REAL NOT NULL,
    sender TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    lease_until REAL,
    worker TEXT,
    UNIQUE (account_sid, message_sid)
);
CREATE INDEX IF NOT EXISTS jobs_by_due ON jobs (priority, due_at, seq);
CREATE INDEX IF NOT EXISTS jobs_by_sender ON jobs (account_sid, sender);
CREATE INDEX IF NOT EXISTS jobs_unleased ON jobs (due_at) WHERE lease_until IS NULL;
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_worker ON jobs (worker) WHERE worker IS NOT NULL;

CREATE TABLE IF NOT EXISTS submissions (
    seq INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    account_sid TEXT NOT NULL,
    message_sid TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    route TEXT,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_code INTEGER,
    reported_at REAL,
    UNIQUE (provider, provider_message_id)
);
CREATE INDEX IF NOT EXISTS submissions_by_message ON submissions (account_sid, message_sid, seq);

CREATE TABLE IF NOT EXISTS links (
    code TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    account_sid TEXT NOT NULL,
    message_sid TEXT NOT NULL,
    broadcast_sid TEXT,
    content_version TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS links_by_broadcast ON links (broadcast_sid) WHERE broadcast_sid IS NOT NULL;
CREATE TABLE IF NOT EXISTS clicks (
    seq INTEGER PRIMARY KEY,
    code TEXT NOT NULL,
    at REAL NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS clicks_by_code ON clicks (code, at DESC, seq DESC);

-- Routing statistics: totals per account, minute buckets for everyone.
-- errors is a JSON object: error code (as text) -> count.
CREATE TABLE IF NOT EXISTS route_totals (
    account_sid TEXT NOT NULL,
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    submitted INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    undelivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    latency_sum REAL NOT NULL DEFAULT 0,
    latency_count INTEGER NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (account_sid, provider, route)
);
CREATE TABLE IF NOT EXISTS route_minutes (
    minute REAL NOT NULL,
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    submitted INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    undelivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    latency_sum REAL NOT NULL DEFAULT 0,
    latency_count INTEGER NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (minute, provider, route)
);

-- API keys revoked over REST (version 3); the config's revoked keys are not copied here.
CREATE TABLE IF NOT EXISTS revoked_keys (
    account_sid TEXT NOT NULL,
    key_sid TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    PRIMARY KEY (account_sid, key_sid)
);

-- API keys created over REST (version 4); the config's keys are not copied here.
CREATE TABLE IF NOT EXISTS api_keys (
    account_sid TEXT NOT NULL,
    key_sid TEXT NOT NULL,
    friendly_name TEXT NOT NULL,
    secret TEXT NOT NULL,
    date_created REAL NOT NULL,
    PRIMARY KEY (account_sid, key_sid)
);
"""


class SchemaTooNew(sqlite3.DatabaseError):
    """The file was written by a newer version of the server."""


def _statements(script: str) -> list[str]:
    # Executed one by one inside our own transaction: executescript() would commit first.
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def apply(conn: sqlite3.Connection) -> int:
    """Bring the file to SCHEMA_VERSION (creating it when empty), in one
    transaction; returns the version it had."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(f"the data file has schema version {found}; this server knows up to {SCHEMA_VERSION}")
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_MESSAGES_V1)
        present = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
        for column, declaration in MESSAGES_V2_COLUMNS:
            if column not in present:
                conn.execute(f"ALTER TABLE messages ADD COLUMN {column} {declaration}")
        for statement in _statements(_INDEXES_AND_TABLES):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found
