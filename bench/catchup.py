"""The write freeze of a release's database cutover, for an ORM-shaped database (issue 3).

Django and SQLAlchemy applications key their big tables by UUID (stored as
CHAR(32) hex) and their sessions by text. This builds such a database
(`orders`, uuid-keyed, ~1 M rows at scale 1; `sessions`, text-keyed; `audit`,
rowid-keyed), bulk-copies it into a fresh PostgreSQL 15 the way the cutover
does, then changes a handful of rows in the source (as writes accepted before
the freeze would) and times what the cutover does while writes are frozen:
the catch-up (the two snapshots compared page by page, the changed rows) and
the final validation. Also times the validation right after the bulk copy
(which the freeze builds on), what finding the changes by digests of every
table took instead, each side of the uuid table's digest alone, and checks
that the final validation passed and PostgreSQL holds the changed rows.

Then the other direction: the staged tables are swapped into place, a few rows
change in PostgreSQL (as the new version's writes between the thaw and a failed
load test would), and the write-back into the SQLite file is timed: that is the
second freeze of a cutover release whose load test fails. It finds the rows by
their xmin (the file's pages still those of the snapshot swapped in); finding
them by digests of every table, as it did before, is timed too.

Prints one JSON line. Run: `uv run python bench/catchup.py [--scale 1]`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402

SCHEMA = """
CREATE TABLE orders (
    id CHAR(32) NOT NULL PRIMARY KEY,
    customer VARCHAR(80) NOT NULL,
    amount INTEGER NOT NULL,
    note TEXT,
    created DATETIME NOT NULL,
    paid BOOL NOT NULL
);
CREATE INDEX orders_customer ON orders (customer);
CREATE TABLE sessions (
    session_key VARCHAR(40) NOT NULL PRIMARY KEY,
    session_data TEXT NOT NULL,
    expire_date DATETIME NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id CHAR(32) NOT NULL REFERENCES orders (id),
    what TEXT NOT NULL
);
"""


def build(path: Path, scale: float) -> dict[str, int]:
    rng = random.Random(11)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    n = int(1_000_000 * scale)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(n)]
    conn.executemany(
        "INSERT INTO orders VALUES (?,?,?,?,?,?)",
        (
            (
                u,
                f"customer {i % 5000}",
                rng.randrange(100, 10**6),
                None if i % 3 else f"note {i}",
                f"2025-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{i % 60:02d}.{i % 10**6:06d}",
                i % 2,
            )
            for i, u in enumerate(ids)
        ),
    )
    conn.executemany(
        "INSERT INTO sessions VALUES (?,?,?)",
        (
            (f"{rng.getrandbits(160):040x}", f"data {i}" * 4, f"2025-06-{1 + i % 28:02d} 10:00:00")
            for i in range(n // 5)
        ),
    )
    conn.executemany(
        "INSERT INTO audit (order_id, what) VALUES (?,?)",
        ((ids[i * 7 % n], f"paid {i}") for i in range(n // 5)),
    )
    conn.commit()
    counts = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("orders", "sessions", "audit")
    }
    conn.close()
    return counts


def writes_before_freeze(path: Path) -> list[str]:
    """An update, an insert and a delete per keyed table: what the catch-up must carry."""
    conn = sqlite3.connect(path)
    changed = []
    a, b = (r[0] for r in conn.execute("SELECT id FROM orders ORDER BY rowid LIMIT 2"))
    conn.execute("UPDATE orders SET amount = -1 WHERE id = ?", (a,))
    conn.execute("DELETE FROM audit WHERE order_id = ?", (b,))
    conn.execute("DELETE FROM orders WHERE id = ?", (b,))
    new = uuid.UUID(int=12345, version=4).hex
    conn.execute(
        "INSERT INTO orders VALUES (?, 'late customer', 7, NULL, '2025-12-01 00:00:00.000000', 1)",
        (new,),
    )
    s = conn.execute("SELECT session_key FROM sessions ORDER BY rowid LIMIT 1").fetchone()[0]
    conn.execute("UPDATE sessions SET session_data = 'changed' WHERE session_key = ?", (s,))
    conn.execute("INSERT INTO audit (order_id, what) VALUES (?, 'late')", (new,))
    conn.commit()
    conn.close()
    changed += [a, new]
    return changed


def write_back_figures(db: Path, dsn: str, plan: Any, kept: Path) -> dict[str, Any]:
    """Swap the copy into place, change a row or two per table in PostgreSQL, time
    the write-back (which finds them by xmin, the file unchanged since the swap: its
    pages are those of `kept`, the snapshot swapped in), and check that the file then
    holds what PostgreSQL holds. Also times finding them by digests, as before."""
    import psycopg

    from tasks import migrate as m
    from tasks.core.migration import Since
    from tasks.writeback import _written, differing_tables, write_back

    horizon = m.write_horizon(dsn, "")
    m.swap(dsn, "", plan, "public")
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE orders SET amount = -2 WHERE id = (SELECT id FROM orders ORDER BY id LIMIT 1)"
        )
        conn.execute("INSERT INTO orders VALUES (gen_random_uuid(), 'new', 9, NULL, now(), true)")
        conn.execute(
            "UPDATE sessions SET session_data = 'pg' WHERE session_key = "
            "(SELECT min(session_key) FROM sessions)"
        )
        conn.execute("INSERT INTO audit (order_id, what) SELECT id, 'pg' FROM orders LIMIT 1")
        conn.execute("DELETE FROM audit WHERE id = (SELECT min(id) FROM audit)")
        conn.execute(
            "DELETE FROM sessions WHERE session_key = (SELECT max(session_key) FROM sessions)"
        )
    out: dict[str, Any] = {}
    with m.sqlite_processes(m.cores()) as pool:
        t0 = time.perf_counter()
        m.find_changes(db, dsn, "", _written(plan), pool, "public")
        out["write_back_find_by_digests_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    done = write_back(db, dsn, "", plan, "public", since=Since(horizon=horizon, snapshot=str(kept)))
    out["write_back_s"] = round(time.perf_counter() - t0, 2)
    out["write_back_found_by"] = done.found_by
    out["written_back"] = done.rows
    out["write_back_exact"] = differing_tables(db, dsn, "", plan, "public") == set()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    from tasks import migrate as m
    from tasks.core.migration import MigrationOptions

    home = services.tmpdir("shipyard-bench-catchup-")
    pg = services.start_postgres(services.tmpdir("shipyard-bench-catchup-pg-"))
    out: dict[str, Any] = {}
    try:
        db = home / "app.db"
        t0 = time.perf_counter()
        out["rows"] = build(db, args.scale)
        out["build_db_s"] = round(time.perf_counter() - t0, 1)
        dsn, password = pg.dsn, ""
        with m.sqlite_processes(m.cores()) as pool:
            t0 = time.perf_counter()
            (home / "bulk").mkdir()
            (home / "final").mkdir()
            snap = m.snapshot(db, home / "bulk")
            plan = m.make_plan(snap, MigrationOptions(), pool)
            m.prepare_stage(dsn, password, plan, "public")
            m.copy_all(snap, dsn, password, plan, pool)
            m.build_keys(dsn, password, plan)
            out["bulk_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            kept: dict[Any, Any] = {}
            first = m.validate(snap, dsn, password, plan, pool, keep=kept)
            out["validate_s"] = round(time.perf_counter() - t0, 2)
            out["validate_passed"] = first.passed
            orders = next(t for t in plan.tables if t.name == "orders")
            parts = [r for t, r in m.digest_parts(snap, plan) if t.name == "orders"]
            t0 = time.perf_counter()
            for r in parts:
                m.source_digest(snap, orders, r)
            out["orders_digest_sqlite_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            for r in parts:
                m.pg_digest(dsn, password, orders, r)
            out["orders_digest_pg_s"] = round(time.perf_counter() - t0, 2)
            out["orders_parts"] = len(parts)

            changed = writes_before_freeze(db)
            t0 = time.perf_counter()
            snap2 = m.snapshot(db, home / "final")
            out["snapshot_s"] = round(time.perf_counter() - t0, 2)
            # what the freeze did before pages were compared: digests of every table
            t1 = time.perf_counter()
            m.find_changes(snap2, dsn, password, plan, pool)
            out["find_by_digests_s"] = round(time.perf_counter() - t1, 2)
            t0 = time.perf_counter()
            snap2 = m.snapshot(db, home / "final")
            caught = m.catch_up_from_pages(snap, snap2, dsn, password, plan, pool, first, kept)
            assert caught is not None, "the pages could not tell"
            out["catch_up_s"] = round(time.perf_counter() - t0, 2)
            t1 = time.perf_counter()
            final = m.validate_caught_up(snap2, dsn, password, plan, pool, caught)
            out["final_validate_s"] = round(time.perf_counter() - t1, 2)
            out["freeze_work_s"] = round(time.perf_counter() - t0, 2)
            out["rows_caught_up"] = caught.rows
            out["final_passed"] = final.passed
        import psycopg

        with psycopg.connect(dsn) as conn:
            got = conn.execute(
                f"SELECT count(*) FROM {m.STAGE}.orders"
                " WHERE replace(id::text, '-', '') = ANY(%s) AND amount IN (-1, 7)",
                (changed,),
            ).fetchone()
        out["changed_rows_present"] = bool(got and got[0] == 2)
        out.update(write_back_figures(db, dsn, plan, snap2))
        print(json.dumps(out))
        ok = out["final_passed"] and out["changed_rows_present"] and out["write_back_exact"]
        return 0 if ok else 1
    finally:  # a run leaves ~1 GB of files: the database, its snapshots, PostgreSQL's data
        services.stop(pg.proc)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
