"""The pure decisions behind PostgreSQL backups: ids, retention, restore prelude, figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.core.backup import (
    BackupManifest,
    TableFigures,
    backup_id,
    backups_table,
    figure_mismatches,
    restore_prelude,
    retention,
)

NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def _b(days_ago: float, verified: bool = True, **kw: object) -> BackupManifest:
    at = NOW - timedelta(days=days_ago)
    fields: dict[str, object] = dict(
        backup_id=backup_id("app", at),
        database="app",
        server_version=150018,
        label="scheduled",
        taken_at=at,
        seconds=1.0,
        file=f"{backup_id('app', at)}.dump",
        bytes=2048,
        sha256="0" * 64,
        schemas=("public",),
        public_owner="pg_database_owner",
        tables=(TableFigures(schema_name="public", table="t", rows=3, content_sum="9"),),
        verified_at=at + timedelta(minutes=1) if verified else None,
    )
    fields.update(kw)
    return BackupManifest.model_validate(fields)


def test_ids_sort_by_time_and_are_safe_file_names():
    a = backup_id("my db/../x", NOW)
    b = backup_id("my db/../x", NOW + timedelta(microseconds=1))
    assert a < b and "/" not in a and " " not in a
    assert a.startswith("20261201T040000000000Z-")


def test_retention_keeps_the_newest_and_the_young():
    daily = [_b(d) for d in range(40)]  # one a day for 40 days
    plan = retention(daily, NOW, keep_last=7, keep_days=30)
    kept = {m.backup_id for m in daily if (NOW - m.taken_at).days <= 30}
    assert set(plan.keep) == kept and len(plan.keep) == 31
    assert {bid for bid, _ in plan.prune} == {m.backup_id for m in daily} - kept
    assert all("older than 30 days" in why for _, why in plan.prune)


def test_retention_keeps_keep_last_whatever_their_age():
    old = [_b(100 + d) for d in range(5)]
    plan = retention(old, NOW, keep_last=3, keep_days=30)
    assert plan.keep == tuple(m.backup_id for m in old[:3])


def test_retention_never_drops_the_last_verified_backup():
    backups = [_b(d, verified=False) for d in range(0, 5)] + [_b(50, verified=True), _b(60)]
    plan = retention(backups, NOW, keep_last=2, keep_days=3)
    assert backups[5].backup_id in plan.keep  # the newest verified one, 50 days old
    assert backups[6].backup_id in {bid for bid, _ in plan.prune}
    assert backups[4].backup_id in {bid for bid, _ in plan.prune}  # unverified, 4 days


def test_figures_name_every_difference():
    t = TableFigures(schema_name="s", table='a "b"', rows=2, content_sum="5")
    same = t.model_copy()
    assert figure_mismatches([t], [same]) == []
    assert figure_mismatches([t], []) == ['"s"."a ""b""": missing from the restore']
    assert figure_mismatches([t], [t.model_copy(update={"rows": 1})]) == [
        '"s"."a ""b""": 1 rows restored, 2 backed up'
    ]
    assert figure_mismatches([t], [t.model_copy(update={"content_sum": "6"})]) == [
        '"s"."a ""b""": same 2 rows, different content'
    ]
    extra = TableFigures(schema_name="s", table="x", rows=0, content_sum="0")
    assert figure_mismatches([t], [t, extra]) == ['"s"."x": in the restore, not in the backup']


def test_restore_prelude_drops_the_backups_schemas_and_makes_public_as_pg_dump_expects():
    m = _b(0, schemas=("odd; DROP", "public"), public_owner="owner")
    assert restore_prelude(m, 0.25) == [
        "SET lock_timeout = 250",
        'DROP SCHEMA IF EXISTS "odd; DROP" CASCADE',
        'DROP SCHEMA IF EXISTS "public" CASCADE',
        "CREATE SCHEMA public",
        'ALTER SCHEMA public OWNER TO "owner"',
        "GRANT USAGE ON SCHEMA public TO PUBLIC",
    ]
    old = _b(0, server_version=140009, schemas=("public",), public_owner=None)
    assert restore_prelude(old, 10)[-2:] == [
        'ALTER SCHEMA public OWNER TO "pg_database_owner"',
        "GRANT ALL ON SCHEMA public TO PUBLIC",
    ]
    assert restore_prelude(_b(0, schemas=("app",)), 1) == [
        "SET lock_timeout = 1000",
        'DROP SCHEMA IF EXISTS "app" CASCADE',
    ]


def test_backups_table_lists_newest_first_with_what_was_pruned():
    a, b = _b(2), _b(1, verified=False, bytes=5 * 1024 * 1024)
    rows = backups_table([a, b], pruned=[a.backup_id])
    assert [r["backup"] for r in rows] == [b.backup_id, a.backup_id]
    assert rows[0]["size"] == "5.0 MiB" and rows[0]["verified"] == "no"
    assert rows[1]["state"] == "pruned" and rows[1]["size"] == "2.0 KiB"
