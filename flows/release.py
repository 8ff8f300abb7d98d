"""release: build → push → deploy (blue/green) → smoke → notify, undone on any failure.

Usage: `python -m flows.release VERSION [--environment staging] [--service congress-api]`
or the `release/<environment>` deployments in prefect.yaml.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, State
from prefect.transactions import transaction
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from flows.backup import load_database, offsite_copy, take_backup, verify_backup
from flows.common import (
    Context,
    current_flow_run,
    environment_lock,
    finish,
    kept_cutover_snapshot,
    load_context,
    recover,
    thaw_writes,
    timed,
)
from flows.migrate import Cutover, cutover_migration
from flows.verify import load_test
from tasks.backup import Tools
from tasks.build import build_image
from tasks.core import history, validate
from tasks.core.errors import ConfigError, ProxyError, ReleaseRolledBack, ShipyardError
from tasks.core.haproxy import backend_name
from tasks.core.models import Outcome, PhaseTiming, ReleaseRecord
from tasks.deploy.haproxy import HAProxyRuntime
from tasks.notify import send
from tasks.registry import find_released_image, push_image
from tasks.rollout import UndoReport, deploy
from tasks.smoke import smoke_check
from tasks.writeback import backup_source, write_back

PHASES = (
    "build-image",
    "push-image",
    "backup-database",
    "migrate",
    "deploy",
    "smoke-check",
    "load-test",
    "finalize",
)


@task(name="finalize", cache_policy=NO_CACHE)
def finalize(ctx: Context, deployment: Any) -> list[str]:
    """Prune containers beyond active + warm standby, and images beyond retention."""
    from tasks.registry import registry_api

    records = ctx.ledger.records()
    keep = history.retained_versions(records, ctx.service.keep_releases)
    keep_digests = {r.digest for r in records if r.version in keep and r.digest}
    # what another environment still retains stays too
    for env_records in _by_environment(ctx.ledger.all_environments()).values():
        kept = history.retained_versions(env_records, ctx.service.keep_releases)
        keep_digests |= {r.digest for r in env_records if r.version in kept and r.digest}
    try:
        removed = ctx.client().finalize(ctx.service, deployment, keep_digests)
    except Exception as exc:  # noqa: BLE001 - pruning is housekeeping; the release is already verified
        get_run_logger().warning(
            "pruning failed (the release stands; maintenance retries): %s", exc
        )
        return []
    if ctx.service.prune_registry:
        api, name = registry_api(ctx.service.image_repository, ctx.registry)
        for rec in history.prune_versions(records, ctx.service.keep_releases):
            if (
                rec.digest
                and rec.digest not in keep_digests
                and api.delete_manifest(name, rec.digest)
            ):
                removed.append(f"registry manifest {rec.version} ({rec.digest})")
    if removed:
        get_run_logger().info("pruned: %s", "; ".join(removed))
    return removed


def _by_environment(records: list[ReleaseRecord]) -> dict[str, list[ReleaseRecord]]:
    out: dict[str, list[ReleaseRecord]] = {}
    for r in records:
        out.setdefault(r.environment, []).append(r)
    return out


def _hook_context(flow_run: FlowRun) -> Context | None:
    p = flow_run.parameters
    try:
        return load_context(
            p["environment"], p["service"], p.get("target"), p.get("registry"), p.get("notifier")
        )
    except Exception as exc:  # noqa: BLE001 - hooks never raise
        get_run_logger_safe().error("hook cannot load blocks: %s", exc)
        return None


def _cutover_inputs(
    ctx: Any, migrate_from: str | None, database: str | None
) -> PostgresDatabase | None:
    """Checked before any side effect: a cutover needs its file, its database and a freeze map."""
    if migrate_from is None and database is None:
        return None
    if migrate_from is None or database is None:
        raise ConfigError("migrate_from", "migrate_from and database go together")
    if not Path(migrate_from).is_file():
        raise ConfigError("migrate_from", f"{migrate_from} does not exist or is not a file")
    if not ctx.target.freeze_map:
        raise ConfigError(
            "target.freeze_map",
            "a zero-loss cutover freezes writes at the proxy; set the HAProxy freeze map",
        )
    try:
        db: PostgresDatabase = PostgresDatabase.load(database)  # type: ignore[assignment]
    except ValueError as exc:
        raise ConfigError("database", f"no Shipyard Postgres Database block {database!r}") from exc
    db.validate_target()
    return db


def _backup_inputs(
    ctx: Any, backup_first: bool, database: str | None
) -> tuple[PostgresDatabase, Path, Tools] | None:
    """Checked before any side effect: which database to back up (the cutover's, or the
    one the environment already runs on), where to, and with which client tools."""
    if not backup_first:
        return None
    name = database or history.database(ctx.ledger.records())
    if name is None:
        raise ConfigError(
            "backup_first",
            f"{ctx.environment!r} does not run on PostgreSQL (no cutover recorded) and no"
            " database was given; its SQLite file needs no pg_dump",
        )
    return load_database(name)


def backup_database(db: PostgresDatabase, directory: Path, tools: Tools, label: str) -> str:
    """A verified backup before the new version touches the data: the release's way
    back for the data, as the previous container is for the code. Never restored
    automatically: writes taken since would be lost (the restore flow does it)."""
    manifest = verify_backup(db, directory, tools, take_backup(db, directory, tools, label))
    if db.offsite_bucket:
        manifest = offsite_copy(db, directory, manifest)
    return manifest.backup_id


@dataclass
class WriteBackGuard:
    """A cutover release thawed writes onto PostgreSQL before its load test; should the
    release be undone, the deploy's rollback hook calls this first. Writes are frozen
    again, what PostgreSQL took is written back into the SQLite file, and only then may
    the old version take traffic (True). If the write-back fails, writes are thawed on
    the new version, which keeps serving (False): going back would lose them."""

    ctx: Context
    release_id: str
    sqlite_path: str
    database: PostgresDatabase
    cut: Cutover
    freeze: Callable[[], None]
    unfreeze: Callable[[], None]
    drain_s: float = 0.5
    kept: str | None = None  # why the new version keeps serving
    rows: int | None = None  # rows written back
    backup: str | None = None  # the copy of the SQLite file taken before writing back
    refrozen_at: float | None = None  # writes frozen again for the write-back
    rethawed_at: float | None = None  # and thawed, the old version serving
    frozen_s: float = 0.0  # how long a failed write-back kept them frozen

    def __deepcopy__(self, memo: dict[int, Any]) -> WriteBackGuard:
        """Prefect hands hooks a deep copy of what the transaction stores: the guard is
        shared instead, so the flow sees what the hook did."""
        return self

    def thaw(self) -> None:
        """Writes flow again (the deploy's undo calls it once the old version has traffic)."""
        self.unfreeze()
        if self.rethawed_at is None:
            self.rethawed_at = time.monotonic()

    def __call__(self) -> bool:
        log = get_run_logger_safe()
        started = time.monotonic()
        try:
            copy = backup_source(
                Path(self.sqlite_path), self.ctx.ledger.dir / "backups", self.release_id[:8]
            )
            self.backup = str(copy)
            started = time.monotonic()
            self.freeze()
            self.refrozen_at = time.monotonic()
            time.sleep(self.drain_s)  # writes already inside the new version finish
            dsn, password = self.database.get_client()
            done = write_back(
                Path(self.sqlite_path),
                dsn,
                password,
                self.cut.plan,
                self.database.target_schema,
                since=self.cut.since,
            )
        except Exception as exc:  # noqa: BLE001 - called from a rollback hook, which never raises
            self.kept = f"{type(exc).__name__}: {exc}"
            log.error("the write-back failed, the new version keeps serving: %s", self.kept)
            try:
                self.thaw()
            except Exception as thaw_exc:  # noqa: BLE001 - the recover flow thaws them
                log.error("writes are still frozen (%s); the recover flow thaws them", thaw_exc)
            self.frozen_s = round(time.monotonic() - started, 3)
            return False
        self.rows = sum(done.rows.values())
        if done.not_written:
            log.warning(
                "not written back (the source never had them; their data stays in PostgreSQL): %s",
                ", ".join(done.not_written),
            )
        rec = self.ctx.ledger.get(self.release_id)
        if rec is not None:  # a run killed from here on is recovered as any other
            self.ctx.ledger.write(
                rec.with_changes(writes_thawed=False, written_back=self.rows, backup=self.backup)
            )
        log.warning(
            "wrote %d row(s) PostgreSQL took since the thaw back into %s in %.2f s"
            " (found by %s): %s",
            self.rows,
            self.sqlite_path,
            done.seconds,
            done.found_by,
            done.rows,
        )
        return True


def get_run_logger_safe() -> Any:
    from prefect.logging import get_logger

    return get_logger("shipyard.release")


def on_failure(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Failures inside the transaction are recorded by the flow; this covers the rest."""
    ctx = _hook_context(flow_run)
    if ctx is None:
        return
    rec = ctx.ledger.get(str(flow_run.id))
    if rec is None:
        # Failed before the release started (validation, lock): nothing to undo, still tell people.
        rec = ReleaseRecord(
            release_id=str(flow_run.id),
            service=ctx.service.name,
            environment=ctx.environment,
            version=str(flow_run.parameters.get("version")),
            flow_run_id=str(flow_run.id),
            flow_run_name=flow_run.name,
            outcome=Outcome.FAILED,
            failed_step="lock" if "locked" in (state.message or "") else "validate",
            reason=state.message,
        )
        send(ctx.notifier, rec, ctx.secrets())


def _abandon(flow_run: FlowRun, outcome: Outcome, reason: str) -> None:
    ctx = _hook_context(flow_run)
    if ctx is None:
        return
    try:
        rec = ctx.ledger.get(str(flow_run.id))
        if rec is not None and rec.outcome == Outcome.IN_PROGRESS:
            others = [
                r
                for r in history.in_progress(ctx.ledger.records())
                if r.release_id != rec.release_id
            ]
            if others:
                get_run_logger_safe().error(
                    "another release is in progress; leaving recovery to it"
                )
                return
            recover(ctx, [rec], outcome, reason)
    except Exception as exc:  # noqa: BLE001 - hooks never raise
        get_run_logger_safe().error("recovery after %s failed: %s", outcome.value, exc)


def on_crashed(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    _abandon(flow_run, Outcome.CRASHED, f"flow run crashed: {state.message}")


def on_cancellation(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    _abandon(flow_run, Outcome.CANCELLED, f"flow run cancelled: {state.message}")


@flow(
    name="release",
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    on_cancellation=[on_cancellation],
    log_prints=True,
)
def release(
    version: str,
    environment: str = "staging",
    service: str = "congress-api",
    target: str | None = None,
    registry: str | None = None,
    notifier: str | None = None,
    revision: str | None = None,
    trigger: str = "manual",
    lock_timeout_s: float = 600.0,
    smoke_deadline_s: float = 20.0,
    rebuild: bool = False,
    migrate_from: str | None = None,
    database: str | None = None,
    thaw_before_load: bool = True,
    backup_first: bool = False,
) -> ReleaseRecord:
    """Release `version` of `service` to `environment`; the previous version keeps serving on failure.

    Block names: `service` (Shipyard Service), `target` (Shipyard Docker Host,
    defaults to the environment name), `registry` (Docker Registry
    Credentials), `notifier` ("<block-type-slug>/<name>", any notification block).
    A version already in the registry is promoted (same digest), not rebuilt,
    unless `rebuild` is set.

    With `migrate_from` (the SQLite file the running version writes) and
    `database` (a Shipyard Postgres Database block), the release moves the
    data to PostgreSQL with a zero-loss cutover: bulk copy while the old
    version serves, then writes are frozen at the proxy (503 + Retry-After),
    the last changes are caught up, validated and swapped in, the new version
    starts on PostgreSQL, and writes are thawed once it passed its smoke checks.
    Its load test then runs with writes flowing (`thaw_before_load`); should it
    fail, writes are frozen again, what PostgreSQL took is written back into the
    SQLite file, and the old version returns on it. If that write-back fails,
    the new version keeps serving (outcome `kept`): going back would lose writes.
    With `thaw_before_load` off, the freeze lasts through the load test instead.

    `backup_first` takes a verified pg_dump of the PostgreSQL database the
    environment runs on (or, with a cutover, the one the data moves into) before
    anything is deployed; its id goes into the release record. A failed release
    puts the previous version back but never restores the data by itself: the
    `restore` flow does that, on purpose.
    """
    validate.version(version)
    ctx = load_context(environment, service, target, registry, notifier)
    db = _cutover_inputs(ctx, migrate_from, database)
    if db is not None:
        history.check_cutover(ctx.ledger.records(), environment)
    backup_to = _backup_inputs(ctx, backup_first, database if db is not None else None)
    run_id, run_name = current_flow_run()
    logger = get_run_logger()
    with environment_lock(environment, lock_timeout_s, run_id):
        stale = history.in_progress(ctx.ledger.records())
        if stale:
            logger.warning(
                "recovering after %d release(s) that died: %s",
                len(stale),
                [r.version for r in stale],
            )
            recover(
                ctx,
                stale,
                Outcome.CRASHED,
                "the flow process died (no hooks ran); recovered by the next release",
            )  # which thaws writes too
        else:
            thaw_writes(ctx)  # a release killed after recording success, before its thaw
        if db is not None:  # again: the recovery may have kept a cutover that died
            history.check_cutover(ctx.ledger.records(), environment)
        record = ctx.ledger.write(
            ReleaseRecord(
                release_id=run_id,
                service=ctx.service.name,
                environment=environment,
                version=version,
                trigger=trigger,
                flow_run_id=run_id,
                flow_run_name=run_name,
                image=f"{ctx.service.image_repository}:{version}",
                database=database if db is not None else None,
                source=migrate_from if db is not None else None,
            )
        )
        progress = cast(
            UUID, create_progress_artifact(0.0, description=f"release {version} to {environment}")
        )
        phases: list[PhaseTiming] = []
        switched = False
        frozen_at: float | None = None
        thawed_at: float | None = None
        cut: Cutover | None = None
        guard: WriteBackGuard | None = None
        runtime = HAProxyRuntime(ctx.target.proxy_admin)
        backend = backend_name(ctx.service.name, environment)
        freeze_map = ctx.target.freeze_map or ""

        def thaw() -> None:
            runtime.thaw_writes(freeze_map, backend)

        # the snapshot a cutover swaps in, kept for a write-back until the release ends
        # (under the environment's lock: one a killed run left was used by the recovery)
        kept_snapshot = kept_cutover_snapshot(ctx)
        shutil.rmtree(kept_snapshot, ignore_errors=True)

        def step(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
            nonlocal record
            record = ctx.ledger.write(record.with_changes(current_step=name, phases=tuple(phases)))
            result = timed(phases, name, fn, *args, **kw)
            update_progress_artifact(progress, 100.0 * (PHASES.index(name) + 1) / len(PHASES))
            return result

        report = UndoReport()
        try:
            with transaction() as txn:
                txn.set("undo_report", report)  # the deploy's rollback hook fills it
                pushed = None
                if not rebuild:
                    pushed = find_released_image(
                        ctx.service.image_repository, version, ctx.registry
                    )
                if pushed is None:
                    built = step(
                        "build-image",
                        build_image,
                        ctx.service,
                        version,
                        ctx.target.engine_url,
                        revision,
                    )
                    pushed = step(
                        "push-image", push_image, built, ctx.target.engine_url, ctx.registry
                    )
                record = ctx.ledger.write(
                    record.with_changes(digest=pushed.digest, image=pushed.reference)
                )
                if backup_to is not None:
                    taken = step(
                        "backup-database",
                        backup_database,
                        *backup_to,
                        f"before release {version} to {environment}",
                    )
                    record = ctx.ledger.write(record.with_changes(database_backup=taken))
                spec = ctx.service
                if db is not None and migrate_from is not None:
                    cut = step(
                        "migrate",
                        cutover_migration,
                        migrate_from,
                        db,
                        lambda: runtime.freeze_writes(freeze_map, backend),
                        thaw,
                        keep_snapshot=kept_snapshot,
                    )
                    frozen_at = cut.frozen_at
                    record = ctx.ledger.write(
                        record.with_changes(
                            freeze_work_s=cut.freeze_work_s,
                            caught_up_by=cut.caught_up_by,
                            horizon=cut.since.horizon if cut.since else None,
                        )
                    )
                    spec = ctx.service.model_copy(
                        update={
                            "secret_env": {
                                **ctx.service.secret_env,
                                "DATABASE_URL": SecretStr(db.dsn_for_service()),
                            }
                        }
                    )
                deployment = step(
                    "deploy", deploy, ctx.target, spec, version, pushed, run_id, ctx.registry
                )
                switched = True
                step(
                    "smoke-check",
                    smoke_check,
                    deployment.url,
                    ctx.service,
                    version,
                    smoke_deadline_s,
                )
                policy = ctx.service.load_policy
                if policy is not None and cut is not None and thaw_before_load:
                    assert migrate_from is not None and db is not None
                    guard = WriteBackGuard(
                        ctx,
                        run_id,
                        migrate_from,
                        db,
                        cut,
                        lambda: runtime.freeze_writes(freeze_map, backend),
                        thaw,
                    )
                    txn.set("write_back", guard)  # the deploy's rollback hook calls it
                    record = ctx.ledger.write(record.with_changes(writes_thawed=True))
                    thaw()
                    thawed_at = time.monotonic()
                    logger.info(
                        "writes thawed after a %.2f s freeze, before the load test",
                        thawed_at - (frozen_at or thawed_at),
                    )
                if policy is not None:
                    step(
                        "load-test",
                        load_test,
                        deployment.url + policy.path,
                        policy.thresholds,
                        policy.duration_s,
                        policy.concurrency if policy.rate is None else None,
                        policy.rate,
                    )
            if txn.is_rolled_back():
                raise ReleaseRolledBack(
                    "the release transaction was rolled back after a failed attempt"
                )
        except Exception as exc:
            shutil.rmtree(kept_snapshot, ignore_errors=True)
            if frozen_at is not None:
                try:
                    thaw()  # the old version takes writes again, on its own database
                except ShipyardError as proxy_exc:  # recording the failure comes first
                    logger.error(
                        "writes are still frozen (%s); the recover flow thaws them", proxy_exc
                    )
            failed = (
                getattr(exc, "step", None)
                if isinstance(exc, ShipyardError)
                else record.current_step
            )
            previous = deployment.previous.version if switched and deployment.previous else None
            outcome, serves, rolled_back_to = history.after_failure(
                version, switched, previous, guard.kept if guard is not None else None, report.undo
            )
            reason = f"{type(exc).__name__}: {exc}" + (f"; {serves}" if serves else "")
            finish(
                ctx,
                record,
                outcome=outcome,
                failed_step=failed or record.current_step,
                reason=reason,
                phases=tuple(phases),
                rolled_back_to=rolled_back_to,
                # the new version serves on the cutover's database, taking writes
                writes_thawed=outcome == Outcome.KEPT and cut is not None,
                written_back=guard.rows if guard is not None else None,
                backup=guard.backup if guard is not None else None,
                write_freeze_s=_freeze_s(frozen_at, thawed_at, guard),
            )
            raise
        # Succeeded is recorded before the thaw: once writes reach PostgreSQL the old
        # version (on SQLite) must never be put back, and a run killed right after the
        # thaw would otherwise be "in progress" and rolled back by the next recovery.
        # Killed before the thaw instead, the freeze is lifted by that recovery.
        record = ctx.ledger.write(
            record.with_changes(
                outcome=Outcome.SUCCEEDED,
                phases=tuple(phases),
                current_step="finalize",
                writes_thawed=False,
                write_freeze_s=_freeze_s(frozen_at, thawed_at, guard),
            )
        )
        if frozen_at is not None and thawed_at is None:
            try:
                thaw()
            except ShipyardError as exc:
                raise ProxyError(
                    f"{version} is released, but writes to it are still frozen: {exc}",
                    hint="run the recover flow (the maintenance schedule runs it too): it thaws them",
                ) from exc
            logger.info("writes thawed after a %.2f s freeze", record.write_freeze_s)
        shutil.rmtree(kept_snapshot, ignore_errors=True)
        step("finalize", finalize, ctx, deployment)
        return finish(ctx, record, phases=tuple(phases), current_step=None)


def _freeze_s(
    frozen_at: float | None, thawed_at: float | None, guard: WriteBackGuard | None
) -> float | None:
    """How long writes were refused: the cutover's freeze, plus a write-back's (until now,
    when the old version is back and its writes are about to thaw)."""
    if frozen_at is None:
        return None
    now = time.monotonic()
    again = 0.0
    if guard is not None and guard.kept is not None:
        again = guard.frozen_s
    elif guard is not None and guard.refrozen_at is not None:
        again = (guard.rethawed_at or now) - guard.refrozen_at
    return round((thawed_at or now) - frozen_at + again, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a release locally (no deployment needed).")
    parser.add_argument("version")
    parser.add_argument("--environment", default="staging")
    parser.add_argument("--service", default="congress-api")
    parser.add_argument("--target")
    parser.add_argument("--registry")
    parser.add_argument("--notifier")
    parser.add_argument("--trigger", default="cli")
    parser.add_argument("--lock-timeout", type=float, default=600.0)
    parser.add_argument(
        "--migrate-from", help="SQLite file the running version writes: cut over to PostgreSQL"
    )
    parser.add_argument("--database", help="Shipyard Postgres Database block to cut over to")
    parser.add_argument(
        "--freeze-through-load",
        action="store_true",
        help="keep writes frozen through the load test (no write-back should it fail)",
    )
    parser.add_argument(
        "--backup-first",
        action="store_true",
        help="take a verified pg_dump of the environment's PostgreSQL database before deploying",
    )
    args = parser.parse_args(argv)
    try:
        record = release(
            args.version,
            environment=args.environment,
            service=args.service,
            target=args.target,
            registry=args.registry,
            notifier=args.notifier,
            trigger=args.trigger,
            lock_timeout_s=args.lock_timeout,
            migrate_from=args.migrate_from,
            database=args.database,
            thaw_before_load=not args.freeze_through_load,
            backup_first=args.backup_first,
        )
    except ShipyardError as exc:
        print(f"release failed: {exc}", file=sys.stderr)
        return 1
    print(record.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
