"""restore: put a Shipyard Postgres Database back as one of its backups was.

The seeds' database rollback is "restore from backup". Writes made since that
backup are lost by design, so the flow first takes (and verifies) a backup of
the database as it is now: a restore can itself be undone by restoring that
one. The restore then runs in one transaction that ends with every table's
figures checked against the backup's; any failure leaves the database as it was.

It takes ACCESS EXCLUSIVE locks on every table it replaces. Given the
environment, it freezes the service's writes at the proxy for the safety backup
and the restore (reads go on, waiting at most for the restore's commit); behind
a lock it cannot get it fails after `lock_timeout_s` rather than queue every
query behind it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from blocks.postgres import PostgresDatabase
from flows.backup import (
    database_name,
    load_database,
    prune_backups,
    take_backup,
    verify_backup,
)
from flows.common import (
    WRITE_BACK_DRAIN_S,
    Context,
    current_flow_run,
    environment_lock,
    load_context,
    load_notifier,
)
from tasks import backup as b
from tasks import offsite
from tasks.core.backup import BackupManifest
from tasks.core.errors import ConfigError
from tasks.core.haproxy import backend_name
from tasks.core.messages import backup_notification
from tasks.deploy.haproxy import HAProxyRuntime
from tasks.notify import send_text


@task(name="restore-backup", cache_policy=NO_CACHE)
def restore_backup(
    db: PostgresDatabase,
    directory: Path,
    tools: b.Tools,
    manifest: BackupManifest,
    lock_timeout_s: float,
) -> b.Restored:
    dsn, password = db.get_client()
    return b.restore_backup(manifest, directory, dsn, password, tools, lock_timeout_s)


@contextmanager
def _writes_frozen(ctx: Context | None, drain_s: float) -> Iterator[None]:
    """Writes refused at the proxy (503 + Retry-After) from before the safety backup
    until the restore committed: a write acknowledged in between would be in neither
    the safety backup nor the restored database. Reads go on. A kill inside leaves
    the freeze for `recover`/`maintenance`, which thaw it under the same lock."""
    if ctx is None:
        yield
        return
    assert ctx.target.freeze_map
    runtime = HAProxyRuntime(ctx.target.proxy_admin)
    backend = backend_name(ctx.service.name, ctx.environment)
    runtime.freeze_writes(ctx.target.freeze_map, backend)
    try:
        time.sleep(drain_s)  # writes already inside the service finish
        yield
    finally:
        runtime.thaw_writes(ctx.target.freeze_map, backend)


@flow(name="restore", log_prints=True)
def restore(
    database: PostgresDatabase | str,
    backup_id: str,
    safety_backup: bool = True,
    lock_timeout_s: float = 10.0,
    environment: str | None = None,
    service: str = "congress-api",
    target: str | None = None,
    environment_lock_timeout_s: float = 120.0,
    notifier: str | None = None,
) -> b.Restored:
    """Restore `backup_id` ("latest" = the newest verified backup) into the database.

    With `environment` (and its `service` and `target` blocks), the restore holds
    that environment's release lock and freezes writes at its proxy from before the
    safety backup until the restore committed, so no acknowledged write is lost
    between the two; without it, stop the service's writers yourself. `notifier`
    hears how it ended, either way.
    """
    note = load_notifier(notifier)
    db: PostgresDatabase | None = None
    try:
        if lock_timeout_s <= 0:
            raise ConfigError("lock_timeout_s", "must be > 0")
        db, directory, tools = load_database(database)
        done, chosen, safety = _restore(
            db,
            directory,
            tools,
            backup_id,
            safety_backup,
            lock_timeout_s,
            environment,
            service,
            target,
            environment_lock_timeout_s,
        )
    except Exception as exc:
        send_text(
            note,
            *backup_notification("restore", database_name(db, database), None, str(exc)),
            db.secrets() if db else [],
        )
        raise
    undo = f"undo: restore {safety.backup_id}" if safety else "no safety backup was taken"
    send_text(
        note,
        *backup_notification("restore", database_name(db, database), chosen, None, undo),
        db.secrets(),
    )
    return done


def _restore(
    db: PostgresDatabase,
    directory: Path,
    tools: b.Tools,
    backup_id: str,
    safety_backup: bool,
    lock_timeout_s: float,
    environment: str | None,
    service: str,
    target: str | None,
    environment_lock_timeout_s: float,
) -> tuple[b.Restored, BackupManifest, BackupManifest | None]:
    bucket = db.offsite()
    remote = offsite.remote_backups(bucket) if bucket is not None else []
    dsn, password = db.get_client()
    chosen = b.find_backup(directory, backup_id, remote, b.current_database(dsn, password))
    if not (directory / chosen.file).is_file():
        if bucket is None or not chosen.offsite:
            raise ConfigError(
                "backup_id", f"the dump of {chosen.backup_id} is gone from {directory}"
            )
        get_run_logger().info("fetching %s from %s", chosen.backup_id, chosen.offsite)
        offsite.download(bucket, directory, chosen)
    ctx = None
    if environment is not None:
        ctx = load_context(environment, service, target, None, None)
        if not ctx.target.freeze_map:
            raise ConfigError(
                "target.freeze_map",
                "a restore behind a live service freezes its writes at the proxy;"
                " set the HAProxy freeze map, or restore without environment",
            )
    if chosen.verified_at is None:
        get_run_logger().warning(
            "backup %s was never verified; its figures are still checked before commit",
            chosen.backup_id,
        )
    run_id, _ = current_flow_run()
    locked = (
        environment_lock(environment, environment_lock_timeout_s, run_id)
        if environment is not None
        else nullcontext()
    )
    safety: BackupManifest | None = None
    with locked:
        started = time.monotonic()
        with _writes_frozen(ctx, WRITE_BACK_DRAIN_S):
            if safety_backup:
                safety = take_backup(db, directory, tools, f"before restore of {chosen.backup_id}")
                safety = verify_backup(db, directory, tools, safety)
            done = restore_backup(db, directory, tools, chosen, lock_timeout_s)
        frozen_s = time.monotonic() - started if ctx is not None else None
    lines = [
        f"# Restored backup `{chosen.backup_id}`",
        "",
        f"- database: `{chosen.database}`, taken {chosen.taken_at:%Y-%m-%d %H:%M:%S} UTC"
        f" ({chosen.label})",
        f"- {done.tables} tables, {done.rows} rows, every table's figures checked before commit",
        f"- took {done.seconds:.2f} s",
        (
            f"- writes to `{environment}` were frozen for {frozen_s:.2f} s"
            if frozen_s is not None
            else "- writes were not frozen by Shipyard (no environment given)"
        ),
        (
            "- schemas made since the backup, left as they are: "
            + ", ".join(f"`{x}`" for x in done.schemas_left)
            if done.schemas_left
            else "- no schema was made since the backup"
        ),
        (
            f"- undo: restore `{safety.backup_id}`, taken just before"
            if safety
            else "- no safety backup was taken (safety_backup=false)"
        ),
    ]
    create_markdown_artifact(
        key="postgres-restore", markdown="\n".join(lines), description="restore summary"
    )
    prune_backups(db, directory, chosen.database)
    return done, chosen, safety
