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


@pytest.mark.parametrize(
    ("declared", "values", "pg_type"),
    [
        ("CHAR(32)", ["0123456789abcdef0123456789abcdef", None], "uuid"),
        ("CHAR(32)", ["0123456789ABCDEF0123456789ABCDEF"], "text"),  # upper case: not uuid.hex
        ("CHAR(32)", ["01234567-89ab-cdef-0123-456789ab"], "text"),
        ("CHAR(32)", ["0123456789abcdef0123456789abcde"], "text"),  # 31 digits
        ("CHAR(36)", ["01234567-89ab-cdef-0123-456789abcdef", None], "uuid"),
        ("CHAR(36)", ["01234567-89AB-CDEF-0123-456789ABCDEF"], "text"),
        ("CHAR(36)", ["0123456789-ab-cdef-0123-456789abcdef"], "text"),  # dashes misplaced
        ("UUID", ["0123456789abcdef0123456789abcdef"], "uuid"),
        (
            "UUID",
            ["0123456789abcdef0123456789abcdef", "01234567-89ab-cdef-0123-456789abcdef"],
            "text",
        ),
        ("char(39)", ["10.0.0.1", "2001:db8::1", "::ffff:10.9.8.7", None], "inet"),
        ("char(39)", ["10.0.0.1", "localhost"], "text"),
        ("char(39)", ["10.0.0.1", "fe80::1%eth0"], "text"),  # a zone: inet refuses it
    ],
)
def test_orm_uuid_and_ip_columns_are_recognised_by_their_values(
    tmp_path, declared, values, pg_type
):
    path = tmp_path / "orm.db"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t (c {declared})")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    conn.commit()
    conn.close()
    stats = scan_column(open_readonly(path), "t", "c", declared)
    assert map_column("t", "c", declared, stats).pg_type == pg_type
