"""What a verified backup and a checked restore cost, against plain pg_dump / pg_restore.

Builds a ~1.1 M-row database on a fresh PostgreSQL 15 (three tables: integer,
uuid and text keys, a jsonb column, secondary indexes), then times, in turn:
plain `pg_dump -Fc`, Shipyard's backup (the same dump plus every table's figures
from the same snapshot), its verification (restore into a scratch database and
compare), plain `pg_restore` into an empty database, and Shipyard's restore
(drop, replay, check figures, one transaction). Prints one JSON line.

`uv run python bench/backup.py [--scale 1.0]`
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import backup as b  # noqa: E402
from tests.support import services  # noqa: E402

T = TypeVar("T")


def build(dsn: str, scale: float) -> int:
    n = int(800_000 * scale)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE votes (id bigint PRIMARY KEY, bill int NOT NULL, member int NOT NULL,"
            " position text NOT NULL, at timestamptz NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO votes SELECT g, g % 5000, g % 541, (ARRAY['yea','nay','present'])[g % 3 + 1],"
            f" '2020-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, {n}) g"
        )
        conn.execute("CREATE INDEX ON votes (bill, member)")
        conn.execute(
            "CREATE TABLE events (id uuid PRIMARY KEY, kind text, payload jsonb, score double precision)"
        )
        conn.execute(
            f"INSERT INTO events SELECT md5(g::text)::uuid, 'k' || g % 17,"
            f" jsonb_build_object('g', g, 'tags', jsonb_build_array(g % 7, 'x')), g / 3.0"
            f" FROM generate_series(1, {n // 4}) g"
        )
        conn.execute("CREATE TABLE sessions (key text PRIMARY KEY, data bytea)")
        conn.execute(
            f"INSERT INTO sessions SELECT 's' || md5(g::text), decode(md5(g::text), 'hex')"
            f" FROM generate_series(1, {n // 16}) g"
        )
        conn.execute("VACUUM ANALYZE")
        return n + n // 4 + n // 16


def timed(fn: Callable[..., T], *args: Any, **kw: Any) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, round(time.perf_counter() - t0, 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    pg = services.start_postgres(services.tmpdir("shipyard-bench-backup-pg-"))
    work = services.tmpdir("shipyard-bench-backup-")
    try:
        base = pg.dsn.rsplit("/", 1)[0]
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
            conn.execute("CREATE DATABASE plain_restore")
        dsn = base + "/app"
        rows = build(dsn, args.scale)
        tools = b.client_tools(None)
        _, plain_dump = timed(
            subprocess.run,
            [tools["pg_dump"], "-Fc", "-f", str(work / "plain.dump"), dsn],
            check=True,
        )
        manifest, backup_s = timed(b.take_backup, dsn, "", work / "shipyard", "bench", tools)
        _, verify_s = timed(b.verify_backup, manifest, work / "shipyard", dsn, "", tools)
        _, plain_restore = timed(
            subprocess.run,
            [tools["pg_restore"], "-d", base + "/plain_restore", str(work / "plain.dump")],
            check=True,
        )
        _, restore_s = timed(b.restore_backup, manifest, work / "shipyard", dsn, "", tools)
        print(
            json.dumps(
                {
                    "rows": rows,
                    "tables": len(manifest.tables),
                    "dump_bytes": manifest.bytes,
                    "plain_pg_dump_s": plain_dump,
                    "backup_s": backup_s,
                    "backup_over_plain": round(backup_s / plain_dump, 2),
                    "verify_s": verify_s,
                    "plain_pg_restore_s": plain_restore,
                    "restore_s": restore_s,
                    "restore_over_plain": round(restore_s / plain_restore, 2),
                }
            )
        )
        return 0
    finally:
        services.stop(pg.proc)
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
