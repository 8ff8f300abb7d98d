"""Where a migration's CPU goes, against the physical pipeline (issue 3's speed target).

The target is wall time ≤ 1.3 times the physical pipeline (sqlite3 CLI → COPY, same
keys), validation included. On a machine whose cores the physical pipeline
already keeps busy, wall time cannot fall below (core-seconds of work) / cores,
so this prints the work itself: every component of Shipyard's migration run
alone, one after the other, measured in core-seconds (busy jiffies of the whole
machine, so PostgreSQL's backends count as well as SQLite and Python), and the
physical pipeline measured the same way.

From these, `floor_ratio` is the best Shipyard could do on this machine with its
work perfectly spread over every core, against the physical pipeline's measured
wall time. Run on an otherwise idle machine: `uv run python bench/cpu_budget.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "service"))

import migrate as bench  # noqa: E402  (bench/migrate.py: the database and the physical pipeline)

from tasks import migrate as m  # noqa: E402
from tasks.core.migration import (  # noqa: E402
    MigrationOptions,
    constraint_sql,
    fk_sql,
    index_sql,
    stream_digested,
)
from tests.support import services  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def busy() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


class Budget:
    """Core-seconds and wall seconds per component, summed by name."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        b0, t0 = busy(), time.perf_counter()
        out = fn(*args)
        self.cpu[name] = self.cpu.get(name, 0.0) + (busy() - b0) / HZ
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
        return out


def shipyard(db: Path, dsn: str, budget: Budget) -> None:
    """Each part of `flows.migrate` alone, in the order the flow needs them."""
    work = m.workdir()
    try:
        snap = budget.run("snapshot", lambda: m.snapshot(db, work))
        with m.sqlite_processes(1) as pool:
            pool.submit(len, "").result()  # the worker is up before anything is timed
            conn = m.open_readonly(snap)
            schema = m.introspect(conn)
            wheres = {
                t.name: [
                    m._where(r) for r in m.rowid_ranges(conn, t.name, t.rows, not t.without_rowid)
                ]
                for t in schema.tables
            }
            conn.close()
            budget.run("scan: quick_check", m._quick_check, snap)
            for st in schema.tables:
                for where in wheres[st.name]:
                    budget.run("scan: storage classes", m._scan_part, snap, st, where)
                if st.fks:
                    budget.run("scan: FK orphans", m._orphans, snap, st)
            plan = m.make_plan(snap, MigrationOptions(), pool)
        budget.run("copy: prepare", m.prepare_stage, dsn, "", plan, "public")
        parts = m.digest_parts(snap, plan)
        for t, rng in parts:
            if m.chunked(t):
                budget.run("copy", m.copy_chunk, snap, dsn, "", t, rng)
        for t in plan.tables:
            if not m.chunked(t):
                for rng in m._chunks(snap, t):
                    budget.run("copy", m.copy_chunk, snap, dsn, "", t, rng)
        taken = {ix.name for t in plan.tables for ix in t.indexes}
        for t in plan.tables:
            indexes = index_sql(t, m.STAGE, taken)
            for _n, sql in indexes:
                budget.run("keys: indexes", m._exec_all, dsn, "", [sql], "index")
            cons = constraint_sql(t, m.STAGE, indexes)
            budget.run("keys: constraints", m._exec_all, dsn, "", cons, "constraints")
        for t in plan.tables:
            fks = fk_sql(t, m.STAGE)
            if fks:
                budget.run("keys: foreign keys", m._exec_all, dsn, "", fks, "fks")
        for t in plan.tables:
            sql = f"ANALYZE {m.STAGE}.{m.quote_ident(t.name)}"
            budget.run("keys: analyze", m._exec_all, dsn, "", [sql], "analyze")
        views = [f"SET search_path = {m.STAGE}, public"] + [
            f"CREATE VIEW {m.STAGE}.{m.quote_ident(v.name)} AS {v.select_sql}" for v in plan.views
        ]
        m._exec_all(dsn, "", views, "views")
        for t, rng in parts:
            budget.run("validate: PostgreSQL digests", m.pg_digest, dsn, "", t, rng)
            if not stream_digested(t):  # the rest are hashed by the copy as it sends
                budget.run("validate: SQLite digests", m.source_digest, snap, t, rng)
        for v in plan.views:
            budget.run("validate: PostgreSQL views", m._pg_view, dsn, "", v)
            budget.run("validate: SQLite views", m._sqlite_view, snap, v)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    home = services.tmpdir("shipyard-bench-cpu-")
    pg = services.start_postgres(services.tmpdir("shipyard-bench-cpu-pg-"))
    try:
        db = home / "bench.db"
        rows = sum(bench.build_database(db, 1.0).values())
        phys = Budget()
        phys.run("physical", bench.physical, db, bench.create_db(pg.dsn, "phys"))
        ship = Budget()
        shipyard(db, bench.create_db(pg.dsn, "ship"), ship)
        groups: dict[str, float] = {}
        for name, cpu in ship.cpu.items():
            group = name.split(":")[0]
            groups[group] = groups.get(group, 0.0) + cpu
        cores = os.cpu_count() or 1
        ship_cpu, phys_cpu, phys_wall = (
            sum(ship.cpu.values()),
            phys.cpu["physical"],
            phys.wall["physical"],
        )
        print(
            json.dumps(
                {
                    "rows": rows,
                    "cores": cores,
                    "physical_wall_s": round(phys_wall, 2),
                    "physical_core_s": round(phys_cpu, 2),
                    "physical_cores_busy": round(phys_cpu / phys_wall, 2),
                    "shipyard_core_s": round(ship_cpu, 2),
                    "shipyard_core_s_by_phase": {k: round(v, 2) for k, v in groups.items()},
                    "shipyard_core_s_by_part": {k: round(v, 2) for k, v in ship.cpu.items()},
                    "floor_s": round(ship_cpu / cores, 2),
                    "floor_ratio": round(ship_cpu / cores / phys_wall, 2),
                    "target_ratio": 1.3,
                    "core_s_allowed_at_target": round(1.3 * phys_wall * cores, 2),
                }
            )
        )
        return 0
    finally:
        services.stop(pg.proc)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
