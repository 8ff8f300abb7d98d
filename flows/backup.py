"""backup: a verified pg_dump of a Shipyard Postgres Database, then retention.

Meant to run on a schedule (the seeds ask for daily backups kept 30 days) and
before anything risky. A backup counts only once a restore of it into a scratch
database has shown every table's row count and content sum as the snapshot had
them; retention never removes the newest such backup.

`python -m flows.backup BLOCK [--label L] [--no-verify] [--json]` runs it locally.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from blocks.postgres import PostgresDatabase
from flows.common import load_notifier
from tasks import backup as b
from tasks import offsite
from tasks.core.backup import BackupManifest, backups_table, merged, retention
from tasks.core.errors import BackupError, ConfigError, ShipyardError
from tasks.core.messages import backup_notification
from tasks.notify import send_text


def load_database(database: PostgresDatabase | str) -> tuple[PostgresDatabase, Path, b.Tools]:
    """The block, its backup directory and client tools, all checked before any side effect."""
    if isinstance(database, str):
        try:
            loaded: PostgresDatabase = PostgresDatabase.load(database)  # type: ignore[assignment]
        except ValueError as exc:
            raise ConfigError(
                "database", f"no Shipyard Postgres Database block named {database!r}"
            ) from exc
        database = loaded
    directory = database.validate_backups()
    database.offsite()  # the bucket block exists, before any side effect
    return database, directory, b.client_tools(database.pg_bin)


@task(name="take-backup", cache_policy=NO_CACHE)
def take_backup(
    db: PostgresDatabase, directory: Path, tools: b.Tools, label: str, attempts: int = 2
) -> BackupManifest:
    """pg_dump in one exported snapshot, with every table's figures from that snapshot.

    Retried here, not by Prefect: inside a release's transaction a failed task
    attempt would roll the whole release back even after a successful retry. A
    failed attempt keeps nothing, so the next one starts clean."""
    dsn, password = db.get_client()
    artifact = create_progress_artifact(
        progress=0.0, key="postgres-backup-progress", description="tables dumped"
    )

    def tick(done: int, total: int) -> None:
        update_progress_artifact(artifact_id=artifact, progress=100.0 * done / max(1, total))  # type: ignore[arg-type]

    for attempt in range(1, attempts + 1):
        try:
            manifest = b.take_backup(dsn, password, directory, label, tools, progress=tick)
            break
        except BackupError as exc:
            if attempt == attempts:
                raise
            get_run_logger().warning("backup attempt %d failed, retrying: %s", attempt, exc)
            time.sleep(5)
    update_progress_artifact(artifact_id=artifact, progress=100.0)  # type: ignore[arg-type]
    get_run_logger().info(
        "backup %s: %d tables, %d rows, %d bytes in %.2f s",
        manifest.backup_id,
        len(manifest.tables),
        manifest.rows,
        manifest.bytes,
        manifest.seconds,
    )
    return manifest


@task(name="verify-backup", cache_policy=NO_CACHE)
def verify_backup(
    db: PostgresDatabase, directory: Path, tools: b.Tools, manifest: BackupManifest
) -> BackupManifest:
    dsn, password = db.get_client()
    verified = b.verify_backup(manifest, directory, dsn, password, tools)
    get_run_logger().info(
        "backup %s restores: every table's rows and content match (%.2f s)",
        verified.backup_id,
        verified.verify_seconds or 0.0,
    )
    return verified


@task(name="offsite-copy", cache_policy=NO_CACHE)
def offsite_copy(db: PostgresDatabase, directory: Path, manifest: BackupManifest) -> BackupManifest:
    """The verified backup to the block's S3 bucket; the local manifest then says where."""
    bucket = db.offsite()
    assert bucket is not None
    placed = offsite.upload(bucket, directory, manifest)
    b.write_manifest(directory, placed)
    get_run_logger().info("backup %s copied to %s", placed.backup_id, placed.offsite)
    return placed


def known_backups(db: PostgresDatabase, directory: Path, database: str) -> list[BackupManifest]:
    """This database's backups, here and off-site (a host that lost its directory still
    has those); another database's in a shared directory or folder are not ours."""
    bucket = db.offsite()
    remote = offsite.remote_backups(bucket) if bucket is not None else []
    return [m for m in merged(b.list_backups(directory), remote) if m.database == database]


@task(name="prune-backups", cache_policy=NO_CACHE)
def prune_backups(db: PostgresDatabase, directory: Path, database: str) -> list[str]:
    """Apply the block's retention to `database`'s backups, here and off-site; also
    clears what killed runs left half-written. An off-site copy that cannot be deleted
    now is retried by the next run (it is still listed there), so that only warns."""
    log = get_run_logger()
    for name in b.remove_unfinished(directory):
        log.info("removed unfinished backup file %s", name)
    found = known_backups(db, directory, database)
    bucket = db.offsite()
    plan = retention(found, datetime.now(UTC), db.keep_last, db.keep_days)
    by_id = {m.backup_id: m for m in found}
    for bid, why in plan.prune:
        b.delete_backup(directory, by_id[bid])
        if bucket is not None and by_id[bid].offsite:
            try:
                offsite.delete(bucket, by_id[bid])
            except BackupError as exc:
                log.warning("%s", exc)
        log.info("pruned backup %s: %s", bid, why)
    create_table_artifact(
        key="postgres-backups",
        table=backups_table(found, [bid for bid, _ in plan.prune]),
        description=f"backups of database {found[-1].database if found else '?'}",
    )
    return [bid for bid, _ in plan.prune]


def database_name(db: PostgresDatabase | None, fallback: PostgresDatabase | str) -> str:
    """The database as people call it in a message: its name, never its DSN."""
    if db is not None:
        return urlparse(db.dsn.get_secret_value()).path.lstrip("/") or "?"
    return fallback if isinstance(fallback, str) else "?"


@flow(name="backup", log_prints=True)
def backup(
    database: PostgresDatabase | str,
    label: str = "scheduled",
    verify: bool = True,
    notifier: str | None = None,
    notify_success: bool = False,
) -> BackupManifest:
    """Back up the database, prove the backup restores, copy it off-site (if the block
    names a bucket), then prune old ones.

    `notifier` ("<block-type-slug>/<name>") hears of every failure, and of every
    success with `notify_success`: nobody looks at backups until they need one.
    """
    note = load_notifier(notifier)
    db: PostgresDatabase | None = None
    try:
        db, directory, tools = load_database(database)
        manifest = take_backup(db, directory, tools, label)
        if verify:
            manifest = verify_backup(db, directory, tools, manifest)
        if db.offsite_bucket:
            manifest = offsite_copy(db, directory, manifest)
        prune_backups(db, directory, manifest.database)
    except Exception as exc:
        secrets = db.secrets() if db is not None else []
        send_text(
            note,
            *backup_notification("backup", database_name(db, database), None, str(exc)),
            secrets,
        )
        raise
    if notify_success:
        send_text(
            note,
            *backup_notification("backup", database_name(db, database), manifest, None),
            db.secrets(),
        )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.backup", description=__doc__)
    parser.add_argument("database", help="Shipyard Postgres Database block name")
    parser.add_argument("--label", default="manual")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument("--notifier", help='"<block-type-slug>/<name>" told of a failure')
    args = parser.parse_args(argv)
    try:
        manifest = backup(
            args.database, label=args.label, verify=not args.no_verify, notifier=args.notifier
        )
    except ShipyardError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(manifest.model_dump_json() if args.json else f"backup {manifest.backup_id} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
