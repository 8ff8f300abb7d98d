"""The one exception tree of Shipyard.

Library errors are translated at the boundary into one of these (``raise ...
from exc``) so a user sees which phase failed and what to do about it, and the
notification can name the failed step without parsing tracebacks.
"""

from __future__ import annotations


class ShipyardError(Exception):
    """Base of every error Shipyard raises on purpose."""

    step: str = "release"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(ShipyardError):
    """An input or block field is invalid; raised before any side effect."""

    step = "validate"

    def __init__(self, key: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{key}: {problem}", hint=hint)
        self.key = key


class BuildError(ShipyardError):
    step = "build-image"


class RegistryError(ShipyardError):
    step = "push-image"


class DeployError(ShipyardError):
    step = "deploy"


class HealthCheckTimeout(DeployError):
    """The new version never became healthy before its deadline."""


class ContainerExited(DeployError):
    """The new version's process stopped while we waited for it."""


class ProxyError(DeployError):
    """The edge proxy refused or did not apply a routing change."""


class VerifyError(ShipyardError):
    step = "smoke-check"


class SmokeCheckFailed(VerifyError):
    pass


class MigrationError(ShipyardError):
    step = "migrate"


class BackupError(ShipyardError):
    """A PostgreSQL backup, its verification or a restore failed; what was there is unchanged."""

    step = "backup"


class ReleaseLocked(ShipyardError):
    """Another release holds the environment's lock."""

    step = "lock"


class RollbackError(ShipyardError):
    step = "rollback"


class RollbackRefused(RollbackError):
    """The requested rollback target cannot be restored (unknown, pruned, behind a cutover)."""


class NotifyError(ShipyardError):
    step = "notify"


class ReleaseRolledBack(ShipyardError):
    """The release transaction rolled back although no exception reached the flow."""

    step = "transaction"
