"""Typed, frozen results passed between tasks, hooks, records and artifacts."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BuiltImage(Frozen):
    repository: str
    tag: str
    image_id: str
    labels: dict[str, str]
    seconds: float

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


class PushedImage(Frozen):
    repository: str
    tag: str
    digest: str
    image_id: str

    @property
    def reference(self) -> str:
        """Digest reference: immutable, so a rollback runs exactly what was tested."""
        return f"{self.repository}@{self.digest}"


class Instance(Frozen):
    """One running copy of a version on a target (a container, a task set, a revision)."""

    id: str
    name: str
    version: str
    digest: str
    address: str
    slot: str


class Deployment(Frozen):
    target: str
    service: str
    environment: str
    version: str
    digest: str
    instance: Instance
    previous: Instance | None = None
    url: str


class Undo(Frozen):
    """What undoing a deployment did. `switched`: traffic left the new instance for the
    previous one (or for nothing, after a first release). When it could not, the new
    instance is left running and serving: stopping it too would serve nothing."""

    switched: bool
    serving: str | None = None  # the version taking traffic afterwards, if known
    error: str | None = None  # why traffic could not go back


class CheckResult(Frozen):
    name: str
    passed: bool
    observed: str
    expected: str


class SmokeResult(Frozen):
    url: str
    version: str
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.passed)


class Outcome(StrEnum):
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    # failed a check after its writes thawed, and going back would lose them: it serves on
    KEPT = "kept"


class PhaseTiming(Frozen):
    name: str
    seconds: float
    ok: bool


class ReleaseRecord(Frozen):
    """What every release or rollback leaves behind; the rollback flow reads these."""

    release_id: str
    kind: str = "release"  # "release" | "rollback" | "recovery"
    service: str
    environment: str
    version: str
    digest: str | None = None
    image: str | None = None
    trigger: str = "manual"
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    phases: tuple[PhaseTiming, ...] = ()
    outcome: Outcome = Outcome.IN_PROGRESS
    current_step: str | None = None
    failed_step: str | None = None
    reason: str | None = None
    rolled_back_to: str | None = None
    marked_bad: bool = False
    write_freeze_s: float | None = None  # a database cutover refused writes this long
    # of that freeze, the cutover's own work (catch-up, final validation, swap), and how
    # it found the rows written during the bulk copy: "pages" or "digests"
    freeze_work_s: float | None = None
    caught_up_by: str | None = None
    # the cutover's write horizon (see tasks.core.migration.Since): a recovery writing
    # back after a crash finds PostgreSQL's later writes by it, if the snapshot survived
    horizon: int | None = None
    # the Shipyard Postgres Database block this release moved the data into (a cutover)
    database: str | None = None
    # writes reached that database before the release ended: the old version may only
    # come back once they are written back into its SQLite file
    writes_thawed: bool = False
    written_back: int | None = None  # rows a failed release wrote back into the SQLite file
    # the SQLite file a cutover moved the data from: should the release die after its
    # writes thawed, the recovery writes PostgreSQL's rows back there
    source: str | None = None
    backup: str | None = None  # a copy of that file taken before the write-back changed it
    # the verified pg_dump taken before this release touched its PostgreSQL database
    # (backup_first): what the restore flow puts back, should the data need it
    database_backup: str | None = None

    def with_changes(self, **changes: object) -> ReleaseRecord:
        return self.model_copy(update=changes)
