"""Database access for SQLite and PostgreSQL behind one tiny interface.

The service must run unchanged on SQLite today and PostgreSQL after the
migration, so queries are written in the common subset and placeholders are
translated here rather than in every handler.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bioguide_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL COLLATE NOCASE,
    party TEXT NOT NULL CHECK (party IN ('D', 'R', 'I')),
    state TEXT NOT NULL,
    chamber TEXT NOT NULL CHECK (chamber IN ('house', 'senate')),
    born REAL,
    in_office INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS bills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    number TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    sponsor_id INTEGER NOT NULL REFERENCES members(id),
    introduced TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'introduced',
    subjects TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bill_id INTEGER NOT NULL REFERENCES bills(id),
    member_id INTEGER NOT NULL REFERENCES members(id),
    position TEXT NOT NULL CHECK (position IN ('yea', 'nay', 'present', 'not_voting')),
    cast_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    request_id TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS votes_bill ON votes (bill_id);
CREATE INDEX IF NOT EXISTS bills_sponsor ON bills (sponsor_id);
CREATE INDEX IF NOT EXISTS bills_title_lower ON bills (lower(title));
"""


class Database:
    """A connection factory that hides the SQLite/PostgreSQL differences."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = urlparse(url)
        self.kind = "postgresql" if parsed.scheme.startswith("postgres") else "sqlite"
        self._local = threading.local()
        if self.kind == "sqlite":
            self.path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else url

    def _connect(self) -> Any:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.row_factory = sqlite3.Row
            return conn
        import psycopg  # imported lazily: SQLite deployments do not need it
        from psycopg.rows import dict_row

        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        try:
            yield conn
        except Exception:
            self._local.conn = None
            conn.close()
            raise

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.connection() as conn:
            cur = conn.execute(self._sql(sql), tuple(params))
            return [dict(row) for row in cur.fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.connection() as conn:
            conn.execute(self._sql(sql), tuple(params))
            if self.kind == "sqlite":
                conn.commit()
