"""SQLite → PostgreSQL: snapshot, introspect, scan, load into staging, validate, swap.

The target only ever changes in `swap`, one transaction that moves the
validated staging tables into place; everything before it writes into the
`shipyard_stage` schema, which a re-run drops first. So a failure or a kill at
any moment leaves the target as it was, and re-running just works.

The source is only ever opened read-only, once, to take a snapshot with
SQLite's backup API (one consistent read transaction); all reading after that
is from the snapshot, by as many connections as there are cores.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_EXCEPTION,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import starmap
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

from tasks.core.errors import MigrationError
from tasks.core.migration import (
    CANON_FUNCTIONS,
    KeyWalk,
    MigrationOptions,
    Plan,
    PlanTable,
    PlanView,
    Refusal,
    SourceColumn,
    SourceFK,
    SourceIndex,
    SourceSchema,
    SourceTable,
    SourceTrigger,
    SourceView,
    SourceVirtual,
    bucket_digest_sql,
    bucket_range_sqlite,
    bucket_total,
    bucket_width,
    bucketed,
    build_plan,
    catch_up_delete_sql,
    catch_up_where_sql,
    chunked,
    constraint_sql,
    copy_block_select,
    copy_into,
    copy_select,
    create_table_sql,
    fk_sql,
    index_sql,
    key_walk,
    loose_value,
    ordered,
    pg_bucket_from,
    pg_checksum_sql,
    pg_digest_sql,
    pg_row_hashes_sql,
    prefix_upper,
    restart_sql,
    rowid_bucket_range,
    rowid_bucket_sql,
    source_digest_sql,
    source_row_hasher,
    stream_digested,
)
from tasks.core.redact import redact
from tasks.core.sqlddl import json_checked
from tasks.core.sqlmap import ColumnStats, quote_ident
from tasks.core.triggers import PlanTrigger, trigger_sql
from tasks.pagediff import changed_rows
from tasks.sqlite_scan import Raw, merge_raw, open_readonly, scan_table_raw, stats_of

STAGE = "shipyard_stage"
PREVIOUS = "shipyard_previous"
CHUNK_ROWS = 200_000
SUB_ROWS = 25_000  # rowids per COPY block: progress granularity, ~1 MB each
_LOCK_KEY = 0x5368_6970  # advisory lock: one migration per database at a time

_F = ConfigDict(frozen=True)


class TableReport(BaseModel):
    model_config = _F
    name: str
    rows_source: int
    rows_target: int
    checksum_source: str  # md5 of the ordered chunk or bucket digests, or the per-row hash sum
    checksum_target: str
    ok: bool
    differing_keys: tuple[int | str, ...] = ()
    differing_ranges: tuple[tuple[int, int], ...] = ()  # rowid ranges whose digests differ


class ViewReport(BaseModel):
    model_config = _F
    name: str
    rows_source: int
    rows_target: int
    ok: bool


class Validation(BaseModel):
    model_config = _F
    tables: tuple[TableReport, ...]
    views: tuple[ViewReport, ...]
    fk_not_valid: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(t.ok for t in self.tables) and all(v.ok for v in self.views)


# ---------------------------------------------------------------- SQLite processes


@contextmanager
def sqlite_processes(n: int) -> Iterator[Executor]:
    """Processes that read the snapshot: scan, render the COPY blocks, digest, query views.

    Not threads: SQLite serialises its allocator across the threads of one
    process, so two threads rendering text ran slower than one (the bench's
    digests: 5.1 s on two threads, 2.9 s on one, 1.85 s on two processes). The
    fork server starts clean (no Prefect threads to inherit) and preloads only
    this module.
    """
    pool = _Workers(n)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Workers(Executor):
    """The process pool, whose fork server starts loading this module at once (while
    the caller takes the snapshot) and whose processes start at the first submit."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        forkserver.ensure_running()  # returns at once; the server imports meanwhile
        self._pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
        self._n = n
        self._lock = threading.Lock()
        self._started = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if not self._started:
                self._start_all()
                self._started = True
        return self._pool.submit(fn, *args, **kwargs)

    def _start_all(self) -> None:
        """Every process, started now, while __main__ is hidden. The executor starts
        a process per submit only while none is idle: a warm-up job that returned
        at once could leave one unstarted, and a later submit then started it with
        __main__ (seen once, with a second pool starting alongside: a worker re-ran
        its parent's script and the migration failed). Each warm-up
        job waits until all have arrived, so none is idle before the last starts."""
        rendezvous = tempfile.mkdtemp(prefix="shipyard-workers-")
        try:
            with _main_not_inherited():
                started = [self._pool.submit(_arrive, rendezvous, self._n) for _ in range(self._n)]
            _gather(started)
        finally:
            shutil.rmtree(rendezvous, ignore_errors=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _arrive(rendezvous: str, n: int, timeout_s: float = 30.0) -> int:
    """Sign in at the rendezvous and wait (bounded) until `n` processes have."""
    Path(rendezvous, str(os.getpid())).touch()
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(rendezvous)) < n and time.monotonic() < deadline:
        time.sleep(0.002)
    return os.getpid()


@contextmanager
def _main_not_inherited() -> Iterator[None]:
    """Workers would otherwise import the parent's __main__ (the CLI, or Prefect's
    engine under a worker): 2.6 s of imports each. They need only this module,
    which the fork server has preloaded."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _gather(futures: Sequence[Future[Any]], tick: Callable[[], None] | None = None) -> list[Any]:
    """Results in order; the first failure cancels what has not started and is raised.
    `tick` runs on this thread twice a second meanwhile (progress reports need it)."""
    while True:
        done, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
        if tick is not None:
            tick()
        failed = [f for f in done if f.exception() is not None]
        if failed or not pending:
            break
    if failed:
        for f in futures:
            f.cancel()
        exc = failed[0].exception()
        if isinstance(exc, BrokenProcessPool):
            raise MigrationError(
                "a migration process died (killed, or out of memory)",
                hint="the target is unchanged; check the host's memory and re-run",
            ) from exc
        raise exc  # type: ignore[misc]
    return [f.result() for f in futures]


# ---------------------------------------------------------------- source side


def snapshot(source: Path, workdir: Path, busy_timeout_s: float = 5.0) -> Path:
    """Copy the source, read-only and in one read transaction, to a private file."""
    src = open_readonly(source)
    dest = workdir / "snapshot.db"
    dest.unlink(missing_ok=True)
    try:
        src.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        with sqlite3.connect(dest) as dst:
            # A scratch copy: a crash means a new snapshot, so no fsync (0.30 s → 0.12 s for 88 MB).
            dst.execute("PRAGMA synchronous = OFF")
            src.backup(dst)
        dst.close()
    except sqlite3.OperationalError as exc:
        raise MigrationError(
            f"could not read a consistent snapshot of {source}: {exc}",
            hint="another process holds a write lock on the database; retry when it is released",
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise MigrationError(
            f"{source} is corrupt: {exc}", hint="run PRAGMA integrity_check"
        ) from exc
    finally:
        src.close()
    return dest


def introspect(conn: sqlite3.Connection) -> SourceSchema:
    """Everything PRAGMAs and sqlite_master say about the schema."""
    objects = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    seq: dict[str, int] = {}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        seq = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    tables = []
    virtual = [
        SourceVirtual(name=name, module=_module(sql))
        for kind, name, _tbl, sql in objects
        if kind == "table" and sql.upper().startswith("CREATE VIRTUAL")
    ]
    shadow = _shadow_tables(conn, [v.name for v in virtual])
    for kind, name, _tbl, sql in objects:
        if kind != "table" or name in shadow or sql.upper().startswith("CREATE VIRTUAL"):
            continue
        qn = quote_ident(name)
        cols = tuple(
            SourceColumn(
                name=r[1],
                declared=r[2] or "",
                notnull=bool(r[3]),
                default=r[4],
                pk=r[5],
                hidden=r[6],
            )
            for r in conn.execute(f"PRAGMA table_xinfo({qn})")
        )
        indexes = []
        for _seq, iname, unique, origin, is_partial in conn.execute(f"PRAGMA index_list({qn})"):
            icols = tuple(
                r[2] for r in conn.execute(f"PRAGMA index_xinfo({quote_ident(iname)})") if r[5]
            )
            isql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (iname,)).fetchone()
            indexes.append(
                SourceIndex(
                    name=iname,
                    unique=bool(unique),
                    origin=origin,
                    partial=bool(is_partial),
                    sql=isql[0] if isql else None,
                    columns=icols,
                )
            )
        fk_rows: dict[int, list[Any]] = {}
        for r in conn.execute(f"PRAGMA foreign_key_list({qn})"):
            fk_rows.setdefault(r[0], []).append(r)
        fks = tuple(
            SourceFK(
                id=i,
                ref_table=rs[0][2],
                from_cols=tuple(r[3] for r in rs),
                to_cols=tuple(r[4] for r in rs),
                on_update=rs[0][5],
                on_delete=rs[0][6],
            )
            for i, rs in sorted(fk_rows.items())
        )
        without_rowid = "WITHOUT ROWID" in " ".join(sql.upper().split()[-3:]) or (
            sql.upper().rstrip().rstrip(";").endswith("WITHOUT ROWID")
        )
        pk = [c for c in cols if c.pk]
        max_key = None
        if not without_rowid and len(pk) == 1 and pk[0].declared.upper() == "INTEGER":
            max_key = conn.execute(f"SELECT max(rowid) FROM {qn}").fetchone()[0]
        tables.append(
            SourceTable(
                name=name,
                sql=sql,
                columns=cols,
                indexes=tuple(indexes),
                fks=fks,
                without_rowid=without_rowid,
                autoincrement=name in seq or "AUTOINCREMENT" in sql.upper(),
                rows=conn.execute(f"SELECT count(*) FROM {qn}").fetchone()[0],
                sequence=seq.get(name),
                max_key=max_key,
            )
        )
    views = tuple(SourceView(name=n, sql=s) for k, n, _t, s in objects if k == "view")
    triggers = tuple(
        SourceTrigger(name=n, table=t, sql=s) for k, n, t, s in objects if k == "trigger"
    )
    return SourceSchema(
        tables=tuple(tables), views=views, triggers=triggers, virtual=tuple(virtual)
    )


def _module(sql: str) -> str:
    found = re.search(r"\bUSING\s+(\w+)", sql, re.IGNORECASE)
    return found.group(1).lower() if found else "unknown"


_SHADOW_SUFFIXES = (
    "_data",
    "_idx",
    "_content",
    "_docsize",
    "_config",
    "_segments",
    "_segdir",
    "_stat",
    "_node",
    "_parent",
    "_rowid",
)


def _shadow_tables(conn: sqlite3.Connection, virtual: list[str]) -> set[str]:
    """The tables a virtual table keeps its storage in: PRAGMA table_list names them
    (SQLite 3.37+); before that, the suffixes FTS3/4/5 and R*Tree use."""
    if not virtual:
        return set()
    listed = conn.execute("PRAGMA table_list").fetchall()  # an unknown PRAGMA lists nothing
    if listed:
        return {r[1] for r in listed if r[2] == "shadow"}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {n for n in names for v in virtual for x in _SHADOW_SUFFIXES if n == v + x}


def _scan_part(path: Path, t: SourceTable, where: str) -> list[Raw]:
    c = open_readonly(path)
    try:
        pk = [x for x in t.columns if x.pk]  # the rowid alias rule introspect() applies
        alias = (
            pk[0].name
            if not t.without_rowid and len(pk) == 1 and pk[0].declared.upper() == "INTEGER"
            else None
        )
        return scan_table_raw(
            c,
            t.name,
            [x.name for x in t.columns],
            [x.declared for x in t.columns],
            where,
            notnull=[x.notnull for x in t.columns],
            rowid_alias=alias,
            json=json_checked(t.sql),
        )
    finally:
        c.close()


def _orphans(path: Path, t: SourceTable) -> list[Refusal]:
    """FK orphans SQLite never enforced: one anti-join per key (fast, an index or a
    rowid lookup per row), and PRAGMA foreign_key_check's row-by-row report only
    for a table that has some (measured 0.05 s against 1.35 s for 0.9 M rows)."""
    c = open_readonly(path)
    try:
        if not any(c.execute(_orphan_sql(t, fk)).fetchone()[0] for fk in t.fks):
            return []
        found: dict[int, list[int]] = {}
        for r in c.execute(f"PRAGMA foreign_key_check({quote_ident(t.name)})"):
            found.setdefault(r[3], []).append(r[1])
    finally:
        c.close()
    return [
        Refusal(
            table=t.name,
            column=None,
            code=f"fk-orphans-{fk_id}",
            count=len(ids),
            rowids=tuple(x for x in ids[:5] if x is not None),
        )
        for fk_id, ids in sorted(found.items())
    ]


def _orphan_sql(t: SourceTable, fk: SourceFK) -> str:
    """1 when some row of `t` has no parent for `fk` (NULL keys need none)."""
    child = quote_ident(t.name)
    parent = quote_ident(fk.ref_table)
    if len(fk.from_cols) == 1 and fk.to_cols[0] is not None:
        col, pcol = quote_ident(fk.from_cols[0]), quote_ident(fk.to_cols[0])
        return (
            f"SELECT EXISTS (SELECT 1 FROM {child} WHERE {col} IS NOT NULL AND {col} NOT IN"
            f" (SELECT {pcol} FROM {parent} WHERE {pcol} IS NOT NULL))"
        )
    return "SELECT 1"  # composite or implicit parent key: let the pragma decide


def scan(
    path: Path, schema: SourceSchema, pool: Executor
) -> tuple[dict[tuple[str, str], ColumnStats], tuple[Refusal, ...]]:
    """Storage classes and refused data for every column, tables and rowid ranges on
    all processes, then samples of offending rowids."""
    conn = open_readonly(path)
    try:
        parts = [
            (t, _where(rng))
            for t in sorted(schema.tables, key=lambda t: -t.rows)
            for rng in rowid_ranges(conn, t.name, t.rows, not t.without_rowid)
        ]
    finally:
        conn.close()
    raw_futures = [pool.submit(_scan_part, path, t, w) for t, w in parts]
    orphan_futures = [pool.submit(_orphans, path, t) for t in schema.tables if t.fks]
    merged: dict[str, list[Raw]] = {}
    for (t, _w), raws in zip(parts, _gather(raw_futures), strict=True):
        prev = merged.get(t.name)
        merged[t.name] = (
            raws if prev is None else [merge_raw(a, b) for a, b in zip(prev, raws, strict=True)]
        )
    refusals: list[Refusal] = [r for found in _gather(orphan_futures) for r in found]
    stats = {
        (t.name, c.name): stats_of(raw)
        for t in schema.tables
        for c, raw in zip(t.columns, merged.get(t.name, []), strict=True)
    }
    conn = open_readonly(path)
    try:
        for t in schema.tables:
            refusals += _refused_rows(conn, t, stats)
    finally:
        conn.close()
    return stats, tuple(refusals)


def _refused_rows(
    conn: sqlite3.Connection, t: SourceTable, stats: dict[tuple[str, str], ColumnStats]
) -> list[Refusal]:
    """Samples of the rows behind each refusal; only queried where the scan counted some."""
    qt = quote_ident(t.name)
    rowid = "rowid" if not t.without_rowid else "NULL"

    def sample(cond: str) -> tuple[int, ...]:
        rows = conn.execute(f"SELECT {rowid} FROM {qt} WHERE {cond} LIMIT 5").fetchall()
        return tuple(r[0] for r in rows if r[0] is not None)

    out = []
    for c in t.columns:
        st = stats[(t.name, c.name)]
        qc = quote_ident(c.name)
        if st.text_with_nul:
            out.append(
                Refusal(
                    table=t.name,
                    column=c.name,
                    code="nul-in-text",
                    count=st.text_with_nul,
                    rowids=sample(
                        f"typeof({qc}) = 'text' AND instr(CAST({qc} AS BLOB), x'00') > 0"
                    ),
                )
            )
        classes = [k for k in ("integer", "real", "text", "blob") if getattr(st, k)]
        if len(classes) > 1:
            minority = min(classes, key=lambda k: getattr(st, k))
            out.append(
                Refusal(
                    table=t.name,
                    column=c.name,
                    code="mixed-storage",
                    count=getattr(st, minority),
                    rowids=sample(f"typeof({qc}) = '{minority}'"),
                )
            )
            if set(classes) == {"integer", "real"}:
                out.append(
                    Refusal(
                        table=t.name,
                        column=c.name,
                        code="int-overflow",
                        count=st.real,
                        rowids=sample(f"typeof({qc}) = 'real'"),
                    )
                )
    return out


def _quick_check(path: Path) -> list[str]:
    c = open_readonly(path)
    try:
        return [r[0] for r in c.execute("PRAGMA quick_check(5)")]
    finally:
        c.close()


def make_plan(path: Path, options: MigrationOptions, pool: Executor) -> Plan:
    """Introspect and scan the snapshot, and check its structure meanwhile: a smashed
    page can decode as plausible values, and only the check tells (0.35 s per 100 MB)."""
    conn = open_readonly(path)
    try:
        check = pool.submit(_quick_check, path)
        schema = introspect(conn)
        if not schema.tables:
            raise MigrationError(f"{path.name} has no tables to migrate", hint="check the path")
        stats, refusals = scan(path, schema, pool)
        problems = check.result()
        if problems != ["ok"]:
            raise MigrationError(
                "the source is corrupt: " + "; ".join(problems)[:500],
                hint="run PRAGMA integrity_check on it; restore it from a backup",
            )
    except sqlite3.DatabaseError as exc:
        raise MigrationError(
            f"the source is corrupt: {exc}", hint="run PRAGMA integrity_check on it"
        ) from exc
    finally:
        conn.close()
    return build_plan(schema, stats, refusals, options)


# ---------------------------------------------------------------- target side


@dataclass
class Progress:
    """Rows copied so far, shared by the copy threads and whoever reports progress."""

    total: int
    done: int = 0
    per_table: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, table: str, n: int) -> None:
        with self.lock:
            self.done += n
            self.per_table[table] = self.per_table.get(table, 0) + n


def _pg_error(
    exc: Exception,
    dsn_secret: str,
    what: str,
    hint: str = "the target is unchanged; fix the cause and re-run",
) -> MigrationError:
    msg = redact(str(exc).strip(), [dsn_secret])
    return MigrationError(f"{what}: {msg}", hint=hint)


@contextmanager
def pg_connect(dsn: str, password: str, **kw: Any) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, **kw)
    except psycopg.Error as exc:
        raise _pg_error(exc, password, "cannot connect to PostgreSQL") from exc
    try:
        yield conn
    finally:
        conn.close()


def rowid_ranges(
    conn: sqlite3.Connection, table: str, rows: int, has_rowid: bool
) -> list[tuple[int, int] | None]:
    """Rowid ranges of about CHUNK_ROWS rows, so big tables are read on several cores."""
    if not has_rowid or rows == 0:
        return [None]
    lo, hi = _rowid_bounds(conn, table)
    if lo is None:
        return [None]
    step = -(-(hi - lo + 1) // -(-rows // CHUNK_ROWS))
    return [(a, min(a + step - 1, hi)) for a in range(lo, hi + 1, step)]


def _rowid_bounds(conn: sqlite3.Connection, table: str, where: str = "") -> tuple[Any, Any]:
    """min and max rowid as two lookups: SQLite answers `min(rowid), max(rowid)` in one
    SELECT by scanning every row (0.12 s for 0.9 M rows), each alone from the b-tree."""
    qt = quote_ident(table)
    row = conn.execute(
        f"SELECT (SELECT min(rowid) FROM {qt}{where}), (SELECT max(rowid) FROM {qt}{where})"
    ).fetchone()
    return row[0], row[1]


def _chunks(path: Path, t: PlanTable) -> list[tuple[int, int] | None]:
    conn = open_readonly(path)
    try:
        return rowid_ranges(conn, t.name, t.rows, t.has_rowid)
    finally:
        conn.close()


CopyJobs = list[tuple[PlanTable, tuple[int, int] | None, "Future[Digest]"]]


def start_copy(path: Path, dsn: str, password: str, plan: Plan, pool: Executor) -> CopyJobs:
    """Queue every table's rows for COPY into staging, biggest first, one job per rowid
    range (the digest parts, for tables whose COPY text is their digest)."""
    parts = digest_parts(path, plan)
    jobs: CopyJobs = []
    for t in sorted(plan.tables, key=lambda t: -t.rows):
        ranges = [r for tt, r in parts if tt is t] if chunked(t) else _chunks(path, t)
        jobs += [(t, r, pool.submit(copy_chunk, path, dsn, password, t, r)) for r in ranges]
    return jobs


def finish_copy(jobs: CopyJobs, progress: Progress, tick: Callable[[], None] | None = None) -> None:
    """Wait for the copy, counting rows as ranges finish; the first failure stops it."""
    counted: set[int] = set()

    def count() -> None:
        for i, (t, _r, f) in enumerate(jobs):
            if i not in counted and f.done() and f.exception() is None:
                progress.add(t.name, f.result().rows)
                counted.add(i)
        if tick is not None:
            tick()

    _gather([f for _t, _r, f in jobs], count)
    count()


def copy_all(path: Path, dsn: str, password: str, plan: Plan, pool: Executor) -> Progress:
    progress = Progress(total=plan.total_rows)
    finish_copy(start_copy(path, dsn, password, plan, pool), progress)
    return progress


def blocking_error(plan: Plan) -> MigrationError:
    """Errors nobody accepted stop the migration before any write, naming keys and rows."""
    return MigrationError(
        "the plan has blocking findings: "
        + "; ".join(
            f"{f.key}: {f.message}"
            + (f" (rowids {', '.join(map(str, f.rowids))})" if f.rowids else "")
            for f in plan.blocking
        ),
        hint="fix the source, set a per-column policy, or accept the finding by its key",
    )


def _where(rng: tuple[int, int] | None) -> str:
    return "" if rng is None else f" WHERE rowid BETWEEN {int(rng[0])} AND {int(rng[1])}"


def copy_chunk(
    path: Path,
    dsn: str,
    password: str,
    t: PlanTable,
    rng: tuple[int, int] | None,
) -> Digest:
    """Stream one rowid range: SQLite renders and joins the CSV lines of each sub-range
    in one step, PostgreSQL checks the UTF-8. Returns the rows and the md5 of exactly
    the bytes sent (the range's digest where the COPY text is canonical)."""
    src = open_readonly(path)
    src.text_factory = bytes
    rows = 0
    sent = hashlib.md5(usedforsecurity=False)
    try:
        with pg_connect(dsn, password) as pg, pg.cursor() as cur:
            with cur.copy(copy_into(t, STAGE)) as cp:
                if rng is None:
                    lines = src.execute(copy_select(t))
                    while batch := lines.fetchmany(5000):
                        block = b"\n".join([r[0] for r in batch]) + b"\n"
                        cp.write(block)
                        sent.update(block)
                        rows += len(batch)
                else:
                    for sub in _sub_ranges(src, t, rng):
                        n, text = src.execute(copy_block_select(t) + _where(sub)).fetchone()
                        if n:
                            cp.write(text + b"\n")
                            sent.update(text + b"\n")
                            rows += n
            pg.commit()
    except psycopg.Error as exc:
        if exc.sqlstate == "22021":  # invalid byte sequence for encoding "UTF8"
            raise _invalid_utf8(path, t, rng) from exc
        raise _pg_error(exc, password, f"loading {t.name!r} failed") from exc
    finally:
        src.close()
    return Digest(rows, sent.hexdigest())


def _sub_ranges(
    src: sqlite3.Connection, t: PlanTable, rng: tuple[int, int], step: int = SUB_ROWS
) -> list[tuple[int, int]]:
    """Blocks of `step` rowids over the ids actually present in `rng` (which may be
    open-ended)."""
    lo, hi = _rowid_bounds(src, t.name, _where(rng))
    if lo is None:
        return []
    return [(a, min(a + step - 1, hi)) for a in range(lo, hi + 1, step)]


def _invalid_utf8(path: Path, t: PlanTable, rng: tuple[int, int] | None) -> MigrationError:
    """Name the column and rows whose text is not valid UTF-8 (only searched on failure)."""
    src = open_readonly(path)
    src.text_factory = bytes
    found = []
    for c in t.columns:
        qc = quote_ident(c.name)
        bad = [
            rid
            for rid, raw in src.execute(
                f"SELECT rowid, CAST({qc} AS BLOB) FROM {quote_ident(t.name)}"
                f"{_where(rng) or ' WHERE 1'} AND typeof({qc}) = 'text'"
            )
            if not _utf8(raw)
        ]
        if bad:
            found.append(f"{t.name}.{c.name}: {len(bad)} row(s), rowids {bad[:5]}")
    src.close()
    return MigrationError(
        "text that is not valid UTF-8, which PostgreSQL refuses: " + "; ".join(found),
        hint="fix the rows in the source, or store the column as BLOB",
    )


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def source_checksum(
    path: Path, t: PlanTable, rng: tuple[int, int] | None = None
) -> tuple[int, int]:
    """(rows, sum of row hashes) of the source: SQLite renders, Python hashes in batches.

    Fetching rows is about five times faster than calling a Python function
    from inside SQLite once per row (measured 9.0 s against ~2 s for 0.9 M rows).
    """
    select, row_hash = source_row_hasher(t)
    conn = open_readonly(path)
    total = 0
    count = 0
    try:
        with _decoding(path, t, rng):
            rows = conn.execute(f"SELECT {select} FROM {quote_ident(t.name)}{_where(rng)}")
            while batch := rows.fetchmany(5000):
                total += sum(starmap(row_hash, batch))
                count += len(batch)
    finally:
        conn.close()
    return count, total


@contextmanager
def _decoding(path: Path, t: PlanTable, rng: tuple[int, int] | None) -> Iterator[None]:
    """Text SQLite cannot decode becomes the report naming its column and rowids."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "decode" in str(exc):
            raise _invalid_utf8(path, t, rng) from exc
        raise


@dataclass(frozen=True)
class Digest:
    """One part of a table on one side: its rows and the digest of their canonical lines."""

    rows: int
    value: str
    # a bucketed table's "rows:md5" per key-prefix bucket (`bucket_total` is `value`)
    buckets: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of_buckets(cls, buckets: Mapping[str, str]) -> Digest:
        rows = sum(int(v.split(":", 1)[0]) for v in buckets.values())
        return cls(rows, bucket_total(buckets), dict(buckets))


Part = tuple[str, tuple[int, int] | None]  # (table, rowid range or the whole table)
_LOWEST, _HIGHEST = -(2**63), 2**63 - 1


def digest_parts(path: Path, plan: Plan) -> list[tuple[PlanTable, tuple[int, int] | None]]:
    """The parts both sides digest: rowid ranges of tables keyed by their rowid, biggest
    first. The outer ranges are open-ended, so a row outside the source's ids still counts."""
    out: list[tuple[PlanTable, tuple[int, int] | None]] = []
    for t in sorted(plan.tables, key=lambda t: -t.rows):
        ranges = _chunks(path, t) if chunked(t) else [None]
        if ranges[0] is not None:
            ranges = [(_LOWEST, r[1]) if i == 0 else r for i, r in enumerate(ranges)]  # type: ignore[index]
            last = ranges[-1]
            assert last is not None
            ranges[-1] = (last[0], _HIGHEST)
        out += [(t, r) for r in ranges]
    return out


def _key_order_reader(path: Path) -> sqlite3.Connection:
    """A reader for rows in primary-key order: through an index they come from pages
    at random, and a 128 MB map spares a read() per page (a uuid-keyed table of 1 M
    rows: 3.8 s against 2.6 s)."""
    conn = open_readonly(path)
    conn.execute(f"PRAGMA mmap_size = {128 << 20}")
    return conn


def _canon_reader(path: Path) -> sqlite3.Connection:
    conn = _key_order_reader(path)
    for name, fn in CANON_FUNCTIONS.items():
        conn.create_function(name, 1, fn, deterministic=True)
    return conn


def source_digest(path: Path, t: PlanTable, rng: tuple[int, int] | None) -> Digest:
    """SQLite renders and joins the part's canonical lines in one step; Python hashes once."""
    if not ordered(t):
        n, total = source_checksum(path, t)
        return Digest(n, str(total))
    walk = bucketed(t)
    if walk is not None:
        with _decoding(path, t, rng):
            return Digest.of_buckets(_source_buckets(path, t, walk))
    if stream_digested(t):  # the COPY text, as the copy would send it
        conn = open_readonly(path)
        conn.text_factory = bytes
        try:
            n, raw = conn.execute(copy_block_select(t) + _where(rng)).fetchone()
        finally:
            conn.close()
        return Digest(n, hashlib.md5(raw + b"\n" if n else b"", usedforsecurity=False).hexdigest())
    conn = _canon_reader(path)
    try:
        with _decoding(path, t, rng):
            n, text = conn.execute(source_digest_sql(t, _where(rng))).fetchone()
    finally:
        conn.close()
    return Digest(n, hashlib.md5((text or "").encode(), usedforsecurity=False).hexdigest())


def pg_digest(
    dsn: str, password: str, t: PlanTable, rng: tuple[int, int] | None, schema: str = STAGE
) -> Digest:
    with pg_connect(dsn, password) as pg:
        pg.execute("SET search_path = public")
        pg.execute("SET work_mem = '64MB'")  # the key order sorts in memory
        pg.execute("SET max_parallel_workers_per_gather = 0")  # see pg_digest_sql
        walk = bucketed(t)
        if walk is not None:
            return Digest.of_buckets(_pg_buckets(pg, t, walk, schema))
        if ordered(t):
            row = pg.execute(pg_digest_sql(t, schema, rng)).fetchone()
        else:
            row = pg.execute(pg_checksum_sql(t, schema)).fetchone()
    assert row is not None
    return Digest(int(row[0]), str(row[1]))


def _sqlite_view(path: Path, view: PlanView) -> tuple[int, int]:
    """A view's result from the snapshot. Joins read pages at random: a 128 MB map
    spares a read() per page (measured 1.3 s against 2.9 s for bill_tally)."""
    conn = _key_order_reader(path)
    try:
        rows = conn.execute(f"SELECT * FROM {quote_ident(view.name)}")
        return _view_digest(rows, view.concat_separators)
    finally:
        conn.close()


@dataclass(frozen=True)
class Side:
    """Everything validation needs from one side (the source's snapshot, or staging):
    the digest of every part and every view's result."""

    digests: dict[Part, Digest]
    views: dict[str, tuple[int, int]]


def start_source_side(
    path: Path,
    plan: Plan,
    pool: Executor,
    copy: CopyJobs | None = None,
    parts: Sequence[tuple[PlanTable, tuple[int, int] | None]] | None = None,
    views: bool = True,
) -> Callable[..., Side]:
    """Source digests (of `parts`, all by default) and view results, queued now behind
    whatever the processes are doing, and collected by the returned call. Tables whose
    COPY text is canonical take their digests from the `copy` itself."""
    streamed = {(t.name, r): f for t, r, f in copy or [] if stream_digested(t)}
    parts = [
        (t, r)
        for t, r in (digest_parts(path, plan) if parts is None else parts)
        if (t.name, r) not in streamed
    ]
    queued = [(v.name, pool.submit(_sqlite_view, path, v)) for v in plan.views if views]
    digests = [((t.name, r), pool.submit(source_digest, path, t, r)) for t, r in parts]
    digests += list(streamed.items())

    def collect(cancel: bool = False) -> Side:
        if cancel:
            for f in [f for _k, f in queued] + [f for _k, f in digests]:
                f.cancel()
            return Side({}, {})
        return Side(
            dict(zip([k for k, _f in digests], _gather([f for _k, f in digests]), strict=True)),
            dict(zip([k for k, _f in queued], _gather([f for _k, f in queued]), strict=True)),
        )

    return collect


def _run_parallel(jobs: Sequence[Callable[[], Any]], workers: int) -> list[Any]:
    """Run jobs on `workers` threads; the first failure cancels what has not started."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[Any]] = [pool.submit(j) for j in jobs]
        try:
            return [f.result() for f in futures]
        except Exception:
            for f in futures:
                f.cancel()
            raise


def _exec_all(dsn: str, password: str, statements: list[str], what: str) -> None:
    with pg_connect(dsn, password, autocommit=True) as pg:
        for sql in statements:
            try:
                pg.execute(sql)
            except psycopg.Error as exc:
                raise _pg_error(exc, password, f"{what}: {sql[:200]}") from exc


_DEPENDENTS = """
WITH moved AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s)
)
SELECT format('foreign key %%I on %%s', con.conname, con.conrelid::regclass)
FROM pg_constraint con
WHERE con.contype = 'f' AND con.confrelid IN (SELECT oid FROM moved)
  AND con.conrelid NOT IN (SELECT oid FROM moved)
UNION
SELECT format('view %%s', r.ev_class::regclass)
FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid IN (SELECT oid FROM moved)
  AND r.ev_class NOT IN (SELECT oid FROM moved)
UNION
SELECT format('trigger %%I on %%s', t.tgname, t.tgrelid::regclass)
FROM pg_trigger t
WHERE NOT t.tgisinternal AND t.tgrelid IN (SELECT oid FROM moved)
  AND t.tgname <> ALL(%(triggers)s)
UNION
SELECT format('row-level security on %%s', c.oid::regclass)
FROM pg_class c
WHERE c.oid IN (SELECT oid FROM moved)
  AND (c.relrowsecurity OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
UNION
SELECT format('privileges on column %%I of %%s', a.attname, a.attrelid::regclass)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid IN (SELECT oid FROM moved) AND a.attacl IS NOT NULL AND a.attnum > 0
  AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
  AND NOT (c.relname || '.' || a.attname) = ANY(%(columns)s)
ORDER BY 1
"""


def _dependents(pg: psycopg.Connection[Any], plan: Plan, target_schema: str) -> None:
    """What holds on to, or guards, the tables the migration replaces, and would not
    follow the swap: a view or a foreign key binds to the table itself, so it would
    read, or point at, the copy moved aside (and the next cleanup would drop it); a
    trigger the migration did not make, row-level security, or a privilege on a
    column the new table lacks would simply be gone. Refused with their names
    instead, before anything changes. (Table and column privileges that fit the new
    tables are carried over by the swap.)"""
    names = [t.name for t in plan.tables] + [v.name for v in plan.views]
    found = [
        r[0]
        for r in pg.execute(
            _DEPENDENTS,
            {
                "schema": target_schema,
                "names": names,
                "triggers": [tr.name for tr in plan.triggers],
                "columns": [f"{t.name}.{c.name}" for t in plan.tables for c in t.columns],
            },
        ).fetchall()
    ]
    if found:
        raise MigrationError(
            f"{len(found)} object(s) outside the migration depend on tables it replaces in"
            f" {target_schema!r}: " + "; ".join(found[:10]),
            hint="drop or re-create them after the migration, or migrate into another schema"
            " (target_schema); the target is unchanged",
        )


_GRANTS = """
SELECT c.relname, NULL::name, a.privilege_type, a.is_grantable,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) AND a.grantee <> current_user::regrole
UNION ALL
SELECT c.relname, t.attname, a.privilege_type, a.is_grantable,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute t ON t.attrelid = c.oid AND t.attnum > 0 AND NOT t.attisdropped,
     aclexplode(t.attacl) a
WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) AND a.grantee <> current_user::regrole
"""

_SCHEMA_DEFAULTS = """
SELECT a.privilege_type, a.is_grantable,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace,
     aclexplode(d.defaclacl) a
WHERE n.nspname = %(schema)s AND d.defaclrole = current_user::regrole AND d.defaclobjtype = 'r'
"""


def _grants(
    pg: psycopg.Connection[Any], target_schema: str, names: list[str], existing: Iterable[str]
) -> list[str]:
    """GRANTs that give the new tables and views the privileges their predecessors had,
    their owner's included when that was another role (an application role reading
    and writing them keeps working after a re-migration),
    and new ones what the schema's default privileges give a table created there:
    staging is another schema, so PostgreSQL did not apply them."""
    tgt = quote_ident(target_schema)
    out = []
    for rel, col, priv, grantable, grantee in pg.execute(
        _GRANTS, {"schema": target_schema, "names": names}
    ).fetchall():
        cols = "" if col is None else f" ({quote_ident(col)})"
        option = " WITH GRANT OPTION" if grantable else ""
        out.append(f"GRANT {priv}{cols} ON {tgt}.{quote_ident(rel)} TO {grantee}{option}")
    defaults = pg.execute(_SCHEMA_DEFAULTS, {"schema": target_schema}).fetchall()
    for rel in sorted(set(names) - set(existing)):
        for priv, grantable, grantee in defaults:
            option = " WITH GRANT OPTION" if grantable else ""
            out.append(f"GRANT {priv} ON {tgt}.{quote_ident(rel)} TO {grantee}{option}")
    return out


def prepare_stage(dsn: str, password: str, plan: Plan, target_schema: str) -> None:
    with pg_connect(dsn, password, autocommit=True) as pg:
        _dependents(pg, plan, target_schema)  # fail before the copy, not at the swap
    statements = [
        f"DROP SCHEMA IF EXISTS {STAGE} CASCADE",
        f"CREATE SCHEMA {STAGE}",
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(target_schema)}",
    ]
    if plan.needs_citext:
        statements.append("CREATE EXTENSION IF NOT EXISTS citext")
    statements += [create_table_sql(t, STAGE) for t in plan.tables]
    _exec_all(dsn, password, statements, "creating the staging tables failed")
    rehearse(dsn, password, plan)


def rehearse(dsn: str, password: str, plan: Plan) -> None:
    """Every key, index, foreign key, view and trigger of the plan, built on the empty
    staging tables in one transaction that is rolled back: what PostgreSQL refuses (a
    view comparing uuid with text, lower() of a uuid, a foreign key between two types)
    stops the migration before the copy rather than after it. Empty tables make it
    take milliseconds; errors that only data can raise are for the validation."""
    taken = {ix.name for t in plan.tables for ix in t.indexes}
    uuid_way = (  # text functions on a column that became uuid, a timestamp, jsonb…
        "for a typed column it reads as text (uuid, timestamp, jsonb…), policy 'text'"
        " (TABLE.COLUMN: text) keeps that column text"
    )
    steps: list[tuple[str, str, str]] = []  # (what, SQL, the way out)
    for t in plan.tables:
        indexes = index_sql(t, STAGE, taken)
        what = f"a key or index of {t.name!r}"
        steps += [(what, sql, uuid_way) for _n, sql in indexes]
        steps += [(what, sql, uuid_way) for sql in constraint_sql(t, STAGE, indexes)]
    for t in plan.tables:  # once every table has its keys: a parent may come later
        steps += [(f"a foreign key of {t.name!r}", sql, uuid_way) for sql in fk_sql(t, STAGE)]
    steps.append(("", f"SET LOCAL search_path = {STAGE}, public", ""))
    steps += [
        (
            f"view {v.name!r}",
            f"CREATE VIEW {STAGE}.{quote_ident(v.name)} AS {v.select_sql}",
            uuid_way,
        )
        for v in plan.views
    ]
    for tr in plan.triggers:  # EXPLAIN type-checks each statement, NEW/OLD as typed NULLs:
        # a type error would otherwise surface in the application's first write
        way = f"accept '{tr.name}:trigger' to migrate without it"
        sqls = [*trigger_sql(tr, STAGE, f"{STAGE}, public"), *(f"EXPLAIN {p}" for p in tr.probes)]
        steps += [(f"trigger {tr.name!r}", sql, way) for sql in sqls]
    with pg_connect(dsn, password) as pg, pg.transaction(force_rollback=True):
        for what, sql, way in steps:
            try:
                pg.execute(sql)
            except psycopg.Error as exc:
                msg = redact(str(exc).strip().splitlines()[0], [password])
                raise MigrationError(
                    f"{what} would fail in PostgreSQL: {msg} (in: {sql[:200]})",
                    hint=f"nothing was copied and the target is unchanged; fix it in the"
                    f" source, or {way}",
                ) from exc


def finish_target(
    dsn: str,
    password: str,
    plan: Plan,
    parts: Sequence[tuple[PlanTable, tuple[int, int] | None]] = (),
    views: bool = False,
    threads: int = 64,
    running: int = 0,
) -> Side:
    """Staging's keys, constraints, foreign keys and views, and (given `parts`/`views`)
    the target side of the validation, as one dependency graph on PostgreSQL.

    Every index is its own job, so a big table's indexes build side by side; a
    table's digests start as soon as its keys exist, while other tables' indexes
    still build; foreign keys wait only for their own tables; views wait for the
    keys they may rely on. Threads only wait on PostgreSQL (enough of them that
    no job waits for a thread) and each job opens its own connection once its
    dependencies are done. Jobs depend only on jobs submitted before them. At most
    `running` jobs (twice the cores by default) work at once, so a schema of
    hundreds of indexes never runs hundreds of index builds, each with its own
    maintenance_work_mem. Views skip that queue: they are ready last and take
    longest, so queueing them behind digests only made the phase longer (0.6 s).
    """
    slots = threading.BoundedSemaphore(running or 2 * cores())
    taken = {ix.name for t in plan.tables for ix in t.indexes}
    jobs: list[Future[Any]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:

        def submit(
            deps: Sequence[Future[Any]], fn: Callable[..., Any], *args: Any, first: bool = False
        ) -> Future[Any]:
            def run() -> Any:
                for d in deps:
                    d.result()
                if first:  # views: few, the longest jobs, and last to be ready
                    return fn(*args)
                with slots:  # taken after the wait: a job holding a slot never waits
                    return fn(*args)

            jobs.append(pool.submit(run))
            return jobs[-1]

        keyed: dict[str, Future[Any]] = {}
        for t in sorted(plan.tables, key=lambda t: -t.rows):
            what = f"building keys of {t.name!r}"
            indexes = index_sql(t, STAGE, taken)
            built = [submit([], _exec_all, dsn, password, [sql], what) for _n, sql in indexes]
            keyed[t.name] = submit(
                built, _exec_all, dsn, password, constraint_sql(t, STAGE, indexes), what
            )
        digests = [
            ((t.name, r), submit([keyed[t.name]], pg_digest, dsn, password, t, r)) for t, r in parts
        ]
        made = submit(
            list(keyed.values()),  # a view may rely on a key (GROUP BY a primary key)
            _exec_all,
            dsn,
            password,
            [
                f"SET search_path = {STAGE}, public",
                *[
                    f"CREATE VIEW {STAGE}.{quote_ident(v.name)} AS {v.select_sql}"
                    for v in plan.views
                ],
            ],
            "creating views failed",
            first=True,
        )
        results = [
            (v.name, submit([made], _pg_view, dsn, password, v, first=True))
            for v in plan.views
            if views
        ]
        for tr in plan.triggers:  # disabled until the swap: the catch-up must not fire them
            submit([keyed[tr.table]], create_trigger, dsn, password, tr)
        for t in plan.tables:  # a table's foreign keys once it and its parents have keys
            if t.fks:
                deps = [keyed[t.name], *[keyed[fk.parent] for fk in t.fks if fk.parent in keyed]]
                submit(
                    deps, _exec_all, dsn, password, fk_sql(t, STAGE), "adding foreign keys failed"
                )
        for t in plan.tables:  # statistics move with the tables: the first queries after
            # the swap are planned on them (autovacuum, off while loading, would take a while)
            submit(
                [keyed[t.name]],
                _exec_all,
                dsn,
                password,
                [f"ANALYZE {STAGE}.{quote_ident(t.name)}"],
                f"analyzing {t.name!r} failed",
            )
        wait(jobs)
    for f in jobs:  # the first failure in submission order is the cause of the rest
        if f.exception() is not None:
            raise f.exception()  # type: ignore[misc]
    return Side({k: f.result() for k, f in digests}, {k: f.result() for k, f in results})


def create_trigger(dsn: str, password: str, t: PlanTrigger) -> None:
    """Create the trigger, disabled. Its statements were type-checked by the rehearsal
    before the copy (PL/pgSQL checks only syntax when a function is created)."""
    _exec_all(
        dsn,
        password,
        trigger_sql(t, STAGE, f"{STAGE}, public"),
        f"creating trigger {t.name!r} failed",
    )


def build_keys(dsn: str, password: str, plan: Plan) -> None:
    """Keys and indexes, then foreign keys, then views."""
    finish_target(dsn, password, plan)


def pg_checksum(dsn: str, password: str, t: PlanTable, schema: str = STAGE) -> tuple[int, int]:
    with pg_connect(dsn, password) as pg:
        pg.execute("SET search_path = public")
        row = pg.execute(pg_checksum_sql(t, schema)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _differing_keys(
    path: Path,
    dsn: str,
    password: str,
    t: PlanTable,
    schema: str,
    limit: int | None = 10,
    ranges: Sequence[tuple[int, int]] = (),
    buckets: Sequence[str] | None = None,
) -> tuple[int | str, ...]:
    """Primary keys whose rows differ (a sample unless `limit` is None), by per-row hashes.
    An identity key is compared within the rowid `ranges` whose digests differed (all
    rows if none are given); any other primary key by walking both sides in key order
    (only the key-prefix `buckets` whose digests differed, if given)."""
    ident = next((c for c in t.columns if c.identity), None)
    if ident is None:
        return _differing_by_key(path, dsn, password, t, schema, limit, buckets)
    src_where = pg_where = ""
    if ranges:
        src_where = " WHERE " + " OR ".join(
            f"rowid BETWEEN {int(a)} AND {int(b)}" for a, b in ranges
        )
        pg_where = " WHERE " + " OR ".join(
            f"{quote_ident(ident.name)} BETWEEN {int(a)} AND {int(b)}" for a, b in ranges
        )
    select, row_hash = source_row_hasher(t)
    conn = open_readonly(path)
    try:
        src = {
            r[0]: row_hash(*r[1:])
            for r in conn.execute(f"SELECT rowid, {select} FROM {quote_ident(t.name)}{src_where}")
        }
    finally:
        conn.close()
    one = pg_row_hashes_sql(t, schema, [quote_ident(ident.name)], pg_where)
    with pg_connect(dsn, password) as pg:
        dst = {int(r[0]): int(r[1]) for r in pg.execute(one)}
    keys = _differing(src, dst)
    return tuple(keys if limit is None else keys[:limit])


def _differing_by_key(
    path: Path,
    dsn: str,
    password: str,
    t: PlanTable,
    schema: str,
    limit: int | None,
    buckets: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The differing keys of `_walk_keys`, as a person reads them."""
    within = None if buckets is None else (bucket_width(t.rows), buckets)
    return tuple(
        k[0] if len(k) == 1 else "(" + ", ".join(k) + ")"
        for k in _walk_keys(path, dsn, password, t, schema, limit, within)
    )


def _source_buckets(
    path: Path, t: PlanTable, walk: KeyWalk, only: Sequence[str] | None = None
) -> dict[str, str]:
    """The source's "rows:md5" per key-prefix bucket (`only` these buckets, if given:
    each read as a range of the key's index where it can be)."""
    width = bucket_width(t.rows)
    sql, _pg = bucket_digest_sql(t, walk, width, only=only is not None)
    ranged = bucket_range_sqlite(t, walk, width) if only is not None else None
    conn = _canon_reader(path)
    try:
        uppers = {p: prefix_upper(p) for p in only or ()}
        if ranged is not None and only is not None and None not in uppers.values():
            rows: Iterable[Any] = [
                row for p in only for row in conn.execute(ranged, (p, uppers[p])).fetchall()
            ]
        else:
            rows = conn.execute(sql, () if only is None else (json.dumps(list(only)),))
        return {
            b: f"{n}:{hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()}"
            for b, n, text in rows
        }
    finally:
        conn.close()


def _grouping_in_arrival_order(pg: psycopg.Connection[Any]) -> None:
    """Session settings for bucket digests: rows reach the aggregate in key order and
    are grouped by hashing as they arrive (see bucket_digest_sql)."""
    pg.execute("SET search_path = public")
    pg.execute("SET work_mem = '64MB'")
    pg.execute("SET enable_sort = off")  # a sort by bucket would not keep the key order
    pg.execute("SET jit = off")  # sorts off make every cost huge: 0.3 s compiling for ms of work
    pg.execute("SET max_parallel_workers_per_gather = 0")  # nor would parallel workers


def _pg_buckets(
    pg: psycopg.Connection[Any],
    t: PlanTable,
    walk: KeyWalk,
    schema: str = STAGE,
    only: Sequence[str] | None = None,
) -> dict[str, str]:
    """PostgreSQL's "rows:md5" per key-prefix bucket (`only` these buckets, if given)."""
    _sqlite, sql = bucket_digest_sql(t, walk, bucket_width(t.rows), only=only is not None)
    _grouping_in_arrival_order(pg)
    table = f"{quote_ident(schema)}.{quote_ident(t.name)}"
    params = None if only is None else (list(only),)
    return {b: f"{n}:{d}" for b, n, d in pg.execute(sql.format(table=table), params)}


def _differing_buckets(
    path: Path, dsn: str, password: str, t: PlanTable, walk: KeyWalk, schema: str = STAGE
) -> list[str]:
    """Key-prefix buckets whose rows differ, from one digest per bucket on each side,
    the two sides computed at once (SQLite releases the GIL while it works)."""

    def target() -> dict[str, str]:
        with pg_connect(dsn, password) as pg:
            return _pg_buckets(pg, t, walk, schema)

    src, dst = _run_parallel([partial(_source_buckets, path, t, walk), target], 2)
    return _differing(src, dst)


def _narrow(
    path: Path,
    dsn: str,
    password: str,
    t: PlanTable,
    ranges: Sequence[tuple[int, int]],
    schema: str = STAGE,
) -> list[tuple[int, int]]:
    """The buckets of ROWID_BUCKET rowids, within `ranges`, whose digests differ: both
    sides digest the ranges at once, and only those buckets are then hashed row by row."""

    def source() -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        conn = _canon_reader(path)
        try:
            for i, rng in enumerate(ranges):
                sql, _pg = rowid_bucket_sql(t, schema, rng)
                with _decoding(path, t, rng):
                    for b, n, text in conn.execute(sql):
                        md5 = hashlib.md5((text or "").encode(), usedforsecurity=False)
                        out[(i, b)] = f"{n}:{md5.hexdigest()}"
        finally:
            conn.close()
        return out

    def target() -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        with pg_connect(dsn, password) as pg:
            _grouping_in_arrival_order(pg)
            for i, rng in enumerate(ranges):
                _sqlite, sql = rowid_bucket_sql(t, schema, rng)
                out.update({(i, int(b)): f"{n}:{d}" for b, n, d in pg.execute(sql)})
        return out

    src, dst = _run_parallel([source, target], 2)
    return [rowid_bucket_range(b) for b in sorted({k[1] for k in _differing(src, dst)})]


def _differing(src: Mapping[Any, Any], dst: Mapping[Any, Any]) -> list[Any]:
    """Keys whose values differ, or that one side lacks, in order."""
    return sorted(k for k in src.keys() | dst.keys() if src.get(k) != dst.get(k))


def _walk_keys(
    path: Path,
    dsn: str,
    password: str,
    t: PlanTable,
    schema: str,
    limit: int | None,
    buckets: tuple[int, Sequence[str]] | None = None,
) -> list[tuple[str, ...]]:
    """Both sides stream their rows in primary-key order (uuid, text, composite keys …)
    and are walked side by side like a merge join: memory holds the differing keys
    (each as its columns' canonical text), never a table. A key only one side has
    differs too."""
    walk = key_walk(t)
    if walk is None:
        return []
    n = len(t.primary_key)
    as_is = walk.sorts_as_is
    select, row_hash = source_row_hasher(t)
    found: list[tuple[str, ...]] = []

    def shown(key: Sequence[Any]) -> tuple[str, ...]:
        return tuple(map(str, key))

    conn = _key_order_reader(path)
    try:
        with pg_connect(dsn, password) as pg, pg.cursor(name="shipyard_keys") as cur:
            cur.itersize = 20_000  # rows per round trip (100 by default: 4 of 7.8 s waiting)
            src_where, source = "", ""  # only the rows of `buckets`
            prefixes: list[str] = []
            if buckets is not None:
                width, prefixes = buckets[0], sorted(buckets[1])
                src_where = (
                    f" WHERE substr({walk.sqlite_key_exprs[0]}, 1, {width})"
                    " IN (SELECT value FROM json_each(?))"
                )
                table = f"{quote_ident(schema)}.{quote_ident(t.name)}"
                source = pg_bucket_from(t, walk, width, table)
            cur.execute(
                pg_row_hashes_sql(
                    t, schema, walk.pg_keys, f" ORDER BY {walk.pg_order}", source=source
                ),
                (prefixes,) if buckets is not None else None,
            )
            src = (
                (tuple(r[:n]), row_hash(*r[n:]))
                for r in conn.execute(
                    f"SELECT {walk.sqlite_keys}, {select} FROM {quote_ident(t.name)}{src_where}"
                    f" ORDER BY {walk.sqlite_order}",
                    (json.dumps(prefixes),) if buckets is not None else (),
                )
            )
            dst = ((tuple(r[:n]), int(r[n])) for r in cur)
            a, b = next(src, None), next(dst, None)
            while (a is not None or b is not None) and (limit is None or len(found) < limit):
                if a is None or b is None:
                    side = 1 if a is None else -1
                else:
                    ka, kb = (a[0], b[0]) if as_is else (walk.sort_key(a[0]), walk.sort_key(b[0]))
                    side = -1 if ka < kb else 1 if kb < ka else 0
                if side < 0 and a is not None:  # only the source has it
                    found.append(shown(a[0]))
                    a = next(src, None)
                elif side > 0 and b is not None:  # only PostgreSQL has it
                    found.append(shown(b[0]))
                    b = next(dst, None)
                elif a is not None and b is not None:
                    if a[1] != b[1]:
                        found.append(shown(a[0]))
                    a, b = next(src, None), next(dst, None)
    finally:
        conn.close()
    return found


def _view_digest(rows: Iterable[Sequence[Any]], separators: Sequence[str] = ()) -> tuple[int, int]:
    """(rows, order-independent hash) of a view's result, streamed: never held in memory.

    Cells are compared loosely (numbers to 12 significant digits) because the
    two engines type expressions differently (avg is REAL in SQLite, numeric here).
    With group_concat() `separators`, text is compared as its pieces in any order:
    neither engine promises the order of the values it concatenates.
    """
    count = 0
    total = 0
    md5, to_int = hashlib.md5, int.from_bytes
    cell: Callable[[Any], str] = loose_value
    if separators:
        split = re.compile("|".join(map(re.escape, separators))).split

        def cell(v: Any) -> str:
            return "\x1e".join(sorted(split(v))) if isinstance(v, str) else loose_value(v)

    for r in rows:
        text = "\x1f".join(map(cell, r))
        total += to_int(md5(text.encode(), usedforsecurity=False).digest()[:8], "big", signed=True)
        count += 1
    return count, total


def validate(
    path: Path,
    dsn: str,
    password: str,
    plan: Plan,
    pool: Executor,
    source: Callable[[], Side] | None = None,
    known: Validation | None = None,
    diagnose: bool = True,
    target: Side | None = None,
    keep: dict[Part, tuple[Digest, Digest]] | None = None,
    known_parts: Mapping[Part, tuple[Digest, Digest]] | None = None,
    schema: str = STAGE,
    views: bool = True,
    layout: Sequence[tuple[PlanTable, tuple[int, int] | None]] | None = None,
) -> Validation:
    """Per table, rows and digests of every part on both sides; views on both sides
    (unless `views` is off). The parts are `digest_parts` of `path` unless a `layout`
    (an earlier snapshot's, whose digests `known_parts` holds) is given. PostgreSQL's side is `schema`: staging, or after the
    swap the target itself (the write-back compares that with the source).

    `known` holds reports still true (tables unchanged since they were checked);
    only the other tables are read again. A differing digest is confirmed by the
    order-independent per-row checksum, which also names the differing keys
    (`diagnose`), so an ordering quirk can never fail a correct table. `keep`
    receives every part's (source, target) digests (a bucketed table's with its
    buckets); `known_parts` are digests still true, not taken again.
    """
    reuse = {r.name: r for r in (known.tables if known else ()) if r.ok}
    known_parts = known_parts or {}
    every = [(t, r) for t, r in (layout or digest_parts(path, plan)) if t.name not in reuse]
    parts = [(t, r) for t, r in every if (t.name, r) not in known_parts]
    shown = plan.views if views else ()
    if source is None:  # queued first: the processes work while PostgreSQL does
        source = start_source_side(path, plan, pool, parts=parts, views=views)
    if target is None:
        jobs: list[Callable[[], Any]] = [
            partial(pg_digest, dsn, password, t, r, schema) for t, r in parts
        ]
        jobs += [partial(_pg_view, dsn, password, v) for v in shown]
        results = _run_parallel(jobs, len(jobs) or 1)
        n = len(parts)
        dst = {(t.name, r): d for (t, r), d in zip(parts, results[:n], strict=True)}
        pg_views = results[n:]
    else:
        dst, pg_views = target.digests, [target.views[v.name] for v in shown]
    side = source()
    src, sqlite_views = side.digests, [side.views[v.name] for v in shown]
    src = {**{k: v[0] for k, v in known_parts.items()}, **src}
    dst = {**{k: v[1] for k, v in known_parts.items()}, **dst}
    reports = []
    for t in plan.tables:
        if t.name in reuse:
            reports.append(reuse[t.name])
            continue
        keys = [(t.name, r) for tt, r in every if tt.name == t.name]
        a, b = _combine([src[x] for x in keys]), _combine([dst[x] for x in keys])
        ok = all(src[x] == dst[x] for x in keys)
        ranges = tuple(
            r for _n, r in keys if r is not None and src[(t.name, r)] != dst[(t.name, r)]
        )
        buckets = a.buckets is not None and b.buckets is not None
        if keep is not None:
            keep.update({x: (src[x], dst[x]) for x in keys})
        differing: tuple[int | str, ...] = ()
        if not ok and diagnose:
            if ordered(t):  # the authority: per-row hashes, in no particular order
                ok = source_checksum(path, t) == pg_checksum(dsn, password, t, schema)
            if not ok:
                prefixes = _differing(a.buckets or {}, b.buckets or {}) if buckets else None
                differing = _differing_keys(
                    path, dsn, password, t, schema, ranges=ranges, buckets=prefixes
                )
        reports.append(
            TableReport(
                name=t.name,
                rows_source=a.rows,
                rows_target=b.rows,
                checksum_source=a.value,
                checksum_target=b.value,
                ok=ok,
                differing_keys=differing,
                differing_ranges=() if ok else ranges,
            )
        )
    compared = tuple(
        ViewReport(name=v.name, rows_source=a2[0], rows_target=b2[0], ok=a2 == b2)
        for v, a2, b2 in zip(shown, sqlite_views, pg_views, strict=True)
    )
    not_valid = tuple(fk.name for t in plan.tables for fk in t.fks if fk.not_valid)
    return Validation(tables=tuple(reports), views=compared, fk_not_valid=not_valid)


def _combine(parts: list[Digest]) -> Digest:
    if len(parts) == 1:
        return parts[0]
    joined = "".join(p.value for p in parts).encode()
    return Digest(
        sum(p.rows for p in parts), hashlib.md5(joined, usedforsecurity=False).hexdigest()
    )


def _pg_view(dsn: str, password: str, view: PlanView) -> tuple[int, int]:
    name = view.name
    with pg_connect(dsn, password) as pg, pg.cursor(name="shipyard_view") as cur:
        pg.execute("SET cursor_tuple_fraction = 1")  # plan for the whole result, not the first rows
        pg.execute("SET work_mem = '64MB'")  # hash aggregates in memory: bill_tally 1.04 s → 0.74 s
        cur.itersize = 5000
        try:
            cur.execute(f"SELECT * FROM {STAGE}.{quote_ident(name)}")
            return _view_digest(cur, view.concat_separators)
        except psycopg.Error as exc:  # e.g. a cast SQLite would have made quietly
            raise _pg_error(
                exc, password, f"view {name!r} fails in PostgreSQL over the migrated rows"
            ) from exc


def swap(dsn: str, password: str, plan: Plan, target_schema: str) -> list[str]:
    """One transaction: what the target held under these names moves aside, staging moves in,
    and the translated triggers start firing (on the target's tables, resolving names there).

    The previous tables stay in `shipyard_previous` until the next migration,
    so a bad cutover can be undone by hand without a restore.
    """
    tgt = quote_ident(target_schema)
    names = [t.name for t in plan.tables] + [v.name for v in plan.views]
    moved: list[str] = []
    with pg_connect(dsn, password) as pg:
        try:
            with pg.transaction():
                pg.execute("SET LOCAL lock_timeout = '15s'")
                _dependents(pg, plan, target_schema)  # created since the copy began
                pg.execute(f"DROP SCHEMA IF EXISTS {PREVIOUS} CASCADE")
                pg.execute(f"CREATE SCHEMA {PREVIOUS}")
                existing = dict(
                    pg.execute(
                        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'v', 'p', 'm')",
                        (target_schema, names),
                    ).fetchall()
                )
                grants = _grants(pg, target_schema, names, existing)
                for name, kind in existing.items():
                    what = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(kind, "TABLE")
                    pg.execute(f"ALTER {what} {tgt}.{quote_ident(name)} SET SCHEMA {PREVIOUS}")
                    moved.append(name)
                functions = [tr.function for tr in plan.triggers]
                for (name,) in pg.execute(
                    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = %s AND p.proname = ANY(%s) AND p.pronargs = 0",
                    (target_schema, functions),
                ).fetchall():
                    pg.execute(f"ALTER FUNCTION {tgt}.{quote_ident(name)}() SET SCHEMA {PREVIOUS}")
                    moved.append(f"{name}()")
                for t in plan.tables:
                    pg.execute(f"ALTER TABLE {STAGE}.{quote_ident(t.name)} SET SCHEMA {tgt}")
                    pg.execute(
                        f"ALTER TABLE {tgt}.{quote_ident(t.name)} RESET (autovacuum_enabled)"
                    )
                for v in plan.views:
                    pg.execute(f"ALTER VIEW {STAGE}.{quote_ident(v.name)} SET SCHEMA {tgt}")
                for tr in plan.triggers:
                    fn = quote_ident(tr.function)
                    pg.execute(f"ALTER FUNCTION {STAGE}.{fn}() SET SCHEMA {tgt}")
                    pg.execute(f"ALTER FUNCTION {tgt}.{fn}() SET search_path = {tgt}, public")
                    pg.execute(
                        f"ALTER TABLE {tgt}.{quote_ident(tr.table)}"
                        f" ENABLE TRIGGER {quote_ident(tr.name)}"
                    )
                for sql in grants:
                    pg.execute(sql)
                pg.execute(f"DROP SCHEMA {STAGE}")
        except psycopg.Error as exc:
            raise _pg_error(exc, password, "the swap into place failed") from exc
    return moved


def write_horizon(dsn: str, password: str) -> int:
    """The oldest transaction id still running (with its epoch). Taken right before the
    swap: every row written into the swapped-in tables afterwards carries this id or a
    later one, so a write-back can find PostgreSQL's later writes by their xmin."""
    with pg_connect(dsn, password) as pg:
        row = pg.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())").fetchone()
    assert row is not None
    return int(row[0])


def drop_stage(dsn: str, password: str) -> None:
    """Best effort: a leftover staging schema is also dropped by the next run."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as pg:
            pg.execute(f"DROP SCHEMA IF EXISTS {STAGE} CASCADE")
    except psycopg.Error:
        pass


@contextmanager
def migration_lock(dsn: str, password: str) -> Iterator[None]:
    """One migration per target database: a session advisory lock, released on exit or death."""
    with pg_connect(dsn, password, autocommit=True) as pg:
        got = pg.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            raise MigrationError(
                "another migration into this database is running", hint="wait for it to finish"
            )
        yield


def workdir() -> Path:
    """A scratch directory for the snapshots, each as big as the source. A run killed
    with -9 runs no cleanup and leaves its directory behind: every new run removes
    those whose process is gone (the directory names its owner's pid)."""
    for old in Path(tempfile.gettempdir()).glob("shipyard-migrate-*"):
        try:
            pid = int((old / "pid").read_text())
        except (OSError, ValueError):
            continue  # no owner recorded (yet): not ours to judge
        if not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix="shipyard-migrate-"))
    (path / "pid").write_text(str(os.getpid()))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def refresh_identities(path: Path, dsn: str, password: str, plan: Plan) -> list[str]:
    """After a catch-up copy, identities restart after the largest id now present."""
    conn = open_readonly(path)
    out = []
    try:
        for t in plan.tables:
            ident = next((c for c in t.columns if c.identity), None)
            if ident is None:
                continue
            mx = conn.execute(f"SELECT max(rowid) FROM {quote_ident(t.name)}").fetchone()[0] or 0
            seq = 0
            if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
            ).fetchone():
                r = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?", (t.name,)
                ).fetchone()
                seq = r[0] if r else 0
            out += restart_sql(t, STAGE, max(mx, seq, (t.restart_with or 1) - 1) + 1)
    finally:
        conn.close()
    _exec_all(dsn, password, out, "restarting identities failed")
    return out


def now() -> float:
    return time.perf_counter()


@dataclass(frozen=True)
class CatchUp:
    """What a catch-up did, and what the final validation need not read again."""

    rows: dict[str, int]  # rows replaced, per table
    known: Validation  # reports still true: tables that needed nothing, buckets re-checked
    parts: Mapping[Part, tuple[Digest, Digest]]  # rowid parts that were equal and untouched
    # found from pages: the parts of the earlier snapshot that `parts` are keyed by,
    # and the views' reports, still true if no row changed
    layout: Sequence[tuple[PlanTable, tuple[int, int] | None]] | None = None
    views: tuple[ViewReport, ...] | None = None

    @property
    def by(self) -> str:
        return "digests" if self.layout is None else "pages"


def validate_caught_up(
    path: Path, dsn: str, password: str, plan: Plan, pool: Executor, caught: CatchUp
) -> Validation:
    """The final validation of a cutover: only what the catch-up could not vouch for is
    read again. Views too: after a catch-up from pages, only those reading a table
    whose rows changed are queried again (the others' results cannot have moved)."""
    if caught.views is None:
        stale = list(plan.views)
    else:
        changed = set(caught.rows)
        stale = [v for v in plan.views if view_reads(path, v.name) & changed]
    done = validate(
        path,
        dsn,
        password,
        plan.model_copy(update={"views": tuple(stale)}),
        pool,
        known=caught.known,
        known_parts=caught.parts,
        layout=caught.layout,
        views=bool(stale),
    )
    if caught.views is None:
        return done
    fresh = {r.name: r for r in done.views}
    kept = {r.name: r for r in caught.views}
    views = tuple(fresh.get(v.name) or kept[v.name] for v in plan.views)
    return done.model_copy(update={"views": views})


def view_reads(path: Path, view: str) -> set[str]:
    """The tables (and views) a view reads, as SQLite's authorizer sees it prepared."""
    read: set[str] = set()

    def note(action: int, name: str | None, *_rest: Any) -> int:
        if action == sqlite3.SQLITE_READ and name:
            read.add(name)
        return sqlite3.SQLITE_OK

    conn = open_readonly(path)
    try:
        conn.set_authorizer(note)
        conn.execute(f"SELECT * FROM {quote_ident(view)} LIMIT 0").fetchall()
    finally:
        conn.close()
    return read


@dataclass(frozen=True)
class Changed:
    """The rows of one table that differ between the source and PostgreSQL: by rowid
    (an identity key), by primary key (canonical text, walked on both sides), or,
    without a usable key, the whole table (both None)."""

    table: PlanTable
    rowids: Sequence[int] | None = None
    keys: Sequence[tuple[str, ...]] | None = None
    buckets: Sequence[str] = ()  # a bucketed table's differing key-prefix buckets


@dataclass(frozen=True)
class Changes:
    """What differs, found from digests first and rows only where digests differ."""

    before: Validation  # the digest comparison of every table
    parts: dict[Part, tuple[Digest, Digest]]  # each part's (source, target) digests
    tables: tuple[Changed, ...]  # the tables that differ


def find_changes(
    path: Path,
    dsn: str,
    password: str,
    plan: Plan,
    pool: Executor,
    schema: str = STAGE,
    only: Sequence[PlanTable] | None = None,
) -> Changes:
    """The rows that differ between the source and PostgreSQL's `schema`, either way
    round: the catch-up copies them into staging, the write-back into the source.

    Every table is digested on both sides (views are not compared). For a
    differing table keyed by its rowid, the rowid ranges whose digests differ
    are narrowed to buckets of rowids and only their rows are hashed; a uuid,
    text or composite key is walked in key order on both sides, only in the
    key-prefix buckets whose digests differ.
    """
    if only is not None:  # these tables alone (the others are known another way)
        plan = plan.model_copy(update={"tables": tuple(only)})
    kept: dict[Part, tuple[Digest, Digest]] = {}
    before = validate(
        path, dsn, password, plan, pool, diagnose=False, keep=kept, schema=schema, views=False
    )
    out: list[Changed] = []
    for r in before.tables:
        if r.ok:
            continue
        t = plan.table(r.name)
        ident = next((c for c in t.columns if c.identity), None)
        walk = key_walk(t)
        if ident is not None:
            # only the ranges whose digests differ (new rows are in the last),
            # narrowed to the buckets of rowids whose digests differ
            within = r.differing_ranges
            if within:
                within = tuple(_narrow(path, dsn, password, t, within, schema)) or within
            keys = _differing_keys(path, dsn, password, t, schema, limit=None, ranges=within)
            out.append(Changed(t, rowids=[int(k) for k in keys]))
        elif walk is not None and walk.by_value:
            if bucketed(t) is not None:
                s, d = kept[(t.name, None)]
                prefixes = _differing(s.buckets or {}, d.buckets or {})
            else:
                prefixes = _differing_buckets(path, dsn, password, t, walk, schema)
            walked = (
                _walk_keys(path, dsn, password, t, schema, None, (bucket_width(t.rows), prefixes))
                if prefixes
                else []
            )
            bucket_list = prefixes if bucketed(t) is not None else []
            out.append(Changed(t, keys=walked, buckets=bucket_list))
        else:
            out.append(Changed(t))
    return Changes(before, kept, tuple(out))


def catch_up(path: Path, dsn: str, password: str, plan: Plan, pool: Executor) -> CatchUp:
    """Bring the staging copy to the source's final state (taken while writes are frozen).

    Tables whose checksums already agree are skipped. Otherwise rows are
    replaced by primary key (inserts, updates and deletes alike), as
    `find_changes` found them; a table without a usable key is reloaded; one
    transaction with foreign keys deferred, so staging is never half caught up.
    Returns rows replaced, and what stays true afterwards: tables that needed
    nothing, bucketed tables whose changed buckets PostgreSQL digested again and
    found equal, and the rowid ranges that were equal (the source is a frozen
    snapshot, and only differing buckets and ranges were touched), so the final
    validation reads only the rest.
    """
    found = find_changes(path, dsn, password, plan, pool)
    before, kept = found.before, found.parts
    changed = _replace_rows(path, dsn, password, plan, found.tables)
    tables = {t.name: t for t in plan.tables}
    rechecked = [
        _recheck(dsn, password, tables[c.table.name], kept[(c.table.name, None)], c.buckets)
        for c in found.tables
        if c.buckets
    ]
    known = [r for r in before.tables if r.ok] + [r for r in rechecked if r.ok]
    equal = {k: v for k, v in kept.items() if k[1] is not None and v[0] == v[1]}
    return CatchUp(changed, before.model_copy(update={"tables": tuple(known)}), equal)


def catch_up_from_pages(
    old: Path,
    path: Path,
    dsn: str,
    password: str,
    plan: Plan,
    pool: Executor,
    verified: Validation,
    kept: Mapping[Part, tuple[Digest, Digest]],
) -> CatchUp | None:
    """The catch-up of a freeze that follows a validation: `verified` (passed) and its
    part digests `kept` compared staging with the bulk copy's snapshot `old`, and
    nothing has written to staging since. Comparing `old` with the frozen snapshot
    `path` page by page names the rows that may have changed, so no table is
    digested again just to find them: identity-keyed rows are replaced by rowid,
    other keyed rows by the keys those rowids held in either snapshot, and only
    the digest parts (rowid ranges, key-prefix buckets) holding them are read again
    by the final validation. Tables the pages cannot vouch for (WITHOUT ROWID,
    virtual) go through `find_changes`. None if the pages cannot tell at all (the
    schema changed, say): then the caller runs `catch_up`.
    """
    pages = changed_rows(old, path, {t.name: t.has_rowid for t in plan.tables})
    if pages is None:
        return None
    diff = pages.tables
    whole = [t for t in plan.tables if t.name in diff and diff[t.name].whole]
    found = find_changes(path, dsn, password, plan, pool, only=whole) if whole else None
    todo: list[Changed] = list(found.tables) if found else []
    fresh: list[Changed] = []  # bucketed tables whose both sides need new bucket digests
    parts: dict[Part, tuple[Digest, Digest]] = {}
    same = {t.name for t in plan.tables if t.name not in diff}
    for t in plan.tables:
        d = diff.get(t.name)
        if d is None or d.whole:
            continue
        rowids = _rows_differing((old, path), t, sorted(d.rowids))
        if not rowids:  # the leaves changed, their rows did not (a neighbour moved)
            same.add(t.name)
            continue
        walk = key_walk(t)
        if any(c.identity for c in t.columns):
            todo.append(Changed(t, rowids=rowids))
            parts.update(
                {
                    k: v
                    for k, v in kept.items()
                    if k[0] == t.name and k[1] is not None and not _holds(k[1], rowids)
                }
            )
        elif walk is not None and walk.by_value:
            keys, prefixes = _keys_of_rowids((old, path), t, walk, rowids)
            c = Changed(t, keys=keys, buckets=prefixes if bucketed(t) is not None else ())
            todo.append(c)
            if c.buckets:
                fresh.append(c)
        else:
            todo.append(Changed(t))
    rows = _replace_rows(path, dsn, password, plan, todo)
    rechecked = [
        _recheck(dsn, password, c.table, kept[(c.table.name, None)], c.buckets, path) for c in fresh
    ]
    if found:
        rechecked += [
            _recheck(dsn, password, c.table, found.parts[(c.table.name, None)], c.buckets)
            for c in found.tables
            if c.buckets
        ]
        parts.update({k: v for k, v in found.parts.items() if k[1] is not None and v[0] == v[1]})
    known = [r for r in verified.tables if r.name in same]
    known += [r for r in found.before.tables if r.ok] if found else []
    known += [r for r in rechecked if r.ok]
    layout = [(t, r) for t, r in digest_parts(old, plan)]
    return CatchUp(
        rows,
        verified.model_copy(update={"tables": tuple(known)}),
        parts,
        layout=layout,
        views=verified.views,
    )


def _holds(rng: tuple[int, int], rowids: Sequence[int]) -> bool:
    """Whether the rowid range holds any of the (sorted) rowids."""
    i = bisect.bisect_left(rowids, rng[0])
    return i < len(rowids) and rowids[i] <= rng[1]


def _rows_differing(paths: Sequence[Path], t: PlanTable, rowids: Sequence[int]) -> list[int]:
    """Of the rowids on the leaves that changed, those whose rows differ between the two
    snapshots as PostgreSQL would receive them (their COPY lines), or that only one
    snapshot has: a leaf holds a hundred rows, a write usually changes one."""
    seen: list[dict[int, bytes]] = []
    for path in paths:
        conn = open_readonly(path)
        conn.text_factory = bytes
        rows: dict[int, bytes] = {}
        try:
            with _decoding(path, t, None):
                for i in range(0, len(rowids), 5000):
                    batch = ",".join(map(str, rowids[i : i + 5000]))
                    cur = conn.execute(copy_select(t, rowid=True) + f" WHERE rowid IN ({batch})")
                    rows.update(cur.fetchall())
        finally:
            conn.close()
        seen.append(rows)
    a, b = seen
    return sorted(r for r in a.keys() | b.keys() if a.get(r) != b.get(r))


def _keys_of_rowids(
    paths: Sequence[Path], t: PlanTable, walk: KeyWalk, rowids: Sequence[int]
) -> tuple[list[tuple[str, ...]], list[str]]:
    """The primary keys (as `_walk_keys` shows them) that the rowids held in any of the
    snapshots, and their key-prefix buckets: a changed row is replaced under its key."""
    keys: set[tuple[str, ...]] = set()
    prefixes: set[str] = set()
    width = bucket_width(t.rows)
    for path in paths:
        conn = _canon_reader(path)
        try:
            for i in range(0, len(rowids), 5000):
                batch = ",".join(map(str, rowids[i : i + 5000]))
                for row in conn.execute(
                    f"SELECT substr({walk.sqlite_key_exprs[0]}, 1, {width}), {walk.sqlite_keys}"
                    f" FROM {quote_ident(t.name)} WHERE rowid IN ({batch})"
                ):
                    prefixes.add(str(row[0]))
                    keys.add(tuple(map(str, row[1:])))
        finally:
            conn.close()
    return sorted(keys), sorted(prefixes)


def _replace_rows(
    path: Path, dsn: str, password: str, plan: Plan, tables: Sequence[Changed]
) -> dict[str, int]:
    """Replace the changed rows of staging with the source's, by rowid, by key or the
    whole table; one transaction with foreign keys deferred, so staging is never half
    caught up. Returns the rows written per table."""
    changed: dict[str, int] = {}
    with pg_connect(dsn, password) as pg:
        try:
            with pg.transaction():
                pg.execute("SET CONSTRAINTS ALL DEFERRED")
                for c in tables:
                    t = c.table
                    qt = f"{STAGE}.{quote_ident(t.name)}"
                    batches: list[tuple[str, Sequence[Any]]] = [("", ())]
                    if c.rowids is not None:
                        ident = next(col for col in t.columns if col.identity)
                        keys = list(c.rowids)
                        pg.execute(
                            f"DELETE FROM {qt} WHERE {quote_ident(ident.name)} = ANY(%s)",
                            (keys,),
                        )
                        batches = [
                            (" WHERE rowid IN (" + ",".join(map(str, keys[i : i + 5000])) + ")", ())
                            for i in range(0, len(keys), 5000)
                        ]
                    elif c.keys is not None:
                        walk = key_walk(t)
                        assert walk is not None
                        walked = list(c.keys)
                        pg.execute(catch_up_delete_sql(t, STAGE, walk), walk.pg_params(walked))
                        keyed, per = catch_up_where_sql(walk)
                        batches = [
                            (keyed(len(part)), walk.sqlite_params(part))
                            for part in (walked[i : i + per] for i in range(0, len(walked), per))
                        ]
                    else:
                        pg.execute(f"DELETE FROM {qt}")
                    rows = 0
                    src = open_readonly(path)
                    src.text_factory = bytes
                    try:
                        with pg.cursor().copy(copy_into(t, STAGE)) as cp:
                            for cond, params in batches:
                                cur = src.execute(copy_select(t) + cond, params)
                                while batch := cur.fetchmany(5000):
                                    cp.write(b"\n".join([r[0] for r in batch]) + b"\n")
                                    rows += len(batch)
                    finally:
                        src.close()
                    changed[t.name] = rows
        except psycopg.Error as exc:
            raise _pg_error(exc, password, "the catch-up copy failed") from exc
    refresh_identities(path, dsn, password, plan)
    return changed


def _recheck(
    dsn: str,
    password: str,
    t: PlanTable,
    digests: tuple[Digest, Digest],
    prefixes: Sequence[str],
    source: Path | None = None,
) -> TableReport:
    """A bucketed table after its catch-up: PostgreSQL digests the rewritten buckets
    again; the source's are those of the frozen snapshot, already known, unless they
    were taken from an earlier snapshot: then the `source` digests those buckets too."""
    walk = bucketed(t)
    assert walk is not None
    src, old = digests
    with pg_connect(dsn, password) as pg:
        fresh = _pg_buckets(pg, t, walk, STAGE, prefixes)
    dst = {b: v for b, v in (old.buckets or {}).items() if b not in prefixes} | fresh
    a, b = src, Digest.of_buckets(dst)
    if source is not None:
        with _decoding(source, t, None):
            now = _source_buckets(source, t, walk, only=prefixes)
        kept = {k: v for k, v in (src.buckets or {}).items() if k not in prefixes}
        a = Digest.of_buckets(kept | now)
    return TableReport(
        name=t.name,
        rows_source=a.rows,
        rows_target=b.rows,
        checksum_source=a.value,
        checksum_target=b.value,
        ok=a == b,
    )
