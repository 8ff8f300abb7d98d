"""Decisions over the release ledger: what is serving, what to roll back to, what to prune."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.core.errors import ConfigError, RollbackRefused
from tasks.core.models import Outcome, ReleaseRecord, Undo

# a kept release failed a check but serves on: its writes live only in its database
SERVING = (Outcome.SUCCEEDED, Outcome.KEPT)


def serving_timeline(records: Sequence[ReleaseRecord]) -> list[ReleaseRecord]:
    """Records that put a version into service, oldest first."""
    return [r for r in records if r.outcome in SERVING and r.digest]


def current(records: Sequence[ReleaseRecord]) -> ReleaseRecord | None:
    timeline = serving_timeline(records)
    return timeline[-1] if timeline else None


def cutover(records: Sequence[ReleaseRecord]) -> ReleaseRecord | None:
    """The environment's last successful cutover: since then its data lives in that
    release's database. A cutover that failed put the old version back on its own
    file, so only a successful one counts."""
    for rec in reversed(serving_timeline(records)):
        if rec.database:
            return rec
    return None


def database(records: Sequence[ReleaseRecord]) -> str | None:
    """The Postgres Database block every version this environment starts (a release,
    a rollback, a recovery) must get, or None while the data never moved: a version
    started without it would serve the file left behind."""
    cut = cutover(records)
    return cut.database if cut else None


def check_cutover(records: Sequence[ReleaseRecord], environment: str) -> None:
    """Refuse a cutover in an environment whose data already moved: the SQLite file
    left behind is stale, and swapping it in would replace every write PostgreSQL
    took since (a release re-run with the same parameters, say)."""
    cut = cutover(records)
    if cut is not None:
        raise ConfigError(
            "migrate_from",
            f"{environment!r} already runs on PostgreSQL (database {cut.database!r}, moved"
            f" there by release {cut.version}); the SQLite file is stale since",
            hint="release without migrate_from and database: every version gets that database",
        )


def after_failure(
    version: str,
    switched: bool,
    previous: str | None,
    write_back_failed: str | None = None,
    undo: Undo | None = None,
) -> tuple[Outcome, str | None, str | None]:
    """(outcome, what serves and why, version rolled back to) of a release or rollback
    that failed after `switched` traffic to `version`.

    The record must say what really serves, because the next release, rollback and
    recovery start from it: should it claim the previous version while the new one
    serves on a database the cutover moved the data into, the next cutover would copy
    the stale SQLite file over writes acknowledged since. So a new version that could
    not be taken out of service (its write-back failed, or traffic could not go back,
    and nothing else is known to serve) is recorded as kept, serving.
    """
    if not switched:
        return Outcome.FAILED, None, None
    if write_back_failed is not None:
        return (
            Outcome.KEPT,
            f"{version} keeps serving, the write-back failed: {write_back_failed}",
            None,
        )
    if undo is not None and not undo.switched:
        if undo.serving in (version, None):
            return Outcome.KEPT, f"{version} keeps serving, the rollback failed: {undo.error}", None
        return Outcome.FAILED, f"the rollback failed: {undo.error}; {undo.serving} serves", None
    return Outcome.ROLLED_BACK, None, previous


def in_progress(records: Sequence[ReleaseRecord]) -> list[ReleaseRecord]:
    return [r for r in records if r.outcome == Outcome.IN_PROGRESS]


def bad_versions(records: Sequence[ReleaseRecord]) -> set[str]:
    return {r.version for r in records if r.marked_bad}


def resolve_rollback_target(
    records: Sequence[ReleaseRecord], to: str, retained: set[str], pre_cutover_ok: bool = False
) -> ReleaseRecord:
    """Pick the release to restore.

    `to` is "previous" (the version that served before the current one),
    "last-good" (the newest successful version not since marked bad) or a
    version. `retained` holds the versions whose image still exists; a target
    outside it is refused rather than rebuilt, because a rollback must run the
    exact bytes that were tested.
    """
    timeline = serving_timeline(records)
    now = timeline[-1] if timeline else None
    if now is None:
        raise RollbackRefused(
            "nothing has been released to this environment yet",
            hint="run the release flow first",
        )
    target: ReleaseRecord | None = None
    if to == "previous":
        for rec in reversed(timeline[:-1]):
            if rec.version != now.version:
                target = rec
                break
        if target is None:
            raise RollbackRefused(f"no release before {now.version} to roll back to")
    elif to == "last-good":
        bad = bad_versions(records) | {now.version}
        for rec in reversed(timeline):
            if rec.version not in bad:
                target = rec
                break
        if target is None:
            raise RollbackRefused("no earlier successful release that is not marked bad")
    else:
        for rec in reversed(timeline):
            if rec.version == to:
                target = rec
                break
        if target is None:
            known = ", ".join(dict.fromkeys(r.version for r in reversed(timeline))) or "none"
            raise RollbackRefused(
                f"version {to!r} was never released successfully here",
                hint=f"released versions, newest first: {known}",
            )
    if target.version == now.version:
        raise RollbackRefused(f"{target.version} is already serving")
    cut = cutover(records)
    if cut is not None and target.started_at < cut.started_at and not pre_cutover_ok:
        raise RollbackRefused(
            f"{target.version} was released before the data moved to PostgreSQL (database"
            f" {cut.database!r}, release {cut.version}): it would start with DATABASE_URL,"
            " and a version that does not read it would serve the stale SQLite file,"
            " taking writes PostgreSQL never sees",
            hint=f"roll back to a version released since {cut.version}, or set"
            f" pre_cutover_ok if {target.version} reads DATABASE_URL",
        )
    if target.version not in retained:
        raise RollbackRefused(
            f"the image of {target.version} ({target.digest}) has been pruned",
            hint=f"retained versions: {', '.join(sorted(retained)) or 'none'}; "
            "release it again to rebuild it",
        )
    return target


def retained_versions(records: Sequence[ReleaseRecord], keep: int) -> list[str]:
    """The newest `keep` distinct successful versions, newest first."""
    out: list[str] = []
    for rec in reversed(serving_timeline(records)):
        if rec.version not in out:
            out.append(rec.version)
        if len(out) == keep:
            break
    return out


def prune_versions(records: Sequence[ReleaseRecord], keep: int) -> list[ReleaseRecord]:
    """Successful releases whose images fall outside retention (one record per digest)."""
    keep_set = set(retained_versions(records, keep))
    seen: set[str] = set()
    out = []
    for rec in serving_timeline(records):
        if rec.version not in keep_set and rec.digest and rec.digest not in seen:
            seen.add(rec.digest)
            out.append(rec)
    return out
