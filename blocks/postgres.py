"""Where a migration writes: a PostgreSQL database, its DSN kept secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.core.errors import ConfigError
from tasks.core.sqlmap import POLICIES


def check_policies(policies: dict[str, str], field: str = "policies") -> None:
    """TABLE.COLUMN keys and known policy names, or a ConfigError naming the key."""
    for key, value in policies.items():
        if "." not in key:
            raise ConfigError(f"{field}[{key!r}]", "keys are TABLE.COLUMN")
        if value not in POLICIES:
            raise ConfigError(
                f"{field}[{key!r}]", f"unknown policy {value!r}; one of {sorted(POLICIES)}"
            )


class PostgresDatabase(Block):
    """A PostgreSQL target; the whole DSN is secret because it carries the password."""

    _block_type_name = "Shipyard Postgres Database"

    dsn: SecretStr = Field(
        description="postgresql://user:password@host:port/dbname; never logged or shown."
    )
    service_dsn: SecretStr | None = Field(
        default=None,
        description="DSN the service's containers connect with, when they reach the database at "
        "another address than Shipyard does (e.g. the Docker bridge gateway); defaults to dsn.",
    )
    target_schema: str = Field(
        default="public",
        description="Schema the migrated tables are swapped into; objects of the same names are moved to shipyard_previous.",
    )
    datetimes_utc: bool = Field(
        default=False,
        description="SQLite datetimes without a zone are UTC instants (Django with USE_TZ): they "
        "become timestamptz instead of timestamp. Views, triggers, CHECKs and indexes that use "
        "such a column become findings to accept.",
    )

    policies: dict[str, str] = Field(
        default_factory=dict,
        description="Per-column answers the migration applies, TABLE.COLUMN → policy: text, "
        "double, null, bytea (refused data), interval (durations), utc (naive datetimes that are "
        "instants). Held here so a release's cutover decides as the migrate flow does.",
    )
    accept: list[str] = Field(
        default_factory=list,
        description="Error findings accepted by key (table.column:code or table:code, as the "
        "migration plan names them), e.g. 'notes_fts:virtual-table'; a release's cutover "
        "accepts them too.",
    )

    backup_dir: str | None = Field(
        default=None,
        description="Directory that holds this database's backups (pg_dump custom format, each "
        "with a JSON manifest of its tables' row counts and content sums). Needed by the backup "
        "and restore flows and by a release's backup_before.",
    )
    keep_last: int = Field(
        default=7, ge=1, description="Backups always kept, newest first, whatever their age."
    )
    keep_days: int = Field(
        default=30,
        ge=0,
        description="Backups younger than this many days are kept too; older ones beyond "
        "keep_last are pruned after each backup (never the newest verified one).",
    )
    offsite_bucket: str | None = Field(
        default=None,
        description="Name of a prefect-aws S3 Bucket block (any S3-compatible endpoint through "
        "its credentials' client parameters) that receives a copy of every verified backup and "
        "its manifest, pruned with them; a restore on a host that lost backup_dir finds them "
        "there.",
    )
    pg_bin: str | None = Field(
        default=None,
        description="Directory of pg_dump, pg_restore and psql, at least as new as the server; "
        "defaults to PATH, then the newest /usr/lib/postgresql/*/bin.",
    )

    def validate_target(self) -> None:
        """Checked before any side effect, naming the field."""
        parsed = urlparse(self.dsn.get_secret_value())
        if parsed.scheme not in ("postgres", "postgresql") or not parsed.hostname:
            raise ConfigError("dsn", "must be postgresql://user:password@host:port/dbname")
        if not self.target_schema or "\x00" in self.target_schema:
            raise ConfigError("target_schema", "must be a schema name")
        check_policies(self.policies)

    def validate_backups(self) -> Path:
        """The backup directory, checked before any side effect, naming the field."""
        self.validate_target()
        if not self.backup_dir:
            raise ConfigError("backup_dir", "set it to the directory backups go to")
        path = Path(self.backup_dir).expanduser()
        if not path.is_absolute():
            raise ConfigError("backup_dir", f"must be an absolute path, not {self.backup_dir!r}")
        if self.pg_bin is not None and not Path(self.pg_bin).is_dir():
            raise ConfigError("pg_bin", f"{self.pg_bin!r} is not a directory")
        return path

    def offsite(self) -> Any | None:
        """The S3 bucket block named by offsite_bucket, loaded when used: prefect-aws takes
        ~2 s to import, which every flow would otherwise pay."""
        if not self.offsite_bucket:
            return None
        from prefect.exceptions import ObjectNotFound
        from prefect_aws import S3Bucket

        try:
            return S3Bucket.load(self.offsite_bucket)
        except (ValueError, ObjectNotFound) as exc:
            raise ConfigError(
                "offsite_bucket", f"no S3 Bucket block named {self.offsite_bucket!r}"
            ) from exc

    def secrets(self) -> list[str]:
        """Values to scrub from anything emitted: the DSN and its password."""
        out = []
        for secret in (self.dsn, self.service_dsn):
            if secret is not None:
                dsn = secret.get_secret_value()
                out += [x for x in (dsn, urlparse(dsn).password) if x]
        return out

    def get_client(self) -> tuple[str, str]:
        """(dsn, password-for-redaction): what the migration functions connect with."""
        self.validate_target()
        dsn = self.dsn.get_secret_value()
        return dsn, urlparse(dsn).password or dsn

    def dsn_for_service(self) -> str:
        return (self.service_dsn or self.dsn).get_secret_value()
