"""restore: put a Shipyard Postgres Database back as one of its backups was.

The seeds' database rollback is "restore from backup". Writes made since that
backup are lost by design, so the flow first takes (and verifies) a backup of
the database as it is now: a restore can itself be undone by restoring that
one. The restore then runs in one transaction that ends with every table's
figures checked against the backup's; any failure leaves the database as it was.

It takes ACCESS EXCLUSIVE locks on every table it replaces: run it with the
service stopped or frozen. Behind a busy service it fails after `lock_timeout_s`
rather than queue every query behind it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from blocks.postgres import PostgresDatabase
from flows.backup import load_database, prune_backups, take_backup, verify_backup
from tasks import backup as b
from tasks.core.backup import BackupManifest
from tasks.core.errors import ConfigError


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


@flow(name="restore", log_prints=True)
def restore(
    database: PostgresDatabase | str,
    backup_id: str,
    safety_backup: bool = True,
    lock_timeout_s: float = 10.0,
) -> b.Restored:
    """Restore `backup_id` ("latest" = the newest verified backup) into the database."""
    if lock_timeout_s <= 0:
        raise ConfigError("lock_timeout_s", "must be > 0")
    db, directory, tools = load_database(database)
    chosen = b.find_backup(directory, backup_id)
    if chosen.verified_at is None:
        get_run_logger().warning(
            "backup %s was never verified; its figures are still checked before commit",
            chosen.backup_id,
        )
    safety: BackupManifest | None = None
    if safety_backup:
        safety = take_backup(db, directory, tools, f"before restore of {chosen.backup_id}")
        safety = verify_backup(db, directory, tools, safety)
    done = restore_backup(db, directory, tools, chosen, lock_timeout_s)
    lines = [
        f"# Restored backup `{chosen.backup_id}`",
        "",
        f"- database: `{chosen.database}`, taken {chosen.taken_at:%Y-%m-%d %H:%M:%S} UTC"
        f" ({chosen.label})",
        f"- {done.tables} tables, {done.rows} rows, every table's figures checked before commit",
        f"- took {done.seconds:.2f} s",
        (
            f"- undo: restore `{safety.backup_id}`, taken just before"
            if safety
            else "- no safety backup was taken (safety_backup=false)"
        ),
    ]
    create_markdown_artifact(
        key="postgres-restore", markdown="\n".join(lines), description="restore summary"
    )
    prune_backups(db, directory)
    return done
