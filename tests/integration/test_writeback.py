"""Write-back: rows PostgreSQL took after a cutover go back into the SQLite source
as the application wrote them there (real PostgreSQL, real SQLite files)."""

from __future__ import annotations

import datetime
import json
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from flows.migrate import Cutover, cutover_migration
from tasks.core.errors import MigrationError
from tasks.writeback import differing_tables, write_back
from tests.support import services

SCHEMA = """
CREATE TABLE item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(40) NOT NULL,
    done BOOL NOT NULL,
    price DECIMAL(8, 2),
    ratio REAL,
    meta JSON,
    created DATETIME NOT NULL,
    stamped DATETIME,
    iso DATETIME,
    day DATE,
    at TIME,
    took bigint,
    blob BLOB,
    tag CHAR(32),
    total REAL GENERATED ALWAYS AS (price * 2) VIRTUAL
);
CREATE TABLE acct (id CHAR(32) PRIMARY KEY, email TEXT NOT NULL COLLATE NOCASE, ip CHAR(39));
CREATE TABLE audit (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, what TEXT NOT NULL);
CREATE TRIGGER item_audit AFTER INSERT ON item
BEGIN INSERT INTO audit (item, what) VALUES (NEW.id, 'insert'); END;
CREATE TABLE pair (k TEXT, n INTEGER, v TEXT, PRIMARY KEY (k, n)) WITHOUT ROWID;
CREATE TABLE loose (a TEXT, b INTEGER);
"""


def _dt(i: int) -> datetime.datetime:
    return datetime.datetime(2024, 1, 1, 12, 0, 0) + datetime.timedelta(
        minutes=i, microseconds=i % 2 * 1500
    )


def build(path: Path) -> Path:
    """What a Django/SQLAlchemy app leaves: str(datetime) (a fraction only when not zero),
    SQLAlchemy's always-fractional text, isoformat() with a 'T', 0/1 booleans, hex uuids."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    for i in range(1, 201):
        d = _dt(i)
        conn.execute(
            "INSERT INTO item (name, done, price, ratio, meta, created, stamped, iso, day, at,"
            " took, blob, tag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f"item {i}",
                i % 2,
                f"{i}.25",
                i / 3,
                json.dumps({"i": i, "tags": ["a", "b"]}),
                str(d),
                d.strftime("%Y-%m-%d %H:%M:%S.%f"),
                d.isoformat(),
                d.date().isoformat(),
                d.time().isoformat(),
                i * 1000,
                bytes([i % 256, 0, 255]),
                uuid.UUID(int=i).hex,
            ),
        )
    conn.executemany(
        "INSERT INTO acct VALUES (?, ?, ?)",
        [(uuid.UUID(int=i).hex, f"User{i}@Example.com", f"10.0.0.{i}") for i in range(50)],
    )
    conn.executemany(
        "INSERT INTO pair VALUES (?, ?, ?)", [(f"k{i % 5}", i, "v") for i in range(60)]
    )
    conn.executemany("INSERT INTO loose VALUES (?, ?)", [(f"a{i}", i) for i in range(30)])
    conn.commit()
    conn.close()
    return path


sha = services.file_sha


def cut_over(db: Path, dsn: str) -> Cutover:
    block = PostgresDatabase(dsn=SecretStr(dsn), accept=["item.total:generated-column"])
    cut = cutover_migration(str(db), block, lambda: None, lambda: None, drain_s=0)
    assert cut.validation.passed
    return cut


def new_version_writes(dsn: str) -> None:
    """What the new version does on PostgreSQL between the thaw and a failed load test."""
    with psycopg.connect(dsn) as pg:
        for i, us in ((0, 0), (1, 123456)):
            d = datetime.datetime(2025, 6, 1, 8, 30, 0, us)
            pg.execute(
                "INSERT INTO item (name, done, price, ratio, meta, created, stamped, iso, day,"
                " at, took, blob, tag, total) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, NULL)",
                (
                    f"new {i}",
                    True,
                    Decimal("9.50"),
                    0.1 + 0.2,
                    json.dumps({"new": [1, 2.5, None]}),
                    d,
                    d,
                    d,
                    d.date(),
                    d.time(),
                    4242,
                    b"\x00\x01",
                    uuid.UUID(int=10_000 + i),
                ),
            )
        pg.execute("UPDATE item SET name = 'renamed', done = false, meta = NULL WHERE id = 7")
        pg.execute("DELETE FROM item WHERE id = 9")
        pg.execute("INSERT INTO item (name, done, created) VALUES ('gone', true, now())")
        pg.execute("DELETE FROM item WHERE name = 'gone'")  # its id 203 was handed out all the same
        pg.execute("UPDATE acct SET email = 'Moved@Example.com' WHERE id = %s", (uuid.UUID(int=3),))
        pg.execute("DELETE FROM acct WHERE id = %s", (uuid.UUID(int=4),))
        pg.execute("INSERT INTO acct VALUES (%s, 'x@y.z', '::1')", (uuid.UUID(int=999),))
        pg.execute("UPDATE pair SET v = 'changed' WHERE k = 'k2' AND n = 7")
        pg.execute("INSERT INTO pair VALUES ('k9', 1, 'new')")
        pg.execute("UPDATE loose SET b = -1 WHERE a = 'a3'")


def test_the_new_versions_writes_land_in_the_source_as_the_application_wrote_them(tmp_path, target):
    db = build(tmp_path / "app.db")
    cut = cut_over(db, target)
    new_version_writes(target)
    assert set(differing_tables(db, target, "", cut.plan, "public")) == {
        "item",
        "acct",
        "audit",
        "pair",
        "loose",
    }

    with psycopg.connect(target) as pg:  # the new version's own schema change
        pg.execute("ALTER TABLE acct ADD COLUMN nickname TEXT DEFAULT 'nick'")
        pg.execute("CREATE TABLE badges (id bigint PRIMARY KEY)")

    done = write_back(db, target, "", cut.plan, "public")

    assert done.rows == {"item": 4, "acct": 3, "audit": 3, "pair": 2, "loose": 30}, done
    assert done.not_written == ("acct.nickname", "badges")  # reported, the rest goes back
    assert done.whole == ("loose",)
    assert differing_tables(db, target, "", cut.plan, "public") == set()  # the same content
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT name, done, typeof(done), price, typeof(price), ratio, meta, created, stamped,"
        " iso, day, at, took, blob, tag, total FROM item WHERE name LIKE 'new %' ORDER BY id"
    ).fetchall()
    zero, frac = rows
    # str(datetime): no fraction when it is zero; SQLAlchemy's column: always; isoformat: 'T'
    assert zero[7:12] == (
        "2025-06-01 08:30:00",
        "2025-06-01 08:30:00.000000",
        "2025-06-01T08:30:00",
        "2025-06-01",
        "08:30:00",
    )
    assert frac[7:12] == (
        "2025-06-01 08:30:00.123456",
        "2025-06-01 08:30:00.123456",
        "2025-06-01T08:30:00.123456",
        "2025-06-01",
        "08:30:00.123456",
    )
    assert frac[:7] == ("new 1", 1, "integer", 9.5, "real", 0.1 + 0.2, frac[6])
    assert json.loads(frac[6]) == {"new": [1, 2.5, None]}
    assert frac[12:] == (4242, b"\x00\x01", uuid.UUID(int=10_001).hex, 19.0)  # generated again
    assert conn.execute("SELECT name, done, meta FROM item WHERE id = 7").fetchone() == (
        "renamed",
        0,
        None,
    )
    assert conn.execute("SELECT count(*) FROM item WHERE id IN (9, 203)").fetchone() == (0,)
    # the trigger ran once, in PostgreSQL: its audit rows came back, it did not fire again
    audit = conn.execute("SELECT what, count(*) FROM audit GROUP BY what").fetchall()
    assert audit == [("insert", 203)]
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'item'").fetchone() == (203,)
    assert conn.execute(
        "SELECT email, ip FROM acct WHERE id = ?", (uuid.UUID(int=3).hex,)
    ).fetchone() == (
        "Moved@Example.com",
        "10.0.0.3",
    )
    assert conn.execute(
        "SELECT ip FROM acct WHERE id = ?", (uuid.UUID(int=999).hex,)
    ).fetchone() == ("::1",)
    assert conn.execute("SELECT v FROM pair WHERE k = 'k2' AND n = 7").fetchone() == ("changed",)
    # the trigger is back and fires for the old version's own writes
    conn.execute("INSERT INTO item (name, done, created) VALUES ('old', 0, '2025-01-01 00:00:00')")
    assert conn.execute("SELECT id FROM item WHERE name = 'old'").fetchone() == (204,)
    assert conn.execute("SELECT count(*) FROM audit").fetchone() == (204,)
    conn.close()


def _kept_cut_over(tmp_path: Path, db: Path, dsn: str) -> Cutover:
    """A cutover that keeps the snapshot it swapped in, as a release's does."""
    block = PostgresDatabase(dsn=SecretStr(dsn), accept=["item.total:generated-column"])
    cut = cutover_migration(
        str(db), block, lambda: None, lambda: None, drain_s=0, keep_snapshot=tmp_path / "kept"
    )
    assert cut.validation.passed and cut.since is not None
    return cut


def test_the_rows_written_since_the_swap_are_found_by_xmin_not_digests(tmp_path, target):
    """The file has not changed since the swap (its pages are the kept snapshot's), so
    PostgreSQL's later writes are the rows whose xmin is past the horizon: updates and
    inserts (a trigger's too) are written back without digesting a table. Deleted
    keys have no row to show: the buckets where rows vanished are listed on both
    sides, even where an insert into the same bucket keeps its count. Only the
    table without a key goes by digests, and the file ends equal."""
    db = build(tmp_path / "app.db")
    cut = _kept_cut_over(tmp_path, db, target)
    with psycopg.connect(target) as pg:
        pg.execute("UPDATE item SET name = 'renamed' WHERE id = 7")
        pg.execute("INSERT INTO item (name, done, created) VALUES ('new', true, now())")
        pg.execute("UPDATE acct SET email = 'Moved@Example.com' WHERE id = %s", (uuid.UUID(int=3),))
        pg.execute("INSERT INTO acct VALUES (%s, 'x@y.z', '::1')", (uuid.UUID(int=999),))
        pg.execute("UPDATE pair SET v = 'changed' WHERE k = 'k2' AND n = 7")
        pg.execute("DELETE FROM pair WHERE k = 'k1' AND n = 6")
        pg.execute("DELETE FROM item WHERE id IN (9, 10)")  # the insert above is in their bucket
        pg.execute("DELETE FROM acct WHERE id = %s", (uuid.UUID(int=4),))
    done = write_back(db, target, "", cut.plan, "public", since=cut.since)
    assert done.found_by == "xmin" and done.by_digests == ("loose",)  # loose: no key
    # exactly the rows written or deleted; item's insert fired the audit trigger
    assert done.rows == {"item": 4, "acct": 3, "audit": 1, "pair": 2}, done
    assert differing_tables(db, target, "", cut.plan, "public") == set()


def test_a_transaction_open_across_the_swap_is_not_missed(tmp_path, target):
    """The horizon is the oldest transaction running before the swap, not the swap's
    own id: a transaction that took its id earlier and writes the table afterwards
    still counts as written since."""
    db = build(tmp_path / "app.db")
    with psycopg.connect(target) as early:
        early.execute("CREATE TABLE elsewhere (x int)")
        early.execute("INSERT INTO elsewhere VALUES (1)")  # takes a transaction id now
        cut = _kept_cut_over(tmp_path, db, target)
        early.execute("UPDATE public.item SET name = 'late' WHERE id = 11")
    done = write_back(db, target, "", cut.plan, "public", since=cut.since)
    assert done.found_by == "xmin" and done.rows.get("item", 0) >= 1
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM item WHERE id = 11").fetchone() == ("late",)
    conn.close()


def test_a_table_changed_in_the_file_since_the_swap_is_compared_by_digests(tmp_path, target):
    """Something wrote a table of the SQLite file after the swap: PostgreSQL's xmin
    cannot say what differs there, so digests do (the other tables still go by xmin),
    and the file ends holding PostgreSQL's rows."""
    db = build(tmp_path / "app.db")
    cut = _kept_cut_over(tmp_path, db, target)
    with psycopg.connect(target) as pg:
        pg.execute("UPDATE item SET name = 'renamed' WHERE id = 7")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE item SET name = 'stray' WHERE id = 8")
    conn.commit()
    conn.close()
    with psycopg.connect(target) as pg:
        pg.execute("UPDATE acct SET email = 'Moved@Example.com' WHERE id = %s", (uuid.UUID(int=3),))
    done = write_back(db, target, "", cut.plan, "public", since=cut.since)
    assert done.found_by == "xmin" and set(done.by_digests) == {"item", "loose"}
    assert done.rows == {"item": 2, "acct": 1}, done
    assert differing_tables(db, target, "", cut.plan, "public") == set()


def test_nothing_written_back_when_nothing_changed(tmp_path, target):
    db = build(tmp_path / "app.db")
    cut = cut_over(db, target)
    before = sha(db)
    done = write_back(db, target, "", cut.plan, "public")
    assert done.rows == {} and done.whole == ()
    assert sha(db) == before


def test_a_failed_write_back_leaves_the_source_as_it_was(tmp_path, target):
    """The new version changed PostgreSQL's schema (a dropped column): the write-back
    cannot render its rows, says so, and the file is byte for byte what it was."""
    db = build(tmp_path / "app.db")
    cut = cut_over(db, target)
    new_version_writes(target)
    with psycopg.connect(target) as pg:
        pg.execute("ALTER TABLE acct DROP COLUMN ip")
    before = sha(db)
    with pytest.raises(MigrationError, match="write-back") as err:
        write_back(db, target, "", cut.plan, "public")
    assert "new version keeps serving" in (err.value.hint or "")
    assert sha(db) == before


def test_a_check_failing_after_the_rewrite_rolls_it_back(tmp_path, target):
    """The checksum after the rewrite is the gate: a value SQLite stores differently
    than PostgreSQL holds it (here a text into an INTEGER column that the new
    version's schema change allowed) is caught and nothing is committed."""
    db = build(tmp_path / "app.db")
    cut = cut_over(db, target)
    with psycopg.connect(target) as pg:
        pg.execute("ALTER TABLE loose ALTER COLUMN b TYPE text")
        pg.execute("UPDATE loose SET b = '007' WHERE a = 'a1'")
    before = sha(db)
    with pytest.raises(MigrationError, match="still differs"):
        write_back(db, target, "", cut.plan, "public")
    assert sha(db) == before


def test_a_backup_of_the_source_is_taken_before_and_the_newest_kept(tmp_path):
    """The copy is a consistent, readable database equal to the source at the time; the
    newest three copies of one file are kept; a copy that cannot be made raises a clear
    error (the caller then writes nothing back) and leaves the source alone."""
    import hashlib
    import os
    import time

    from tasks.writeback import backup_source

    source = tmp_path / "app.db"
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    backups = tmp_path / "state" / "backups"
    made = []
    for i in range(4):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        conn.commit()
        made.append(backup_source(source, backups, f"rel{i}"))
        os.utime(made[-1], (time.time() + i, time.time() + i))  # distinct ages
    conn.close()
    kept = sorted(p.name for p in backups.iterdir())
    assert kept == [f"app-before-write-back-rel{i}.db" for i in (1, 2, 3)]
    with sqlite3.connect(f"file:{made[-1]}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM t").fetchone() == (4,)
    with sqlite3.connect(f"file:{made[2]}?mode=ro", uri=True) as copy:
        assert copy.execute("SELECT count(*) FROM t").fetchone() == (3,)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the backup directory should be")
    with pytest.raises(MigrationError, match=r"could not back up .*app\.db before writing back"):
        backup_source(source, blocked, "rel9")
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
