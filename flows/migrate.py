"""migrate: SQLite → PostgreSQL, planned, loaded into staging, validated, swapped atomically.

`python -m flows.migrate SQLITE_PATH POSTGRES_DSN [--dry-run] [--json]
[--accept KEY ...] [--policy TABLE.COLUMN=POLICY ...]` runs this flow locally;
exit code 0 only if validation passed (or, for a dry run, nothing blocks).

Order matters for safety: every input is validated, then the source is
snapshotted and the plan built without touching the target; blocking findings
stop here. Only then is the staging schema written, and only a passed
validation lets `swap` change what the target serves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, SecretStr

from blocks.postgres import PostgresDatabase, check_policies
from tasks import migrate as m
from tasks.core.errors import ConfigError, MigrationError
from tasks.core.migration import MigrationOptions, Plan, Since, plan_markdown
from tasks.core.sqlmap import POLICIES, Finding

#: Set by the command line to draw a rich progress bar: (done, total) -> None.
console_progress: Callable[[int, int], None] | None = None


class ValidationFailed(MigrationError):
    """Source and target differ; nothing was swapped into place."""


def validation_failed(validation: m.Validation) -> ValidationFailed:
    """One message for the migrate flow and the release cutover: what differs, and where."""
    bad = [
        f"{t.name} (differing keys: {', '.join(map(str, t.differing_keys))})"
        if t.differing_keys
        else t.name
        for t in validation.tables
        if not t.ok
    ] + [f"view {v.name}" for v in validation.views if not v.ok]
    return ValidationFailed(
        f"validation failed for {', '.join(bad)}; the target is unchanged",
        hint="see the migration-validation artifact",
    )


class MigrationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    target_schema: str
    dry_run: bool
    tables: dict[str, int]  # rows per table
    rows: int
    seconds: float
    phases: dict[str, float]
    findings: tuple[Finding, ...]
    blocking: tuple[str, ...]
    validation: m.Validation | None
    passed: bool
    swapped: bool


def _options(accept: list[str], policies: dict[str, str], db: PostgresDatabase) -> MigrationOptions:
    """The block's decisions, with the run's own added (a run's policy wins for its column)."""
    check_policies(policies)
    return MigrationOptions(
        accept=frozenset([*db.accept, *accept]),
        policies={**db.policies, **policies},
        target_schema=db.target_schema,
        datetimes_utc=db.datetimes_utc,
    )


@task(name="plan-migration", cache_policy=NO_CACHE)
def plan_migration(
    sqlite_path: str, work: str, options: MigrationOptions, pool: Executor
) -> tuple[str, Plan]:
    """Snapshot the source (read-only), introspect and scan it, decide everything."""
    snap = m.snapshot(Path(sqlite_path), Path(work))
    plan = m.make_plan(snap, options, pool)
    create_markdown_artifact(
        key="migration-plan",
        markdown=plan_markdown(plan, Path(sqlite_path).name),
        description="SQLite → PostgreSQL plan",
    )
    return str(snap), plan


@task(name="load-staging", cache_policy=NO_CACHE)
def load_staging(
    snapshot: str, database: PostgresDatabase, plan: Plan, pool: Executor
) -> Callable[..., m.Side]:
    """Staging tables, then every table's rows by COPY. The source side of the
    validation (digests, view results) is queued behind the copy on the same
    processes and runs on while keys are built; the returned call collects it."""
    dsn, password = database.get_client()
    path = Path(snapshot)
    m.prepare_stage(dsn, password, plan, database.target_schema)
    progress = m.Progress(total=plan.total_rows)
    artifact = create_progress_artifact(
        progress=0.0, key="migration-progress", description="rows copied into staging"
    )
    state = {"last": -1.0}

    def tick() -> None:
        pct = 100.0 * progress.done / max(1, progress.total)
        if pct - state["last"] >= 1 or (pct == 100 and state["last"] < 100):
            update_progress_artifact(artifact_id=artifact, progress=pct)  # type: ignore[arg-type]
            state["last"] = pct
        if console_progress is not None:
            console_progress(progress.done, progress.total)

    jobs = m.start_copy(path, dsn, password, plan, pool)
    sums = m.start_source_side(path, plan, pool, jobs)  # queued behind the copy
    try:
        m.finish_copy(jobs, progress, tick)
    except Exception:
        sums(cancel=True)
        raise
    tick()
    return sums


@task(name="build-keys", cache_policy=NO_CACHE)
def build_keys(database: PostgresDatabase, plan: Plan, snapshot: str) -> m.Side:
    """Keys, constraints, foreign keys and views of staging, with the target side of
    the validation taken as soon as each table's keys exist."""
    dsn, password = database.get_client()
    parts = m.digest_parts(Path(snapshot), plan)
    return m.finish_target(dsn, password, plan, parts, views=True)


@task(name="validate-migration", cache_policy=NO_CACHE)
def validate_migration(
    snapshot: str,
    database: PostgresDatabase,
    plan: Plan,
    pool: Executor,
    source: Callable[..., m.Side] | None,
    target: m.Side | None = None,
) -> m.Validation:
    dsn, password = database.get_client()
    v = m.validate(Path(snapshot), dsn, password, plan, pool, source, target=target)
    rows = [
        {
            "object": t.name,
            "rows (SQLite)": t.rows_source,
            "rows (PostgreSQL)": t.rows_target,
            "checksums": "equal" if t.checksum_source == t.checksum_target else "DIFFER",
            "differing keys": ", ".join(map(str, t.differing_keys)),
            "verdict": "pass" if t.ok else "FAIL",
        }
        for t in v.tables
    ] + [
        {
            "object": f"view {x.name}",
            "rows (SQLite)": x.rows_source,
            "rows (PostgreSQL)": x.rows_target,
            "checksums": "results equal" if x.ok else "results DIFFER",
            "differing keys": "",
            "verdict": "pass" if x.ok else "FAIL",
        }
        for x in v.views
    ]
    create_table_artifact(
        key="migration-validation",
        table=rows,
        description="validation: " + ("passed" if v.passed else "FAILED"),
    )
    return v


@task(name="swap-into-place", cache_policy=NO_CACHE)
def swap_into_place(database: PostgresDatabase, plan: Plan) -> list[str]:
    dsn, password = database.get_client()
    return m.swap(dsn, password, plan, database.target_schema)


def _resolve(database: PostgresDatabase | str) -> PostgresDatabase:
    if isinstance(database, str):
        try:
            loaded: PostgresDatabase = PostgresDatabase.load(database)  # type: ignore[assignment]
        except ValueError as exc:
            raise ConfigError("database", f"no PostgresDatabase block named {database!r}") from exc
        database = loaded
    database.validate_target()
    return database


@flow(name="migrate")
def migrate(
    sqlite_path: str,
    database: PostgresDatabase | str,
    dry_run: bool = False,
    accept: list[str] | None = None,
    policies: dict[str, str] | None = None,
    workers: int = 0,
) -> MigrationReport:
    """Migrate a SQLite file into PostgreSQL; the target changes only if validation passed."""
    log = get_run_logger()
    started = time.perf_counter()
    phases: dict[str, float] = {}
    db = _resolve(database)
    options = _options(accept or [], policies or {}, db)
    if not Path(sqlite_path).is_file():
        raise ConfigError("sqlite_path", f"{sqlite_path} does not exist or is not a file")
    workers = workers or m.cores()
    work = m.workdir()
    with ExitStack() as stack:
        pool = stack.enter_context(m.sqlite_processes(workers))
        stack.callback(shutil.rmtree, work, ignore_errors=True)

        @contextmanager
        def phase(name: str) -> Iterator[None]:
            t0 = time.perf_counter()
            yield
            phases[name] = round(time.perf_counter() - t0, 3)

        def finished(validation: m.Validation | None, swapped: bool) -> MigrationReport:
            return MigrationReport(
                **report,
                seconds=round(time.perf_counter() - started, 3),
                phases=phases,
                validation=validation,
                passed=True,
                swapped=swapped,
            )

        with phase("plan"):
            snap, plan = plan_migration(sqlite_path, str(work), options, pool)
        report: dict[str, Any] = dict(
            source=sqlite_path,
            target_schema=db.target_schema,
            dry_run=dry_run,
            tables={t.name: t.rows for t in plan.tables},
            rows=plan.total_rows,
            findings=plan.findings,
            blocking=tuple(f.key for f in plan.blocking),
        )
        if plan.blocking:
            raise m.blocking_error(plan)
        if dry_run:
            return finished(None, swapped=False)
        dsn, password = db.get_client()
        with m.migration_lock(dsn, password):
            sums: Callable[..., m.Side] | None = None
            try:
                with phase("copy"):
                    sums = load_staging(snap, db, plan, pool)
                with phase("keys"):
                    target = build_keys(db, plan, snap)
                with phase("validate"):
                    validation = validate_migration(snap, db, plan, pool, sums, target)
                if not validation.passed:
                    raise validation_failed(validation)
                with phase("swap"):
                    swap_into_place(db, plan)
            except Exception:
                if sums is not None:
                    sums(cancel=True)
                m.drop_stage(dsn, password)
                raise
        log.info(
            "migrated %d rows in %d tables: validation passed, swapped into %s",
            plan.total_rows,
            len(plan.tables),
            db.target_schema,
        )
        return finished(validation, swapped=True)


def _temporary_server_settings() -> Any:
    """Without a Prefect API the run starts a temporary local server. On a fresh
    PREFECT_HOME its database migrations outlast Prefect's 20 s start-up wait on a
    slow machine (measured: the run failed "Timed out while attempting to connect
    to ephemeral Prefect API server"), and its telemetry heartbeat can race the
    run's writes to its SQLite file ("database is locked" tracebacks in a run that
    is fine). A one-off local run waits longer and sends no telemetry."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    settings = get_current_settings()
    if settings.api.url is not None:
        return nullcontext()
    return temporary_settings(
        updates={
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: max(
                120, settings.server.ephemeral.startup_timeout_seconds
            ),
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.migrate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sqlite_path")
    parser.add_argument("postgres_dsn")
    parser.add_argument(
        "--dry-run", action="store_true", help="plan only; the target is not touched"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="KEY",
        help="accept a blocking finding by key",
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="TABLE.COLUMN=POLICY",
        help=f"one of {sorted(POLICIES)}",
    )
    parser.add_argument("--schema", default="public", help="target schema")
    parser.add_argument(
        "--datetimes-utc",
        action="store_true",
        help="datetimes without a zone are UTC instants: timestamptz (Django with USE_TZ)",
    )
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    policies = dict(p.split("=", 1) for p in args.policy if "=" in p)
    db = PostgresDatabase(
        dsn=SecretStr(args.postgres_dsn),
        target_schema=args.schema,
        datetimes_utc=args.datetimes_utc,
    )
    global console_progress
    from rich.progress import Progress

    bar = Progress(disable=args.json or not sys.stderr.isatty(), transient=True)
    task_id = bar.add_task("copying rows", total=None)
    lock = threading.Lock()

    def show(done: int, total: int) -> None:
        with lock:
            bar.update(task_id, completed=done, total=total)

    console_progress = show
    report: MigrationReport | None = None
    error: str | None = None
    with bar, _temporary_server_settings():
        try:
            report = migrate(
                args.sqlite_path,
                db,
                dry_run=args.dry_run,
                accept=args.accept,
                policies=policies,
                workers=args.workers,
            )
        except Exception as exc:  # noqa: BLE001 - the command reports every failure as JSON or text
            error = f"{type(exc).__name__}: {exc}"
    if args.json:
        out = report.model_dump(mode="json") if report else {"passed": False, "error": error}
        print(json.dumps(out))
    elif report is not None:
        if args.dry_run:
            print(
                f"plan: {report.rows} rows in {len(report.tables)} tables; {len(report.findings)} finding(s)"
            )
            for f in report.findings:
                print(f"  {f.severity:7} {f.key}: {f.message}")
        else:
            print(
                f"migrated {report.rows} rows in {report.seconds:.1f} s; validation {'passed' if report.passed else 'FAILED'}"
            )
    else:
        print(f"migration failed: {error}", file=sys.stderr)
    return 0 if report is not None and report.passed else 1


if __name__ == "__main__":
    sys.exit(main())


class Cutover(BaseModel):
    """What a release's database cutover did; writes stay frozen until the release thaws them."""

    model_config = ConfigDict(frozen=True)

    rows_bulk: int
    rows_caught_up: dict[str, int]
    bulk_s: float
    frozen_at: float  # time.monotonic() when writes were frozen
    # how the frozen snapshot's changes were found: "pages" (compared with the bulk
    # copy's snapshot) or "digests" (of every table, when the pages cannot tell)
    caught_up_by: str
    freeze_work_s: float  # from the freeze to the swap: the catch-up and final validation
    validation: m.Validation
    plan: m.Plan  # what was migrated: how to write PostgreSQL's rows back, should the release fail
    since: Since | None = None  # what PostgreSQL held at the swap, if its snapshot was kept


def plan_again(sqlite_path: str, database: PostgresDatabase) -> m.Plan:
    """The plan a cutover made, made again from its SQLite file, for a write-back after
    the release died (its plan died with it). The file is what the cutover caught up
    from: the old version took no write since. A plan that came out different could
    only fail the write-back's own check, which leaves the file as it was."""
    work = m.workdir()
    try:
        with m.sqlite_processes(m.cores()) as pool:
            snap = m.snapshot(Path(sqlite_path), work)
            return m.make_plan(snap, _options([], {}, database), pool)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@task(name="migrate", cache_policy=NO_CACHE)
def cutover_migration(
    sqlite_path: str,
    database: PostgresDatabase,
    freeze: Callable[[], None],
    thaw: Callable[[], None],
    drain_s: float = 0.5,
    keep_snapshot: Path | None = None,
) -> Cutover:
    """Zero-loss cutover: bulk copy while the old version serves, then freeze writes,
    catch up, validate and swap; on any failure writes are thawed and the target is untouched.

    Writes refused during the freeze get 503 + Retry-After and were never
    acknowledged, so no write accepted by the old version can be lost.
    `keep_snapshot` (a directory) keeps the snapshot that was swapped in, for a
    write-back to find PostgreSQL's later writes from (see `Cutover.since`).
    """
    log = get_run_logger()
    dsn, password = database.get_client()
    workers = m.cores()
    work = m.workdir()
    with ExitStack() as stack:
        pool = stack.enter_context(m.sqlite_processes(workers))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        started = time.perf_counter()
        snap = m.snapshot(Path(sqlite_path), work)
        plan = m.make_plan(snap, _options([], {}, database), pool)
        if plan.blocking:
            raise m.blocking_error(plan)
        with m.migration_lock(dsn, password):
            frozen = False
            try:
                m.prepare_stage(dsn, password, plan, database.target_schema)
                progress = m.copy_all(snap, dsn, password, plan, pool)
                m.build_keys(dsn, password, plan)
                # validated while the old version still takes writes: a bad copy fails
                # here without a freeze, and the freeze only re-reads what changed
                kept: dict[m.Part, tuple[m.Digest, m.Digest]] = {}
                verified = m.validate(snap, dsn, password, plan, pool, keep=kept)
                if not verified.passed:
                    raise validation_failed(verified)
                bulk_s = time.perf_counter() - started
                frozen = True
                freeze()
                frozen_at = time.monotonic()
                log.info("writes frozen after a %.1f s bulk copy of %d rows", bulk_s, progress.done)
                time.sleep(drain_s)  # writes already inside the old version finish
                final = keep_snapshot or work / "final"
                final.mkdir(parents=True, exist_ok=True)
                snap2 = m.snapshot(Path(sqlite_path), final)
                caught = m.catch_up_from_pages(
                    snap, snap2, dsn, password, plan, pool, verified, kept
                ) or m.catch_up(snap2, dsn, password, plan, pool)  # None: the schema changed
                changed = caught.rows
                validation = m.validate_caught_up(snap2, dsn, password, plan, pool, caught)
                if not validation.passed:
                    raise validation_failed(validation)
                horizon = m.write_horizon(dsn, password)
                m.swap(dsn, password, plan, database.target_schema)
                work_s = time.monotonic() - frozen_at
            except Exception:
                if frozen:
                    thaw()
                m.drop_stage(dsn, password)
                raise
        log.info(
            "caught up %s (found by %s); validation passed; swapped into place %.2f s after the freeze",
            changed,
            caught.by,
            work_s,
        )
        return Cutover(
            rows_bulk=progress.done,
            rows_caught_up=changed,
            caught_up_by=caught.by,
            freeze_work_s=round(work_s, 3),
            since=Since(horizon=horizon, snapshot=str(snap2))
            if keep_snapshot is not None
            else None,
            bulk_s=round(bulk_s, 3),
            frozen_at=frozen_at,
            validation=validation,
            plan=plan,
        )
