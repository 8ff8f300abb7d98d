"""Write-back: the rows PostgreSQL took after a cutover, put into the SQLite source.

A cutover release thaws writes before its load test; should the test fail, the
old version goes back on its SQLite file, and this puts PostgreSQL's changes
there first, while writes are frozen again. What differs is found as the
catch-up finds it (`find_changes`: digests of every table on both sides, rows
only where they differ), and everything is written in one SQLite transaction
that is checked before it commits: the rewritten rows' checksum and each
table's row count must equal PostgreSQL's, over the canonical form the
migration validated with. Otherwise the file stays as it was and the caller
keeps the new version.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import starmap
from pathlib import Path
from typing import Any

import psycopg

from tasks.core.errors import MigrationError
from tasks.core.migration import (
    Plan,
    PlanTable,
    Since,
    bucket_width,
    catch_up_where_sql,
    key_walk,
    keyed_where_pg,
    pg_checksum_sql,
    source_row_hasher,
)
from tasks.core.sqlmap import quote_ident
from tasks.core.writeback import (
    back_insert_sql,
    back_select_sql,
    batches,
    sequence_sql,
    written_columns,
)
from tasks.migrate import (
    Changed,
    _pg_error,
    cores,
    find_changes,
    open_readonly,
    pg_connect,
    snapshot,
    sqlite_processes,
    workdir,
)
from tasks.pagediff import changed_rows

UNCHANGED = "the SQLite file is unchanged; the new version keeps serving on PostgreSQL"


@dataclass(frozen=True)
class WriteBack:
    """What a write-back changed in the source."""

    rows: dict[str, int]  # rows deleted or rewritten by key, or written into a whole table
    whole: tuple[str, ...]  # tables rewritten whole (no key to find rows by)
    seconds: float
    # columns and tables PostgreSQL has and the source never had (the new version's own
    # schema changes): their data cannot go back, it stays in PostgreSQL
    not_written: tuple[str, ...] = ()
    # how the changed rows were found: "xmin" (rows written since the swap, the file
    # unchanged since) or "digests" (of every table on both sides)
    found_by: str = "digests"
    by_digests: tuple[str, ...] = ()  # with "xmin", the tables that still needed digests


BACKUPS_KEPT = 3  # per SQLite file name: the newest ones


def backup_source(path: Path, directory: Path, label: str, keep: int = BACKUPS_KEPT) -> Path:
    """A consistent, synced copy of the SQLite file, taken before a write-back changes
    it: the one time Shipyard writes the source. The write-back checks itself and
    leaves the file as it was on any failure; this is for whoever finds later that
    the old version should not have had those rows. Taken before writes freeze (the
    old version takes no traffic meanwhile), so it adds nothing to the freeze. Older
    copies of the same file beyond `keep` are removed."""
    stem = f"{path.stem}-before-write-back-"
    dest = directory / f"{stem}{label}.db"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (sqlite3.Error, OSError) as exc:
        if directory.is_dir():
            dest.unlink(missing_ok=True)
        raise MigrationError(
            f"could not back up {path} before writing back into it: {exc}",
            hint=f"check the space and permissions of {directory}; {UNCHANGED}",
        ) from exc
    older = sorted(
        (p for p in directory.glob(f"{stem}*.db") if p != dest), key=lambda p: p.stat().st_mtime
    )
    for old in older[: max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return dest


def _written(plan: Plan) -> Plan:
    """The plan without generated columns: SQLite computes them, whatever PostgreSQL
    (where they are plain columns) holds."""
    tables = tuple(t.model_copy(update={"columns": tuple(written_columns(t))}) for t in plan.tables)
    return plan.model_copy(update={"tables": tables})


def differing_tables(
    path: Path, dsn: str, password: str, plan: Plan, schema: str, pool: Executor | None = None
) -> set[str]:
    """Tables whose content differs between the source and PostgreSQL's `schema`."""
    with ExitStack() as stack:
        pool = pool or stack.enter_context(sqlite_processes(cores()))
        found = find_changes(path, dsn, password, _written(plan), pool, schema)
    return {c.table.name for c in found.tables}


def write_back(
    path: Path,
    dsn: str,
    password: str,
    plan: Plan,
    schema: str,
    pool: Executor | None = None,
    busy_timeout_s: float = 10.0,
    since: Since | None = None,
) -> WriteBack:
    """Make the source hold what PostgreSQL holds, in one checked transaction.

    With `since` (what the cutover swapped in), the rows to write back are those
    PostgreSQL wrote after the swap, found by their xmin, provided the file has
    not changed since (its pages compared with the swapped-in snapshot): no
    table is digested. Otherwise, or for a table where rows vanished, digests
    of both sides find what differs.

    Only rows that differ are rewritten; a table without a usable key is
    rewritten whole. The migrated triggers are dropped and recreated inside the
    transaction: PostgreSQL ran them already, and their effects are among the
    rows written back. Triggers that were not migrated (FTS indexes, say) fire
    as they would for the application. An AUTOINCREMENT table's sqlite_sequence
    moves past every id PostgreSQL handed out, deleted rows' included, so the old
    version never reuses one. `pool` reads the source (processes are started if none).
    """
    started = time.perf_counter()
    counts: dict[str, int] = {}
    full, plan = plan, _written(plan)
    try:
        with ExitStack() as stack:
            pool = pool or stack.enter_context(sqlite_processes(cores()))
            quick = _since_swap(path, dsn, password, plan, pool, schema, since) if since else None
            digested: tuple[str, ...] = ()
            if quick is None:
                found = find_changes(path, dsn, password, plan, pool, schema)
                tables: Sequence[Changed] = found.tables
                pg_rows = {
                    r.name: r.rows_target
                    for r in found.before.tables
                    if r.name in {c.table.name for c in tables}
                }
            else:
                tables, pg_rows, digested = quick
        with pg_connect(dsn, password) as pg:
            not_written = _unknown_to_the_source(pg, full, schema)
            last_ids = {
                t.name: pg.execute(sql).fetchone()[0]  # type: ignore[index]
                for t in plan.tables
                if (sql := sequence_sql(t, schema)) is not None
            }
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
            try:  # closed before COMMIT, the transaction rolls back: the file stays as it was
                conn.execute("BEGIN IMMEDIATE")
                sequences = _sequence_updates(conn, last_ids)
                if tables or sequences:
                    _rewrite(conn, pg, plan, schema, tables, counts)
                    _check(conn, pg, schema, tables, pg_rows)
                    for sql, params in sequences:
                        conn.execute(sql, params)
                    conn.execute("COMMIT")
            finally:
                conn.close()
    except sqlite3.Error as exc:
        raise MigrationError(
            f"writing PostgreSQL's changes back into {path} failed: {exc}", hint=UNCHANGED
        ) from exc
    except psycopg.Error as exc:
        raise _pg_error(
            exc, password, "reading PostgreSQL's changes for the write-back failed", UNCHANGED
        ) from exc
    return WriteBack(
        rows=counts,
        whole=tuple(c.table.name for c in tables if c.rowids is None and c.keys is None),
        seconds=round(time.perf_counter() - started, 3),
        not_written=not_written,
        found_by="digests" if quick is None else "xmin",
        by_digests=digested,
    )


def _since_swap(
    path: Path,
    dsn: str,
    password: str,
    plan: Plan,
    pool: Executor,
    schema: str,
    since: Since,
) -> tuple[list[Changed], dict[str, int], tuple[str, ...]] | None:
    """The rows PostgreSQL wrote after the swap, its row counts of those tables, and the
    tables that needed digests; None if the pages cannot tell (another schema, say).

    At the swap PostgreSQL held exactly the snapshot, and so does a table of the file
    whose pages are the snapshot's (one that changed since goes by digests). Rows whose xmin is not older than the horizon were written
    since (inserted or updated); every other row is one the snapshot holds. The
    snapshot's rows that PostgreSQL no longer has unchanged are then its row count
    minus PostgreSQL's unchanged rows; if all of them are keys PostgreSQL wrote
    again, nothing was deleted and the written keys are everything that changed.
    A table where rows vanished, without a usable key, or where most rows were
    written is left to the digests.
    """
    tmp = workdir()
    try:
        now = snapshot(path, tmp)
        pages = changed_rows(Path(since.snapshot), now, {t.name: t.has_rowid for t in plan.tables})
        if pages is None:
            return None
        out: list[Changed] = []
        pg_rows: dict[str, int] = {}
        by_digests = [t for t in plan.tables if t.name in pages.tables]
        lite = open_readonly(now)
        try:
            with pg_connect(dsn, password) as pg:
                for t in plan.tables:
                    if t.name in pages.tables:
                        continue
                    found = _written_since(lite, pg, t, schema, since.horizon)
                    if found is None:
                        by_digests.append(t)
                    elif found[0] is not None:
                        out.append(found[0])
                        pg_rows[t.name] = found[1]
        finally:
            lite.close()
        if by_digests:
            sub = find_changes(now, dsn, password, plan, pool, schema, only=by_digests)
            out += sub.tables
            names = {c.table.name for c in sub.tables}
            pg_rows.update({r.name: r.rows_target for r in sub.before.tables if r.name in names})
        return out, pg_rows, tuple(t.name for t in by_digests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _written_since(
    lite: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    t: PlanTable,
    schema: str,
    horizon: int,
) -> tuple[Changed | None, int] | None:
    """One table: (the rows PostgreSQL wrote since `horizon` or deleted, or None if
    none; its row count), or None if only digests can tell.

    Keys PostgreSQL wrote since are those of rows with a newer xmin. Keys that
    vanished (deleted, or a key updated away) have no row to show; per bucket of
    keys (1024 rowids, or a key-prefix), the snapshot's rows, less PostgreSQL's, plus
    the written keys the snapshot lacked, is how many vanished there, and only those
    buckets' keys are listed on both sides."""
    ident = next((c for c in t.columns if c.identity), None)
    walk = key_walk(t)
    name = quote_ident(t.name)
    if ident is not None:
        key_sql, lite_key = quote_ident(ident.name), "rowid"
        pg_bucket, lite_bucket = f"{key_sql} >> 10", "rowid >> 10"
    elif walk is not None and walk.by_value:
        key_sql, lite_key = ", ".join(walk.pg_keys), walk.sqlite_keys
        width = bucket_width(t.rows)
        pg_bucket = f"substr({walk.pg_keys[0]}, 1, {width})"
        lite_bucket = f"substr({walk.sqlite_key_exprs[0]}, 1, {width})"
    else:
        return None
    qt = f"{quote_ident(schema)}.{name}"
    xid = "(%s::bigint %% 4294967296)::text::xid"
    written = [
        tuple(map(str, k))
        for k in pg.execute(
            f"SELECT {key_sql} FROM {qt} WHERE age(xmin) <= age({xid})", (horizon,)
        ).fetchall()
    ]
    row = pg.execute(f"SELECT count(*) FROM {qt}").fetchone()
    assert row is not None
    total = int(row[0])
    had = lite.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    if len(written) > max(1000, had // 10):  # most rows rewritten: digests find less
        return None
    known: set[tuple[str, ...]] = set()  # written keys the snapshot holds
    if ident is not None:
        for ids in batches([int(k[0]) for k in written], 5000):
            cur = lite.execute(
                f"SELECT rowid FROM {name} WHERE rowid IN ({','.join(map(str, ids))})"
            )
            known.update((str(r[0]),) for r in cur)
    else:
        assert walk is not None
        keyed, per = catch_up_where_sql(walk)
        for part in batches(written, per):
            cur = lite.execute(
                f"SELECT {walk.sqlite_keys} FROM {name}{keyed(len(part))}",
                walk.sqlite_params(part),
            )
            known.update(tuple(map(str, r)) for r in cur)
    gone: list[tuple[str, ...]] = []
    if had - (total - len(written)) != len(known):  # rows vanished
        new = Counter(
            int(k[0]) >> 10 if ident is not None else k[0][:width]
            for k in written
            if k not in known
        )
        found = _vanished(lite, pg, qt, name, (lite_key, key_sql), (lite_bucket, pg_bucket), new)
        if found is None or len(found) != had - (total - len(written)) - len(known):
            return None
        gone = found
    keys = sorted(set(written) | set(gone))
    if not keys:
        return None, total
    if ident is not None:
        return Changed(t, rowids=sorted(int(k[0]) for k in keys)), total
    return Changed(t, keys=keys), total


def _vanished(
    lite: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    qt: str,
    name: str,
    keys: tuple[str, str],
    buckets: tuple[str, str],
    new: Counter[Any],
) -> list[tuple[str, ...]] | None:
    """The snapshot's keys PostgreSQL no longer has. Per bucket, the snapshot's rows
    less PostgreSQL's plus the keys PostgreSQL added (`new`) is how many vanished;
    only buckets where some did are listed on both sides. None when too many
    buckets would be to be worth it."""
    (lite_key, pg_key), (lite_bucket, pg_bucket) = keys, buckets
    have = dict(lite.execute(f"SELECT {lite_bucket}, count(*) FROM {name} GROUP BY 1"))
    now = {b: int(n) for b, n in pg.execute(f"SELECT {pg_bucket}, count(*) FROM {qt} GROUP BY 1")}
    differ = [b for b in have if have[b] - now.get(b, 0) + new.get(b, 0) > 0]
    if len(differ) > 64:
        return None
    out: list[tuple[str, ...]] = []
    for b in differ:
        src = {
            tuple(map(str, r))
            for r in lite.execute(f"SELECT {lite_key} FROM {name} WHERE {lite_bucket} = ?", (b,))
        }
        dst = {
            tuple(map(str, r))
            for r in pg.execute(f"SELECT {pg_key} FROM {qt} WHERE {pg_bucket} = %s", (b,))
        }
        out += sorted(src - dst)
    return out


def _unknown_to_the_source(pg: psycopg.Connection[Any], plan: Plan, schema: str) -> tuple[str, ...]:
    """ "table.column" and "table" names in `schema` that the plan does not know."""
    known = {t.name: {c.name for c in t.columns} for t in plan.tables}
    out: list[str] = []
    rows = pg.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE'"
        " ORDER BY c.table_name, c.ordinal_position",
        (schema,),
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    for table, columns in tables.items():
        if table not in known:
            out.append(table)
            continue
        out += [f"{table}.{c}" for c in columns if c not in known[table]]
    return tuple(out)


def _rewrite(
    conn: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    plan: Plan,
    schema: str,
    changed: Sequence[Changed],
    counts: dict[str, int],
) -> None:
    migrated = {tr.name for tr in plan.triggers}
    triggers = [
        (name, sql)
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        if name in migrated
    ]
    for name, _sql in triggers:
        conn.execute(f"DROP TRIGGER {quote_ident(name)}")
    for c in changed:
        counts[c.table.name] = _rewrite_table(conn, pg, schema, c)
    for _name, sql in triggers:
        conn.execute(sql)


@dataclass(frozen=True)
class _Rows:
    """The changed rows of a table as each side selects them: SQLite by WHERE clauses
    (several for many keys: SQLite takes 32766 parameters a statement), PostgreSQL by
    one WHERE; none (the whole table) for a table without a usable key."""

    sqlite: list[tuple[str, Sequence[Any]]]
    pg_where: str
    pg_params: Any


def _rows(c: Changed) -> _Rows:
    t = c.table
    if c.rowids is not None:
        ident = next(col for col in t.columns if col.identity)
        ids = [int(i) for i in c.rowids]
        json_ids = "[" + ",".join(map(str, ids)) + "]"
        return _Rows(
            [(f" WHERE rowid IN (SELECT value FROM json_each('{json_ids}'))", ())],
            f" WHERE {quote_ident(ident.name)} = ANY(%s)",
            (ids,),
        )
    if c.keys is not None:
        walk = key_walk(t)
        assert walk is not None
        keyed, per = catch_up_where_sql(walk)
        keys = list(c.keys)
        return _Rows(
            [(keyed(len(part)), walk.sqlite_params(part)) for part in batches(keys, per)],
            keyed_where_pg(walk),
            walk.pg_params(keys),
        )
    return _Rows([("", ())], "", None)


def _pg_sql(sql: str, rows: _Rows) -> tuple[str, Any]:
    """`sql` over the changed rows only; a '%' in a quoted name is no placeholder then."""
    if rows.pg_params is None:
        return sql, None
    return sql.replace("%", "%%") + rows.pg_where, rows.pg_params


def _rewrite_table(
    conn: sqlite3.Connection, pg: psycopg.Connection[Any], schema: str, c: Changed
) -> int:
    """Rows deleted or rewritten by key, or rows written into a table rewritten whole."""
    t = c.table
    rows = _rows(c)
    for where, params in rows.sqlite:
        conn.execute(f"DELETE FROM {quote_ident(t.name)}{where}", params)
    written = 0
    with pg.cursor(name="shipyard_back") as cur:
        cur.itersize = 5000
        cur.execute(*_pg_sql(back_select_sql(t, schema), rows))
        insert = back_insert_sql(t)
        while batch := cur.fetchmany(5000):
            conn.executemany(insert, batch)
            written += len(batch)
    if c.rowids is not None:
        return len(c.rowids)
    return len(c.keys) if c.keys is not None else written


def _check(
    conn: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    schema: str,
    changed: Sequence[Changed],
    pg_rows: dict[str, int],
) -> None:
    """Before COMMIT: the rewritten rows hash alike on both sides, and every rewritten
    table has PostgreSQL's row count (the rows not rewritten were equal already)."""
    for c in changed:
        t = c.table
        rows = conn.execute(f"SELECT count(*) FROM {quote_ident(t.name)}").fetchone()[0]
        selected = _rows(c)
        got = _sqlite_checksum(conn, t, selected)
        want = pg.execute(*_pg_sql(pg_checksum_sql(t, schema), selected)).fetchone()
        assert want is not None
        if rows != pg_rows[t.name] or got != (int(want[0]), int(want[1])):
            raise MigrationError(
                f"after the write-back, {t.name!r} still differs from PostgreSQL"
                f" ({rows} rows against {pg_rows[t.name]})",
                hint=UNCHANGED,
            )


def _sqlite_checksum(conn: sqlite3.Connection, t: PlanTable, rows: _Rows) -> tuple[int, int]:
    """(rows, sum of row hashes) of the changed rows, as the validation computes them."""
    select, row_hash = source_row_hasher(t)
    total = count = 0
    for where, params in rows.sqlite:
        cur = conn.execute(f"SELECT {select} FROM {quote_ident(t.name)}{where}", params)
        while batch := cur.fetchmany(5000):
            total += sum(starmap(row_hash, batch))
            count += len(batch)
    return count, total


def _sequence_updates(
    conn: sqlite3.Connection, last_ids: dict[str, int | None]
) -> list[tuple[str, tuple[Any, ...]]]:
    """The sqlite_sequence statements that move AUTOINCREMENT past PostgreSQL's last ids."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        return []
    out: list[tuple[str, tuple[Any, ...]]] = []
    for name, last in last_ids.items():
        if last is None:
            continue
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).fetchone()
        if row is not None:
            if row[0] < last:
                out.append(("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (last, name)))
            continue
        ddl = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        if ddl and "AUTOINCREMENT" in ddl[0].upper():
            out.append(("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, last)))
    return out
