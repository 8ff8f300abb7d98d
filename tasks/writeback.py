"""Write-back: the rows PostgreSQL took after a cutover, put into the SQLite source.

A cutover release thaws writes before its load test; should the test fail, the
old version goes back on its SQLite file, and this puts PostgreSQL's changes
there first, while writes are frozen again. Everything happens in one SQLite
transaction that is checked before it commits: each rewritten table's checksum
must equal PostgreSQL's, over the same canonical form the migration validated
with. Otherwise the file stays as it was and the caller keeps the new version.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import starmap
from pathlib import Path
from typing import Any

import psycopg

from tasks.core.errors import MigrationError
from tasks.core.migration import (
    Plan,
    PlanTable,
    catch_up_where_sql,
    key_walk,
    keyed_where_pg,
    source_row_hasher,
)
from tasks.core.sqlmap import quote_ident
from tasks.core.writeback import (
    HeldText,
    back_insert_sql,
    back_select_sql,
    batches,
    held_probe_sql,
    held_text,
    sequence_sql,
    written_columns,
)
from tasks.migrate import (
    _differing_keys,
    _pg_error,
    _walk_keys,
    open_readonly,
    pg_checksum,
    pg_connect,
)

UNCHANGED = "the SQLite file is unchanged; the new version keeps serving on PostgreSQL"


@dataclass(frozen=True)
class WriteBack:
    """What a write-back changed in the source."""

    rows: dict[str, int]  # rows deleted or rewritten by key, or written into a whole table
    whole: tuple[str, ...]  # tables rewritten whole (no key to find rows by)
    seconds: float


@dataclass(frozen=True)
class _Rows:
    """The rows of one table to rewrite: by rowid, by walked key, or all of them."""

    table: PlanTable
    rowids: Sequence[int] | None = None
    keys: Sequence[tuple[str, ...]] | None = None

    @property
    def count(self) -> int:
        return len(self.rowids if self.rowids is not None else self.keys or ())


def _checksum(conn: sqlite3.Connection, t: PlanTable) -> tuple[int, int]:
    """(rows, sum of row hashes) as the migration's validation computes them."""
    select, row_hash = source_row_hasher(t)
    total = count = 0
    rows = conn.execute(f"SELECT {select} FROM {quote_ident(t.name)}")
    while batch := rows.fetchmany(5000):
        total += sum(starmap(row_hash, batch))
        count += len(batch)
    return count, total


def _written(t: PlanTable) -> PlanTable:
    """The table without its generated columns: SQLite computes them, whatever
    PostgreSQL (where they are plain columns) holds."""
    return t.model_copy(update={"columns": tuple(written_columns(t))})


def differing_tables(
    path: Path, dsn: str, password: str, plan: Plan, schema: str
) -> dict[str, tuple[int, int]]:
    """Tables whose content differs, with PostgreSQL's checksum of each (computed
    in a thread while Python hashes the source's rows)."""
    tables = [_written(t) for t in plan.tables]
    with ThreadPoolExecutor(2) as ex:
        pg = {t.name: ex.submit(pg_checksum, dsn, password, t, schema) for t in tables}
        conn = open_readonly(path)
        try:
            src = {t.name: _checksum(conn, t) for t in tables}
        finally:
            conn.close()
        return {n: f.result() for n, f in pg.items() if f.result() != src[n]}


def _rows_to_write(path: Path, dsn: str, password: str, t: PlanTable, schema: str) -> _Rows:
    if any(c.identity for c in t.columns):
        ids = _differing_keys(path, dsn, password, t, schema, limit=None)
        return _Rows(t, rowids=[int(i) for i in ids])
    walk = key_walk(t)
    if walk is not None and walk.by_value:
        return _Rows(t, keys=_walk_keys(path, dsn, password, t, schema, None))
    return _Rows(t)


def _held(conn: sqlite3.Connection, t: PlanTable) -> dict[str, HeldText]:
    probe = held_probe_sql(t)
    if probe is None:
        return {}
    sql, cols = probe
    row = conn.execute(sql).fetchone()
    return {c: held_text(*row[3 * i : 3 * i + 3]) for i, c in enumerate(cols)}


def write_back(
    path: Path,
    dsn: str,
    password: str,
    plan: Plan,
    schema: str,
    busy_timeout_s: float = 10.0,
) -> WriteBack:
    """Make the source hold what PostgreSQL holds, table by table, in one checked transaction.

    Only rows that differ are rewritten (by rowid, or by primary key walked on
    both sides); a table without a usable key is rewritten whole. The migrated
    triggers are dropped and recreated inside the transaction: PostgreSQL ran
    them already, and their effects are among the rows written back. Triggers
    that were not migrated (FTS indexes, say) fire as they would for the application.
    An AUTOINCREMENT table's sqlite_sequence moves past every id PostgreSQL
    handed out, deleted rows' included, so the old version never reuses one.
    """
    started = time.perf_counter()
    counts: dict[str, int] = {}
    try:
        differing = differing_tables(path, dsn, password, plan, schema)
        todo = [
            _rows_to_write(path, dsn, password, _written(plan.table(n)), schema) for n in differing
        ]
        with pg_connect(dsn, password) as pg:
            last_ids = {
                t.name: pg.execute(sql).fetchone()[0]  # type: ignore[index]
                for t in plan.tables
                if (sql := sequence_sql(t, schema)) is not None
            }
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
            try:  # closed before COMMIT, the transaction rolls back: the file stays as it was
                conn.execute("BEGIN IMMEDIATE")
                sequences = _sequence_updates(conn, last_ids)
                if todo or sequences:
                    _rewrite(conn, pg, plan, schema, todo, differing, counts)
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
        whole=tuple(r.table.name for r in todo if r.rowids is None and r.keys is None),
        seconds=round(time.perf_counter() - started, 3),
    )


def _rewrite(
    conn: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    plan: Plan,
    schema: str,
    todo: list[_Rows],
    expected: dict[str, tuple[int, int]],
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
    for rows in todo:
        counts[rows.table.name] = _rewrite_table(conn, pg, schema, rows)
    for _name, sql in triggers:
        conn.execute(sql)
    for rows in todo:
        got = _checksum(conn, rows.table)
        if got != expected[rows.table.name]:
            raise MigrationError(
                f"after the write-back, {rows.table.name!r} still differs from PostgreSQL"
                f" ({got[0]} rows against {expected[rows.table.name][0]})",
                hint=UNCHANGED,
            )


def _rewrite_table(
    conn: sqlite3.Connection, pg: psycopg.Connection[Any], schema: str, rows: _Rows
) -> int:
    """Rows deleted or rewritten by key, or rows written into a table rewritten whole."""
    t = rows.table
    qt = quote_ident(t.name)
    insert = back_insert_sql(t)
    held = _held(conn, t)
    selects: list[tuple[str, Any]] = []
    if rows.rowids is not None:
        ident = next(c for c in t.columns if c.identity)
        for part in batches(rows.rowids):
            conn.execute(f"DELETE FROM {qt} WHERE rowid IN ({', '.join('?' * len(part))})", part)
        where = f" WHERE {quote_ident(ident.name)} = ANY(%s)"
        selects = [(_escaped(back_select_sql(t, schema, held)) + where, (list(rows.rowids),))]
    elif rows.keys is not None:
        walk = key_walk(t)
        assert walk is not None
        keyed, per = catch_up_where_sql(walk)
        for part in batches(rows.keys, per):
            conn.execute(f"DELETE FROM {qt}{keyed(len(part))}", walk.sqlite_params(part))  # type: ignore[arg-type]
        where = keyed_where_pg(walk)
        selects = [(_escaped(back_select_sql(t, schema, held)) + where, walk.pg_params(rows.keys))]
    else:
        conn.execute(f"DELETE FROM {qt}")
        selects = [(back_select_sql(t, schema, held), None)]
    written = 0
    for sql, params in selects:
        with pg.cursor(name="shipyard_back") as cur:
            cur.itersize = 5000
            cur.execute(sql, params)
            while batch := cur.fetchmany(5000):
                conn.executemany(insert, batch)
                written += len(batch)
    return rows.count if rows.rowids is not None or rows.keys is not None else written


def _escaped(sql: str) -> str:
    """SQL that will be sent with parameters: a '%' in a quoted name is no placeholder."""
    return sql.replace("%", "%%")


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
