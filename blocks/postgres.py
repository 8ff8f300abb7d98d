"""Where a migration writes: a PostgreSQL database, its DSN kept secret."""

from __future__ import annotations

from urllib.parse import urlparse

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.core.errors import ConfigError


class PostgresDatabase(Block):
    """A PostgreSQL target; the whole DSN is secret because it carries the password."""

    _block_type_name = "Shipyard Postgres Database"

    dsn: SecretStr = Field(
        description="postgresql://user:password@host:port/dbname; never logged or shown."
    )
    target_schema: str = Field(
        default="public",
        description="Schema the migrated tables are swapped into; objects of the same names are moved to shipyard_previous.",
    )

    def validate_target(self) -> None:
        """Checked before any side effect, naming the field."""
        parsed = urlparse(self.dsn.get_secret_value())
        if parsed.scheme not in ("postgres", "postgresql") or not parsed.hostname:
            raise ConfigError("dsn", "must be postgresql://user:password@host:port/dbname")
        if not self.target_schema or "\x00" in self.target_schema:
            raise ConfigError("target_schema", "must be a schema name")

    def secrets(self) -> list[str]:
        """Values to scrub from anything emitted: the DSN and its password."""
        dsn = self.dsn.get_secret_value()
        return [x for x in (dsn, urlparse(dsn).password) if x]

    def get_client(self) -> tuple[str, str]:
        """(dsn, password-for-redaction): what the migration functions connect with."""
        self.validate_target()
        secrets = self.secrets()
        return self.dsn.get_secret_value(), secrets[-1]
