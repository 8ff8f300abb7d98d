"""Text for people: notifications and the release record artifact."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.core.backup import BackupManifest
from tasks.core.models import Outcome, ReleaseRecord, SmokeResult


def duration(record: ReleaseRecord) -> float | None:
    if record.finished_at is None:
        return None
    return round((record.finished_at - record.started_at).total_seconds(), 1)


def notification(record: ReleaseRecord) -> tuple[str, str]:
    """Subject and body of the message sent when a release or rollback ends."""
    took = duration(record)
    verb = {
        "release": "Release",
        "rollback": "Rollback",
        "recovery": "Recovery",
        "verify": "Verify",
    }.get(record.kind, record.kind)
    ok = record.outcome == Outcome.SUCCEEDED
    icon = "✅" if ok else "❌"
    subject = (
        f"{icon} {verb} {record.service} {record.version} to {record.environment}: "
        f"{record.outcome.value}"
    )
    lines = [
        f"service: {record.service}",
        f"environment: {record.environment}",
        f"version: {record.version}",
        f"digest: {record.digest or 'n/a'}",
        f"outcome: {record.outcome.value}",
        f"duration_s: {took if took is not None else 'n/a'}",
        f"trigger: {record.trigger}",
    ]
    if record.flow_run_name:
        lines.append(f"flow_run: {record.flow_run_name} ({record.flow_run_id})")
    if not ok:
        lines.append(f"failed_step: {record.failed_step or 'unknown'}")
        lines.append(f"reason: {record.reason or 'unknown'}")
    if record.rolled_back_to:
        lines.append(f"now_serving: {record.rolled_back_to}")
    if record.database_backup:
        lines.append(f"database_backup: {record.database_backup}")
        if not ok:
            lines.append(
                "data: not restored (writes since the backup would be lost); if the new version"
                " changed it, run the restore flow with this backup_id"
            )
    return subject, "\n".join(lines)


def record_markdown(record: ReleaseRecord, history: Sequence[ReleaseRecord] = ()) -> str:
    subject, _ = notification(record)
    out = [f"# {subject}", ""]
    out += ["| field | value |", "|---|---|"]
    for key in (
        "release_id",
        "kind",
        "version",
        "digest",
        "image",
        "trigger",
        "flow_run_name",
        "started_at",
        "finished_at",
        "outcome",
        "failed_step",
        "reason",
        "rolled_back_to",
        "write_freeze_s",
        "freeze_work_s",
        "caught_up_by",
        "written_back",
        "database_backup",
    ):
        value = getattr(record, key)
        if value is not None:
            out.append(f"| {key} | `{str(getattr(value, 'value', value)).replace('|', '/')}` |")
    if record.phases:
        out += ["", "## Phases", "", "| phase | seconds | ok |", "|---|---:|---|"]
        out += [f"| {p.name} | {p.seconds:.2f} | {'✅' if p.ok else '❌'} |" for p in record.phases]
    if history:
        out += [
            "",
            "## Recent history",
            "",
            "| when | kind | version | outcome |",
            "|---|---|---|---|",
        ]
        for rec in list(history)[-10:][::-1]:
            out.append(
                f"| {rec.started_at:%Y-%m-%d %H:%M:%S} | {rec.kind} | {rec.version} "
                f"| {rec.outcome.value} |"
            )
    return "\n".join(out)


def smoke_failure_reason(result: SmokeResult) -> str:
    return "; ".join(f"{c.name}: expected {c.expected}, got {c.observed}" for c in result.failures)


def backup_notification(
    kind: str, database: str, manifest: BackupManifest | None, error: str | None, extra: str = ""
) -> tuple[str, str]:
    """Subject and body when a backup or a restore ends. A failed scheduled backup is
    the one that matters: nobody looks at a backup until they need it."""
    ok = error is None
    subject = f"{'✅' if ok else '❌'} {kind} of {database}: {'succeeded' if ok else 'failed'}"
    lines = [f"database: {database}", f"{kind}: {'succeeded' if ok else 'failed'}"]
    if manifest is not None:
        lines += [
            f"backup: {manifest.backup_id}",
            f"label: {manifest.label}",
            f"tables: {len(manifest.tables)}, rows: {manifest.rows}, bytes: {manifest.bytes}",
            f"verified: {'yes' if manifest.verified_at else 'no'}",
        ]
    if extra:
        lines.append(extra)
    if error is not None:
        lines.append(f"reason: {error}")
    return subject, "\n".join(lines)
