"""The backup and restore flows on the real Prefect API, against a real PostgreSQL whose
owner logs in with a password."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from tasks.core.errors import ConfigError
from tests.support import services

PASSWORD = "bk-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def database(prefect_server: Any) -> Iterator[tuple[str, str, Path]]:
    """(block name, the owner's DSN, the backup directory)."""
    pg = services.start_postgres(services.tmpdir("shipyard-pg-e2e-backup-"))
    hba = pg.root / "data" / "pg_hba.conf"
    hba.write_text("host all owner 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE owner LOGIN CREATEDB PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE congress OWNER owner")
        conn.execute("SELECT pg_reload_conf()")
    port = pg.dsn.split(":")[2].split("/")[0]
    dsn = f"postgresql://owner:{PASSWORD}@127.0.0.1:{port}/congress"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE members (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO members SELECT g, 'm' || g FROM generate_series(1, 2000) g")
    directory = services.tmpdir("shipyard-backups-")
    name = "e2e-backup-postgres"
    PostgresDatabase(dsn=SecretStr(dsn), backup_dir=str(directory), keep_last=2, keep_days=0).save(
        name, overwrite=True
    )
    yield name, dsn, directory
    services.stop(pg.proc)


def _members(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT * FROM members ORDER BY id").fetchall()


def _everything_said(run_ids: list[Any]) -> list[str]:
    """Logs, parameters, state messages and artifacts of these runs, as the UI shows them."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
    )

    time.sleep(1.0)  # logs are shipped in batches
    out: list[str] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
        )
        out += [str(r.parameters) + str(r.state.message if r.state else "") for r in runs]
        out += [
            e.message
            for e in client.read_logs(
                log_filter=LogFilter(flow_run_id={"any_": run_ids}), limit=200
            )
        ]
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        )
        out += [f"{a.key}\n{a.data}\n{a.description}" for a in arts]
    return out


def test_scheduled_backups_are_verified_and_pruned(database):
    from flows.backup import backup

    name, _dsn, directory = database
    states = [backup(name, label=f"run {i}", return_state=True) for i in range(3)]
    assert all(s.is_completed() for s in states)
    made = [s.result() for s in states]
    assert all(m.verified_at is not None for m in made)
    kept = sorted(p.name for p in directory.glob("*.dump"))
    assert kept == sorted(m.file for m in made[1:])  # keep_last=2, keep_days=0
    said = _everything_said([s.state_details.flow_run_id for s in states])
    tables = [s for s in said if s.startswith("postgres-backups\n")]
    assert len(tables) == 3
    # the third run's table is the one listing all three backups (artifacts come unordered)
    last = max((json.loads(t.split("\n", 1)[1].rsplit("\n", 1)[0]) for t in tables), key=len)
    by_id = {row["backup"]: row for row in last}
    assert by_id[made[0].backup_id]["state"] == "pruned"
    assert (
        by_id[made[2].backup_id]["verified"] == "yes" and by_id[made[2].backup_id]["rows"] == "2000"
    )
    assert any(s.startswith("postgres-backup-progress") for s in said)
    assert any("restores: every table's rows and content match" in s for s in said)
    leaks = [s[:200] for s in said if PASSWORD in s]
    assert not leaks, leaks


def test_restore_takes_a_safety_backup_and_can_itself_be_undone(database):
    from flows.backup import backup
    from flows.restore import restore

    name, dsn, directory = database
    good = backup(name, label="before the bad day")
    original = _members(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE members SET name = upper(name) WHERE id <= 100")
        conn.execute("DELETE FROM members WHERE id > 1500")
        conn.execute("CREATE TABLE scratch (x int)")
    damaged = _members(dsn)
    state = restore(name, good.backup_id, return_state=True)
    assert state.is_completed(), state.message
    assert _members(dsn) == original
    safety = [
        json.loads(p.read_text())
        for p in directory.glob("*.json")
        if json.loads(p.read_text())["label"] == f"before restore of {good.backup_id}"
    ]
    assert len(safety) == 1 and safety[0]["verified_at"]
    said = _everything_said([state.state_details.flow_run_id])
    summary = next(s for s in said if s.startswith("postgres-restore\n"))
    assert f"undo: restore `{safety[0]['backup_id']}`" in summary
    assert not [s for s in said if PASSWORD in s]

    # undoing the restore: back to the damaged state, scratch table included
    restore(name, safety[0]["backup_id"], safety_backup=False)
    assert _members(dsn) == damaged
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.scratch')").fetchone() is not None


def test_bad_input_is_refused_before_any_side_effect(database):
    from flows.backup import backup
    from flows.restore import restore

    name, dsn, directory = database
    before = sorted(p.name for p in directory.iterdir())
    with pytest.raises(ConfigError, match="backup_id: no backup 'nope'"):
        restore(name, "nope")
    with pytest.raises(ConfigError, match="lock_timeout_s"):
        restore(name, "latest", lock_timeout_s=0)
    PostgresDatabase(dsn=SecretStr(dsn)).save("e2e-no-backup-dir", overwrite=True)
    with pytest.raises(ConfigError, match="backup_dir"):
        backup("e2e-no-backup-dir")
    with pytest.raises(ConfigError, match="database"):
        backup("no-such-block")
    assert sorted(p.name for p in directory.iterdir()) == before


def test_command_line_prints_the_manifest(database):
    name, _dsn, directory = database
    proc = subprocess.run(
        [sys.executable, "-m", "flows.backup", name, "--json", "--label", "cli"],
        cwd=services.ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads(proc.stdout.strip().splitlines()[-1])
    assert manifest["label"] == "cli" and manifest["verified_at"]
    assert (directory / manifest["file"]).is_file()
    assert PASSWORD not in proc.stdout + proc.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "flows.backup", "no-such-block"],
        cwd=services.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 1 and "no Shipyard Postgres Database block" in bad.stderr


def test_failures_and_restores_are_notified_without_the_password(database, webhook):
    from flows.backup import backup
    from flows.restore import restore
    from tests.support.blocks import save_webhook

    name, dsn, directory = database
    save_webhook(webhook, "backup-ops")
    # a scheduled backup that cannot run: a wrong password in the block
    wrong = dsn.replace(PASSWORD, PASSWORD[::-1])
    PostgresDatabase(dsn=SecretStr(wrong), backup_dir=str(directory)).save(
        "e2e-wrong-password", overwrite=True
    )
    seen = len(webhook.messages)
    failed = backup("e2e-wrong-password", notifier="custom-webhook/backup-ops", return_state=True)
    assert failed.is_failed()
    (message,) = webhook.messages[seen:]
    assert message["subject"] == "❌ backup of congress: failed"
    assert "password authentication failed" in message["body"]
    # a restore tells how it ended and how to undo it
    good = backup(name)
    restore(name, good.backup_id, notifier="custom-webhook/backup-ops")
    done = webhook.messages[-1]
    assert done["subject"] == "✅ restore of congress: succeeded"
    assert f"backup: {good.backup_id}" in done["body"] and "undo: restore " in done["body"]
    texts = webhook.texts()
    assert not [t for t in texts if PASSWORD in t or PASSWORD[::-1] in t]
    with pytest.raises(ConfigError, match="notifier"):
        backup(name, notifier="custom-webhook/nobody")
    PostgresDatabase(dsn=SecretStr(dsn), backup_dir=str(directory), offsite_bucket="nope").save(
        "e2e-missing-bucket", overwrite=True
    )
    with pytest.raises(ConfigError, match="offsite_bucket: no S3 Bucket block named 'nope'"):
        backup("e2e-missing-bucket")


def test_offsite_copies_restore_on_a_host_that_lost_its_backups(database):
    """The block names an S3 bucket (moto's server, through prefect-aws's blocks and
    boto3): backups go there too and are pruned there; a restore on a host whose
    backup directory is empty fetches the dump, checks it and restores."""
    from prefect_aws import AwsCredentials, S3Bucket

    from flows.backup import backup
    from flows.restore import restore

    _name, dsn, _directory = database
    moto = services.start_moto()
    try:
        creds = AwsCredentials(
            aws_access_key_id="AKIDE2E",
            aws_secret_access_key="e2e-" + secrets.token_hex(8),
            region_name="us-east-1",
            aws_client_parameters={"endpoint_url": moto.url},
        )
        s3 = creds.get_client("s3")
        s3.create_bucket(Bucket="offsite")
        S3Bucket(bucket_name="offsite", credentials=creds, bucket_folder="congress").save(
            "e2e-offsite-bucket", overwrite=True
        )

        def on_host(prefix: str) -> Path:  # the block as a host with an empty backup_dir sees it
            host = services.tmpdir(prefix)
            PostgresDatabase(
                dsn=SecretStr(dsn),
                backup_dir=str(host),
                keep_last=1,
                keep_days=0,
                offsite_bucket="e2e-offsite-bucket",
            ).save("e2e-offsite", overwrite=True)
            return host

        first_host = on_host("shipyard-backups-host1-")
        old = backup("e2e-offsite")
        new = backup("e2e-offsite")
        assert new.offsite == f"s3://offsite/congress/{new.file}"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="offsite")["Contents"]}
        assert keys == {f"congress/{new.file}", f"congress/{new.backup_id}.json"}  # old pruned
        assert old.backup_id not in {p.stem for p in first_host.iterdir()}
        original = _members(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM members WHERE id % 2 = 0")

        second_host = on_host("shipyard-backups-host2-")
        done = restore("e2e-offsite", "latest", safety_backup=False)
        assert done.backup_id == new.backup_id
        assert _members(dsn) == original
        assert (second_host / new.file).is_file()
    finally:
        services.stop(moto.proc)


def test_databases_sharing_a_backup_directory_keep_their_backups_apart(database):
    """Two blocks pointing at one backup_dir: each one's retention prunes only its own
    database's backups, and "latest" means the newest backup of the database restored."""
    from flows.backup import backup
    from flows.restore import restore

    name, dsn, directory = database
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE inventory")
    other = dsn.rsplit("/", 1)[0] + "/inventory"
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items SELECT generate_series(1, 10)")
    PostgresDatabase(
        dsn=SecretStr(other), backup_dir=str(directory), keep_last=1, keep_days=0
    ).save("e2e-inventory", overwrite=True)
    backup(name)
    ours = {json.loads(p.read_text())["backup_id"] for p in directory.glob("*.json")}
    assert ours  # congress's backups (this test's, and the earlier tests' kept ones)
    backup("e2e-inventory")
    newest_other = backup("e2e-inventory")
    manifests = [json.loads(p.read_text()) for p in directory.glob("*.json")]
    assert {m["backup_id"] for m in manifests if m["database"] == "congress"} == ours
    assert [m["backup_id"] for m in manifests if m["database"] == "inventory"] == [
        newest_other.backup_id
    ]
    done = restore(name, "latest", safety_backup=False)
    assert done.backup_id in ours  # congress's newest, not inventory's (newer still)
