"""Read-only scan of a real SQLite file feeding the type mapping; the source is never modified."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from tasks.core.errors import MigrationError
from tasks.core.sqlmap import map_column
from tasks.sqlite_scan import open_readonly, scan_column


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE "my table" (
          flag BOOLEAN, score REAL, meta JSON, born DATETIME, raw BLOB, note TEXT, "select", big REAL);
        """
    )
    rows = [
        (1, 1.5, '{"a": 1}', "2024-01-02 03:04:05", b"\x00\x01", "plain", "ok", 1e308 * 10),
        (0, 2, "[1, 2]", "2024-02-03", b"x", "nul\x00inside", 7, 1.0),
        (None, None, None, None, None, None, None, None),
    ]
    conn.executemany('INSERT INTO "my table" VALUES (?,?,?,?,?,?,?,?)', rows)
    conn.commit()
    conn.close()
    return path


def test_scan_decides_types_and_findings_without_touching_the_source(source):
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    conn = open_readonly(source)
    decided = {}
    for col, declared in [
        ("flag", "BOOLEAN"),
        ("score", "REAL"),
        ("meta", "JSON"),
        ("born", "DATETIME"),
        ("raw", "BLOB"),
        ("note", "TEXT"),
        ("select", ""),
        ("big", "REAL"),
    ]:
        m = map_column("my table", col, declared, scan_column(conn, "my table", col))
        decided[col] = (m.pg_type, sorted(f.code for f in m.findings))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute('DELETE FROM "my table"')
    conn.close()
    assert decided == {
        "flag": ("boolean", []),
        "score": ("double precision", []),  # 2 stored as integer: REAL affinity made it 2.0
        "meta": ("jsonb", ["jsonb"]),
        "born": ("timestamp", ["naive-datetime"]),
        "raw": ("bytea", []),
        "note": ("text", ["nul-in-text"]),
        "select": ("text", ["mixed-storage"]),
        "big": ("double precision", ["infinity"]),
    }
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


def test_not_a_database_is_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MigrationError, match="not a readable SQLite database"):
        open_readonly(bogus)
    with pytest.raises(MigrationError, match="does not exist"):
        open_readonly(tmp_path / "missing.db")
