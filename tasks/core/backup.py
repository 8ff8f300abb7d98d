"""PostgreSQL backups as data: what a backup holds, which to keep, how a restore starts.

A backup is only worth what its restore proves, so every backup carries the
row count and an order-independent content sum of each table, taken in the
very snapshot `pg_dump` reads; verifying means restoring into a scratch
database and finding the same figures. Decisions about which backups to keep
and what a restore drops first are made here, without I/O, so they can be
tested exhaustively and shown before anything is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from tasks.core.sqlmap import quote_ident

_F = ConfigDict(frozen=True)

#: What a table's figures are computed with, on the live database and on a restore:
#: the same server renders the same row text, so equal sums mean equal content.
#: `(t.*)`, not `t`: a column named t would win over the row (PostgreSQL prefers columns).
TABLE_SUM_SQL = (
    "SELECT count(*), coalesce(sum(hashtextextended((t.*)::text, 0)), 0)::text FROM {} t"
)

#: Settings both sides compute figures under: row text must not depend on the session.
FIGURE_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

#: User tables: ordinary tables outside the system schemas (partitions count as tables).
USER_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

#: User schemas, with the ones extensions create left out.
USER_SCHEMAS_SQL = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
ORDER BY 1
"""


class TableFigures(BaseModel):
    """One table as the backup's snapshot saw it."""

    model_config = _F
    schema_name: str
    table: str
    rows: int
    content_sum: str  # sum of every row's 64-bit hash, as numeric text

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema_name)}.{quote_ident(self.table)}"


class BackupManifest(BaseModel):
    """Everything known about one backup file; stored beside it as JSON. No DSN, no
    password: the database is named by its name alone."""

    model_config = _F
    backup_id: str
    database: str
    server_version: int  # server_version_num
    label: str  # why it was taken: "scheduled", "before release …", "before restore …"
    taken_at: datetime
    seconds: float
    file: str
    bytes: int
    sha256: str
    schemas: tuple[str, ...]
    public_owner: str | None  # public is the one schema pg_dump never creates
    tables: tuple[TableFigures, ...]
    verified_at: datetime | None = None
    verify_seconds: float | None = None
    offsite: str | None = None  # s3://bucket/key of the dump's off-site copy

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def backup_id(database: str, taken_at: datetime) -> str:
    """Sortable by time, readable in a file listing, and safe as a file name whatever
    the database is called."""
    stamp = taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{_ID_SAFE.sub('_', database)[:40]}"


def figure_mismatches(expected: Sequence[TableFigures], found: Sequence[TableFigures]) -> list[str]:
    """Every way a restore differs from the snapshot it came from, one line each."""
    have = {(f.schema_name, f.table): f for f in found}
    out = []
    for e in expected:
        f = have.pop((e.schema_name, e.table), None)
        if f is None:
            out.append(f"{e.qualified}: missing from the restore")
        elif f.rows != e.rows:
            out.append(f"{e.qualified}: {f.rows} rows restored, {e.rows} backed up")
        elif f.content_sum != e.content_sum:
            out.append(f"{e.qualified}: same {e.rows} rows, different content")
    out += [f"{f.qualified}: in the restore, not in the backup" for f in have.values()]
    return out


class Retention(BaseModel):
    """Which backups stay and which go, with the reason for each that goes."""

    model_config = _F
    keep: tuple[str, ...]
    prune: tuple[tuple[str, str], ...]  # (backup_id, why)


def retention(
    manifests: Sequence[BackupManifest], now: datetime, keep_last: int, keep_days: int
) -> Retention:
    """Keep the newest `keep_last` and everything younger than `keep_days`, and never the
    last verified backup's removal: a run of failed verifications must not leave the
    database without one restore known to work. Unverified backups count like any
    other: they are still the newest copy of the data."""
    ordered = sorted(manifests, key=lambda b: b.taken_at, reverse=True)
    horizon = now - timedelta(days=keep_days)
    newest_verified = next((b.backup_id for b in ordered if b.verified_at is not None), None)
    keep, prune = [], []
    for i, b in enumerate(ordered):
        if i < keep_last:
            keep.append(b.backup_id)
        elif b.taken_at >= horizon:
            keep.append(b.backup_id)
        elif b.backup_id == newest_verified:
            keep.append(b.backup_id)
        else:
            prune.append(
                (b.backup_id, f"older than {keep_days} days and not among the newest {keep_last}")
            )
    return Retention(keep=tuple(keep), prune=tuple(prune))


def restore_prelude(manifest: BackupManifest, lock_timeout_s: float) -> list[str]:
    """What runs first, in the restore's own transaction: the backup's schemas go, so
    the database ends as the backup was (tables made since go too), and the dump
    then creates them again. public is the exception pg_dump makes: it is created
    again here with the owner and the default privileges its dump leaves alone.

    The lock timeout makes a restore behind a busy service fail clearly (and change
    nothing) instead of queueing every query behind it."""
    ms = max(1, int(lock_timeout_s * 1000))
    out = [f"SET lock_timeout = {ms}"]
    out += [f"DROP SCHEMA IF EXISTS {quote_ident(s)} CASCADE" for s in manifest.schemas]
    if "public" in manifest.schemas:
        out.append("CREATE SCHEMA public")
        owner = manifest.public_owner or "pg_database_owner"
        out.append(f"ALTER SCHEMA public OWNER TO {quote_ident(owner)}")
        # the defaults pg_dump compares against: USAGE for all from 15 on, CREATE too before
        grant = "USAGE" if manifest.server_version >= 150000 else "ALL"
        out.append(f"GRANT {grant} ON SCHEMA public TO PUBLIC")
    return out


def backups_table(
    manifests: Sequence[BackupManifest], pruned: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The rows of the `postgres-backups` table artifact, newest first."""
    rows = []
    for b in sorted(manifests, key=lambda b: b.taken_at, reverse=True):
        rows.append(
            {
                "backup": b.backup_id,
                "label": b.label,
                "taken (UTC)": b.taken_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "tables": str(len(b.tables)),
                "rows": str(b.rows),
                "size": _size(b.bytes),
                "dump s": f"{b.seconds:.2f}",
                "verified": "yes" if b.verified_at else "no",
                "off-site": b.offsite or "no",
                "state": "pruned" if b.backup_id in pruned else "kept",
            }
        )
    return rows


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def merged(
    local: Sequence[BackupManifest], remote: Sequence[BackupManifest]
) -> list[BackupManifest]:
    """Every backup known here or off-site, oldest first; the local manifest wins (it
    is the one verification last wrote)."""
    by_id = {m.backup_id: m for m in remote}
    by_id.update({m.backup_id: m for m in local})
    return sorted(by_id.values(), key=lambda m: m.taken_at)


def choose(backups: Sequence[BackupManifest], which: str) -> BackupManifest | None:
    """A backup by id, or with "latest" the newest verified one."""
    if which == "latest":
        verified = [b for b in backups if b.verified_at is not None]
        return max(verified, key=lambda b: b.taken_at) if verified else None
    return next((b for b in backups if b.backup_id == which), None)
