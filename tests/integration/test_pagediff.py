"""Page comparison of two snapshots against the truth: every row that differs is named.

A row the page comparison misses would be lost by the cutover's catch-up, so
these tests write at random (small and overflowing rows, updates that keep a
row's size, deletes that free pages for reuse, a VACUUM) between two backup-API
snapshots and check that the rowids reported hold every row that differs.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from tasks.pagediff import PageChanges, RowChanges, changed_rows

SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, body BLOB);
CREATE TABLE docs (key TEXT PRIMARY KEY, body TEXT);
CREATE TABLE pairs (a INTEGER, b TEXT, v TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE TABLE quiet (id INTEGER PRIMARY KEY, v TEXT);
"""
TABLES = {"items": True, "docs": True, "pairs": False, "quiet": True}


def _snapshot(src: Path, dest: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()
    return dest


def _rows(path: Path, table: str) -> dict[object, tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        if table == "pairs":
            return {(r[0], r[1]): r for r in conn.execute("SELECT * FROM pairs")}
        return {r[0]: r[1:] for r in conn.execute(f"SELECT rowid, * FROM {table}")}
    finally:
        conn.close()


def _body(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([20, 200, 5000, 13000]))  # some rows overflow


def _fill(path: Path, rng: random.Random) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT INTO items VALUES (?,?,?)", ((i, f"n{i}", _body(rng)) for i in range(1, 3001))
    )
    conn.executemany(
        "INSERT INTO docs VALUES (?,?)",
        ((f"k{rng.getrandbits(64):x}", "d" * 90) for _ in range(2000)),
    )
    conn.executemany(
        "INSERT INTO pairs VALUES (?,?,?)", ((i, f"b{i % 7}", "v") for i in range(2000))
    )
    conn.executemany("INSERT INTO quiet VALUES (?,?)", ((i, "q") for i in range(500)))
    conn.commit()
    conn.close()


def _write(path: Path, rng: random.Random, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA secure_delete = OFF")  # freed pages keep their old bytes
    for _ in range(n):
        op = rng.randrange(7)
        i = rng.randrange(1, 3200)
        if op == 0:
            conn.execute("INSERT OR REPLACE INTO items VALUES (?,?,?)", (i, "new", _body(rng)))
        elif op == 1:  # the same head, another tail: only overflow pages may change
            row = conn.execute("SELECT body FROM items WHERE id = ?", (i,)).fetchone()
            if row:
                body = row[0][:3000] + rng.randbytes(max(0, len(row[0]) - 3000))
                conn.execute("UPDATE items SET body = ? WHERE id = ?", (body, i))
        elif op == 2:  # deletes a run of rows: pages go to the freelist, then get reused
            conn.execute("DELETE FROM items WHERE id BETWEEN ? AND ?", (i, i + rng.randrange(40)))
        elif op == 3:
            conn.execute("UPDATE items SET name = 'x' WHERE id = ?", (i,))
        elif op == 4:
            key = conn.execute("SELECT key FROM docs ORDER BY random() LIMIT 1").fetchone()
            conn.execute("UPDATE docs SET body = 'changed' WHERE key = ?", key)
            conn.execute("INSERT INTO docs VALUES (?, 'late')", (f"k{rng.getrandbits(64):x}",))
        elif op == 5:
            conn.execute("UPDATE pairs SET v = 'w' WHERE a = ?", (i % 2000,))
        else:
            conn.execute("DELETE FROM docs WHERE rowid = ?", (i,))
    conn.commit()
    conn.close()


def _check(old: Path, new: Path) -> dict[str, RowChanges]:
    changes = changed_rows(old, new, TABLES)
    assert changes is not None
    found = changes.tables
    for table in TABLES:
        a, b = _rows(old, table), _rows(new, table)
        truth = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        got = found.get(table)
        if not truth:
            continue
        assert got is not None, f"{table}: {len(truth)} rows differ, none reported"
        if table == "pairs":
            assert got.whole
        else:
            assert not got.whole and truth <= got.rowids, (table, truth - got.rowids)
    return found


@pytest.mark.parametrize("seed", range(6))
def test_every_row_written_between_two_snapshots_is_named(tmp_path, seed):
    rng = random.Random(seed)
    live = tmp_path / "live.db"
    _fill(live, rng)
    old = _snapshot(live, tmp_path / "old.db")
    _write(live, rng, rng.choice([1, 5, 60]))
    new = _snapshot(live, tmp_path / "new.db")
    found = _check(old, new)
    assert "quiet" not in found  # untouched tables need nothing
    items = found.get("items")
    if items is not None:  # a handful of writes names a few leaves, not the table
        assert len(items.rowids) < 1500
    # the next round starts from the new snapshot, as a second catch-up would
    _write(live, rng, 30)
    _check(new, _snapshot(live, tmp_path / "newer.db"))


def test_a_vacuum_moves_every_page_and_everything_is_named(tmp_path):
    rng = random.Random(9)
    live = tmp_path / "live.db"
    _fill(live, rng)
    conn = sqlite3.connect(live)
    conn.execute("DELETE FROM items WHERE id % 3 = 0")
    conn.commit()
    conn.close()
    old = _snapshot(live, tmp_path / "old.db")
    conn = sqlite3.connect(live)
    conn.execute("UPDATE items SET name = 'v' WHERE id = 1")
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    _check(old, _snapshot(live, tmp_path / "new.db"))


def test_nothing_written_means_no_table_changed(tmp_path):
    live = tmp_path / "live.db"
    _fill(live, random.Random(3))
    old = _snapshot(live, tmp_path / "old.db")
    assert changed_rows(old, _snapshot(live, tmp_path / "new.db"), TABLES) == PageChanges({})


def test_a_schema_change_is_not_judged_by_pages(tmp_path):
    live = tmp_path / "live.db"
    _fill(live, random.Random(4))
    old = _snapshot(live, tmp_path / "old.db")
    conn = sqlite3.connect(live)
    conn.execute("ALTER TABLE quiet ADD COLUMN w TEXT")
    conn.close()
    assert changed_rows(old, _snapshot(live, tmp_path / "new.db"), TABLES) is None


def test_a_virtual_table_is_always_whole(tmp_path):
    live = tmp_path / "live.db"
    conn = sqlite3.connect(live)
    conn.execute("CREATE VIRTUAL TABLE v USING fts5(body)")
    conn.execute("INSERT INTO v VALUES ('x')")
    conn.commit()
    conn.close()
    old = _snapshot(live, tmp_path / "old.db")
    found = changed_rows(old, _snapshot(live, tmp_path / "new.db"), {"v": True})
    assert found == PageChanges({"v": RowChanges(whole=True)})


def test_small_writes_are_mapped_by_walking_interior_pages_only(tmp_path):
    """Without overflow pages changing, leaves are found from their parents (a
    hundredth of the file read); dbstat, which reads every page, is not needed."""
    live = tmp_path / "live.db"
    _fill(live, random.Random(5))
    conn = sqlite3.connect(live)  # three levels: a root, interior pages, leaves
    conn.execute("CREATE TABLE deep (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO deep VALUES (?, ?)", ((i, "x" * 60) for i in range(80_000)))
    conn.commit()
    conn.close()
    old = _snapshot(live, tmp_path / "old.db")
    conn = sqlite3.connect(live)
    conn.execute("UPDATE deep SET v = 'changed' WHERE id = 54321")
    conn.execute("UPDATE quiet SET v = 'renamed' WHERE id = 17")
    conn.execute("DELETE FROM docs WHERE rowid BETWEEN 100 AND 400")  # frees pages
    conn.execute("INSERT INTO quiet VALUES (900, 'new')")
    conn.commit()
    conn.close()
    new = _snapshot(live, tmp_path / "new.db")
    changes = changed_rows(old, new, {**TABLES, "deep": True})
    assert changes is not None and changes.by == "walk"
    assert set(changes.tables) == {"docs", "quiet", "deep"}
    assert 54321 in changes.tables["deep"].rowids and len(changes.tables["deep"].rowids) < 500
    assert set(range(100, 401)) <= changes.tables["docs"].rowids
    assert {17, 900} <= changes.tables["quiet"].rowids
    _check(old, new)


def test_a_wal_mode_source_snapshotted_as_the_cutover_does(tmp_path):
    """The sample service runs SQLite in WAL mode, with the last writes in the -wal
    file: the cutover's snapshot holds them in its own file, where pages are read."""
    from tasks.migrate import snapshot

    live = tmp_path / "live.db"
    _fill(live, random.Random(8))
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the writes stay in the -wal file
    writer.execute("UPDATE quiet SET v = 'before' WHERE id = 3")
    writer.commit()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = snapshot(live, tmp_path / "a")
    writer.execute("UPDATE quiet SET v = 'during' WHERE id = 250")
    writer.execute("DELETE FROM docs WHERE rowid = 9")
    writer.commit()
    assert (tmp_path / "live.db-wal").stat().st_size > 0
    new = snapshot(live, tmp_path / "b")
    writer.close()
    assert not (tmp_path / "b" / "snapshot.db-wal").exists()
    changes = changed_rows(old, new, TABLES)
    assert changes is not None and set(changes.tables) == {"quiet", "docs"}
    assert 250 in changes.tables["quiet"].rowids and 9 in changes.tables["docs"].rowids
    _check(old, new)
