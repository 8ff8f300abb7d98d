"""A release that moves the service from SQLite to PostgreSQL while a client keeps writing.

Every write the service acknowledged (201) during the whole release must be
in PostgreSQL afterwards; writes refused during the freeze got 503 with
Retry-After and were retried by the client, as a real client would. The
freeze window is measured by the release and must be reported.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from tests.support import services

pytestmark = pytest.mark.timeout(600)


class Writer(threading.Thread):
    """POST /votes in a loop with unique request ids; retries refused writes like a client."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: dict[str, int] = {}
        self.by_version: dict[str, str] = {}  # request id -> the version that acknowledged it
        self.refused = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                rid = uuid.uuid4().hex
                body = {"bill_id": 1, "member_id": 1, "position": "yea", "request_id": rid}
                for _attempt in range(200):
                    try:
                        r = client.post("/votes", json=body)
                    except httpx.HTTPError as exc:
                        self.errors.append(type(exc).__name__)
                        time.sleep(0.05)
                        continue
                    if r.status_code == 201:
                        self.acked[rid] = r.json()["id"]
                        self.by_version[rid] = r.headers.get("x-app-version", "")
                        break
                    if r.status_code == 503:
                        self.refused += 1
                        time.sleep(min(float(r.headers.get("Retry-After", "1")), 0.2))
                        continue
                    self.errors.append(f"{r.status_code} {r.text[:80]}")
                    time.sleep(0.05)
                time.sleep(0.01)


def _bridge_gateway(docker_client) -> str:
    """The host's address on Docker's default bridge, where a container reaches it.
    dockerd 20.10 lists only the subnet; the gateway is then its first address."""
    import ipaddress

    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if ipam.get("Gateway"):
        return str(ipam["Gateway"])
    return str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))


def test_release_with_zero_loss_cutover_to_postgres(stack, docker_client):
    from blocks.postgres import PostgresDatabase
    from flows.release import release
    from tasks.core.models import Outcome

    gateway = _bridge_gateway(docker_client)
    pg = services.start_postgres(services.tmpdir("shipyard-pg-cutover-"), also_listen=gateway)
    try:
        port = pg.dsn.rsplit(":", 1)[1].split("/")[0]
        password = "cut-" + uuid.uuid4().hex[:8]  # trust auth: carried like a real one
        PostgresDatabase(
            dsn=SecretStr(f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"),
            service_dsn=SecretStr(f"postgresql://postgres:{password}@{gateway}:{port}/postgres"),
        ).save("cutover-pg", overwrite=True)
        first = release(**stack.params("staging", version="sqlite1"))
        assert first.outcome == Outcome.SUCCEEDED
        _backup_first_needs_postgres(stack)
        volume = docker_client.volumes.get(f"{stack.service}-data")
        sqlite_path = volume.attrs["Mountpoint"] + "/congress.db"

        writer = Writer(stack.proxy.urls["staging"])
        writer.start()
        time.sleep(2)  # acknowledged writes on SQLite before the release starts
        on_sqlite = len(writer.acked)
        record = release(
            **stack.params("staging", version="pg1"),
            migrate_from=sqlite_path,
            database="cutover-pg",
        )
        time.sleep(2)  # and on PostgreSQL after it
        writer.stop.set()
        writer.join(30)

        assert record.outcome == Outcome.SUCCEEDED, record.reason
        assert on_sqlite > 0 and len(writer.acked) > on_sqlite
        assert record.write_freeze_s is not None and 0 < record.write_freeze_s < 60
        # the rows written during the bulk copy were found by comparing snapshot pages
        assert record.caught_up_by == "pages" and record.freeze_work_s is not None
        assert 0 < record.freeze_work_s < record.write_freeze_s
        assert writer.refused > 0  # the freeze was real: writes were refused, then retried
        with psycopg.connect(pg.dsn) as conn:
            stored = {
                r[0]
                for r in conn.execute(
                    "SELECT request_id FROM votes WHERE request_id = ANY(%s)", (list(writer.acked),)
                )
            }
        missing = set(writer.acked) - stored
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}"
        # and the new version serves from PostgreSQL: its count is PostgreSQL's count
        with psycopg.connect(pg.dsn) as conn:
            pg_votes = conn.execute("SELECT count(*) FROM votes").fetchone()[0]
        stats: dict[str, Any] = httpx.get(stack.proxy.urls["staging"] + "/stats", timeout=10).json()
        assert stats.get("votes") == pg_votes
        print(
            f"cutover: {len(writer.acked)} acknowledged writes, {writer.refused} refused during a "
            f"{record.write_freeze_s:.2f} s freeze (the cutover's work {record.freeze_work_s:.2f} s),"
            " 0 lost"
        )
        assert record.database == "cutover-pg"
        _later_versions_run_on_postgres(stack, pg.dsn)
        _a_second_cutover_is_refused(stack, sqlite_path, pg.dsn)
        _recovery_thaws_a_freeze_left_by_a_dead_release(stack, pg.dsn)
        taken = _a_release_backs_up_its_database_first(stack, pg.dsn)
        _a_restore_behind_the_live_service_loses_no_acknowledged_write(stack, pg.dsn, taken)
    finally:
        services.stop(pg.proc)


def _served_votes(stack, env: str = "staging") -> int:
    stats: dict[str, Any] = httpx.get(stack.proxy.urls[env] + "/stats", timeout=10).json()
    return int(stats["votes"])


def _a_second_cutover_is_refused(stack, sqlite_path: str, dsn: str) -> None:
    """The data lives in PostgreSQL now and the file is stale: the same cutover release
    run again (a re-run workflow, say) is refused before any side effect, naming the
    input, and PostgreSQL keeps every row."""
    from flows.release import release
    from tasks.core.errors import ConfigError
    from tests.e2e.test_1_release_docker import records

    with psycopg.connect(dsn) as conn:
        votes = conn.execute("SELECT count(*) FROM votes").fetchone()[0]
    before = len(records(stack))
    with pytest.raises(ConfigError, match=r"migrate_from: 'staging' already runs on PostgreSQL"):
        release(
            **stack.params("staging", version="pg1"),
            migrate_from=sqlite_path,
            database="cutover-pg",
        )
    assert len(records(stack)) == before
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM votes").fetchone()[0] == votes


def _later_versions_run_on_postgres(stack, dsn: str) -> None:
    """The data lives in PostgreSQL now: a rollback to the version released before the
    cutover is refused by default (one that ignores DATABASE_URL would serve the stale
    file); allowed, it starts with DATABASE_URL too. Its warm standby, started on the
    SQLite file, must not be switched back into service (it would serve the file)."""
    from flows.rollback import rollback
    from tasks.core.errors import RollbackRefused
    from tests.e2e.test_1_release_docker import served_version

    with pytest.raises(RollbackRefused, match=r"sqlite1 was released before the data moved"):
        rollback(**stack.params("staging"), to="sqlite1", lock_timeout_s=60)
    assert served_version(stack) == "pg1"
    back = rollback(**stack.params("staging"), to="sqlite1", lock_timeout_s=60, pre_cutover_ok=True)
    assert back.outcome == "succeeded", back.reason
    health = httpx.get(stack.proxy.urls["staging"] + "/health", timeout=10)
    assert health.headers["x-app-version"] == "sqlite1"
    with psycopg.connect(dsn) as conn:
        pg_votes = conn.execute("SELECT count(*) FROM votes").fetchone()[0]
    assert _served_votes(stack) == pg_votes


def _freeze_switch(stack, env: str) -> tuple[Any, str, str]:
    """(HAProxy runtime, freeze map, backend) of an environment."""
    from blocks import DockerHostTarget
    from tasks.core.haproxy import backend_name
    from tasks.deploy.haproxy import HAProxyRuntime

    target = DockerHostTarget.load(f"{stack.service}-{env}")
    assert target.freeze_map
    return HAProxyRuntime(target.proxy_admin), target.freeze_map, backend_name(stack.service, env)


def _backup_first_needs_postgres(stack) -> None:
    """On SQLite there is nothing to pg_dump: refused before any side effect."""
    from flows.release import release
    from tasks.core.errors import ConfigError
    from tests.e2e.test_1_release_docker import records

    before = len(records(stack))
    with pytest.raises(ConfigError, match=r"backup_first: 'staging' does not run on PostgreSQL"):
        release(**stack.params("staging", version="sqlite1"), backup_first=True)
    assert len(records(stack)) == before


def _a_release_backs_up_its_database_first(stack, dsn: str) -> str:
    """After the cutover, `backup_first` takes a verified pg_dump of the database the
    environment runs on before deploying, and the release record names it."""
    import json
    from pathlib import Path

    from blocks.postgres import PostgresDatabase
    from flows.release import release
    from tests.e2e.test_1_release_docker import served_version

    loaded = PostgresDatabase.load("cutover-pg")
    backups = services.tmpdir("shipyard-release-backups-")
    fields = {k: getattr(loaded, k) for k in PostgresDatabase.model_fields}
    # a new block, not the loaded one: see the load-policy helper below
    PostgresDatabase(**{**fields, "backup_dir": str(backups)}).save("cutover-pg", overwrite=True)
    with psycopg.connect(dsn) as conn:
        votes = conn.execute("SELECT count(*) FROM votes").fetchone()[0]
    record = release(**stack.params("staging", version="pg1"), backup_first=True)
    assert record.outcome == "succeeded", record.reason
    assert served_version(stack) == "pg1"
    assert record.database_backup and "backup-database" in [p.name for p in record.phases]
    manifest = json.loads(Path(backups, f"{record.database_backup}.json").read_text())
    assert manifest["verified_at"] and manifest["label"] == "before release pg1 to staging"
    assert {t["table"]: t["rows"] for t in manifest["tables"]}["votes"] == votes
    assert Path(backups, manifest["file"]).stat().st_size == manifest["bytes"] > 0
    return record.database_backup


def _a_restore_behind_the_live_service_loses_no_acknowledged_write(
    stack, dsn: str, backup_id: str
) -> None:
    """The restore flow given the environment freezes writes from before its safety
    backup until the restore committed: every write the service acknowledged is in
    the safety backup (before the freeze) or in the restored database (after it)."""
    import json
    import subprocess
    from pathlib import Path

    from blocks.postgres import PostgresDatabase
    from flows.restore import restore

    writer = Writer(stack.proxy.urls["staging"])
    writer.start()
    time.sleep(1.5)
    state = restore(
        "cutover-pg",
        backup_id,
        environment="staging",
        service=stack.service,
        target=f"{stack.service}-staging",
        return_state=True,
    )
    time.sleep(1.5)
    writer.stop.set()
    writer.join(30)
    assert state.is_completed(), state.message
    assert writer.refused > 0  # the freeze was real
    acked = list(writer.acked)
    with psycopg.connect(dsn) as conn:
        now = {
            r[0]
            for r in conn.execute(
                "SELECT request_id FROM votes WHERE request_id = ANY(%s)", (acked,)
            )
        }
    backups = Path(str(PostgresDatabase.load("cutover-pg").backup_dir))
    safety = next(
        m
        for m in (json.loads(p.read_text()) for p in backups.glob("*.json"))
        if m["label"] == f"before restore of {backup_id}"
    )
    scratch = dsn.rsplit("/", 1)[0] + "/safety_check"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE safety_check")
    subprocess.run(
        [
            str(services.PG_BIN / "pg_restore"),
            "--no-owner",
            "-d",
            scratch,
            str(backups / safety["file"]),
        ],
        check=True,
        capture_output=True,
    )
    with psycopg.connect(scratch) as conn:
        before = {
            r[0]
            for r in conn.execute(
                "SELECT request_id FROM votes WHERE request_id = ANY(%s)", (acked,)
            )
        }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE safety_check")
    lost = set(acked) - now - before
    assert not lost, (
        f"{len(lost)} of {len(acked)} acknowledged writes in neither, e.g. {sorted(lost)[:3]}"
    )
    assert before and now  # writes landed on both sides of the freeze
    print(
        f"restore: {len(acked)} acknowledged writes ({len(before)} before the freeze,"
        f" {len(now)} after), {writer.refused} refused, 0 lost"
    )


def _recovery_thaws_a_freeze_left_by_a_dead_release(stack, dsn: str) -> None:
    """A release killed while writes were frozen cannot thaw them: the recover flow
    (also run by maintenance, and at the start of every release) does."""
    from flows.recover import recover

    runtime, freeze_map, backend = _freeze_switch(stack, "staging")
    runtime.freeze_writes(freeze_map, backend)  # as the release left it
    rid = uuid.uuid4().hex
    body = {"bill_id": 1, "member_id": 1, "position": "nay", "request_id": rid}
    url = stack.proxy.urls["staging"] + "/votes"
    assert httpx.post(url, json=body, timeout=10).status_code == 503
    actions = recover(**stack.params("staging"), lock_timeout_s=60)
    assert f"thawed writes to {backend}" in actions
    assert not runtime.writes_frozen(freeze_map, backend)
    assert httpx.post(url, json=body, timeout=10).status_code == 201
    with psycopg.connect(dsn) as conn:  # written by sqlite1, on PostgreSQL
        assert conn.execute(
            "SELECT count(*) FROM votes WHERE request_id = %s", (rid,)
        ).fetchone() == (1,)


def test_sigkill_during_the_freeze_then_recover_thaws_and_loses_no_write(stack, docker_client):
    """The release process is killed -9 while writes are frozen: no hook runs, so the
    freeze stays until the recover flow, which thaws it with the previous version still
    serving on its SQLite file. Every write acknowledged before, during and after is there."""
    import os
    import signal
    import sqlite3

    from blocks.postgres import PostgresDatabase
    from flows.recover import recover
    from tasks.core import history
    from tests.e2e.test_1_release_docker import records, served_version
    from tests.e2e.test_2_lock_and_crash import output, start_release

    env = "production"
    if not any(r.outcome == "succeeded" for r in records(stack, env)):  # this file run alone
        from flows.release import release

        assert release(**stack.params(env, version="sqlite1")).outcome == "succeeded"
    before = served_version(stack, env)
    runtime, freeze_map, backend = _freeze_switch(stack, env)
    sqlite_path = docker_client.volumes.get(f"{stack.service}-data").attrs["Mountpoint"]
    sqlite_path += "/congress.db"
    pg = services.start_postgres(services.tmpdir("shipyard-pg-kill-"))
    writer = Writer(stack.proxy.urls[env])
    try:
        PostgresDatabase(dsn=SecretStr(pg.dsn)).save("kill-pg", overwrite=True)
        writer.start()
        time.sleep(1)
        proc = start_release(
            stack, "pg1", env, "--migrate-from", sqlite_path, "--database", "kill-pg"
        )
        try:
            deadline = time.monotonic() + 240
            while not runtime.writes_frozen(freeze_map, backend):
                assert proc.poll() is None, output(proc)
                assert time.monotonic() < deadline, "writes were never frozen"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(1)
        assert runtime.writes_frozen(freeze_map, backend)  # nobody thawed them
        actions = recover(**stack.params(env), lock_timeout_s=150)
        assert f"thawed writes to {backend}" in actions
        time.sleep(1.5)
        writer.stop.set()
        writer.join(30)
    finally:
        writer.stop.set()
        services.stop(pg.proc)
    assert writer.refused > 0  # the freeze was real: writes were refused, then retried
    assert served_version(stack, env) == before
    crashed = next(r for r in records(stack, env) if r.version == "pg1")
    assert crashed.outcome == "crashed" and crashed.failed_step == "migrate"
    assert history.database(records(stack, env)) is None  # production still runs on SQLite
    conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        stored = {
            r[0]
            for r in conn.execute(
                f"SELECT request_id FROM votes WHERE request_id IN ({','.join('?' * len(writer.acked))})",
                list(writer.acked),
            )
        }
    finally:
        conn.close()
    assert writer.acked and set(writer.acked) == stored


def _stored_in_sqlite(path: str, acked: dict[str, int]) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            r[0]: r[1]
            for r in conn.execute(
                f"SELECT request_id, id FROM votes WHERE request_id IN ({','.join('?' * len(acked))})",
                list(acked),
            )
        }
    finally:
        conn.close()


def test_a_load_test_failing_after_the_thaw_writes_back_and_loses_no_write(stack, docker_client):
    """Writes thaw onto PostgreSQL once the new version passed its smoke checks, so the
    freeze does not span the load test. The load test then breaches its SLO: writes are
    frozen again, what the new version wrote is written back into the SQLite file, and
    the old version serves it. Every write acknowledged by either version is in the
    file, under the id the client was given, and ids keep growing without collision."""
    from flows.release import release
    from tasks.core import history
    from tests.e2e.test_1_release_docker import records, served_version

    env = "production"
    if not any(r.outcome == "succeeded" for r in records(stack, env)):  # this test run alone
        assert release(**stack.params(env, version="sqlite1")).outcome == "succeeded"
    assert history.database(records(stack, env)) is None
    before = served_version(stack, env)
    sqlite_path, pg, writer = _cutover_parts(
        stack, docker_client, env, "back-pg", "congress-cut-slo", _slo_breach()
    )
    try:
        writer.start()
        time.sleep(1)
        with pytest.raises(Exception, match=r"p\(95\) < 0\.01ms"):
            release(
                **stack.params(env, version="pg2", service="congress-cut-slo"),
                migrate_from=sqlite_path,
                database="back-pg",
            )
        time.sleep(1.5)  # the old version takes writes again, on its file
        writer.stop.set()
        writer.join(30)
    finally:
        writer.stop.set()
        services.stop(pg.proc)
    assert served_version(stack, env) == before
    rec = records(stack, env)[-1]
    assert rec.version == "pg2" and rec.outcome == "rolled-back", rec.reason
    assert rec.failed_step == "load-test" and not rec.writes_thawed
    assert rec.write_freeze_s is not None and rec.written_back and rec.written_back > 0
    assert history.database(records(stack, env)) is None  # production stays on SQLite
    on_pg = [rid for rid, v in writer.by_version.items() if v == "pg2"]
    assert on_pg, "the new version took no write between the thaw and the load test's end"
    assert writer.refused > 0
    assert not [e for e in writer.errors if e.startswith("5") and not e.startswith("503")]
    stored = _stored_in_sqlite(sqlite_path, writer.acked)
    assert stored == writer.acked, (
        f"{len(set(writer.acked) - set(stored))} acknowledged writes missing from the file"
    )
    _backup_is_the_file_before_the_write_back(rec, writer, "pg2")
    print(
        f"write-back: {len(writer.acked)} acknowledged writes, {len(on_pg)} of them by pg2 on"
        f" PostgreSQL, {rec.written_back} row(s) written back, {rec.write_freeze_s:.2f} s frozen"
    )


def _backup_is_the_file_before_the_write_back(rec: Any, writer: Writer, version: str) -> None:
    """The copy taken before the write-back is a sound database holding what the old
    version wrote, and none of what `version` wrote on PostgreSQL."""
    import sqlite3

    assert rec.backup and rec.backup.endswith(".db"), rec.backup
    ours = [rid for rid, v in writer.by_version.items() if v == version]
    theirs = {rid: i for rid, i in writer.acked.items() if writer.by_version.get(rid) != version}
    in_copy = _stored_in_sqlite(rec.backup, writer.acked)
    assert not set(ours) & set(in_copy), "the backup already holds rows written back"
    assert {rid: theirs[rid] for rid in in_copy} == in_copy and in_copy
    with sqlite3.connect(f"file:{rec.backup}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _cutover_failing_its_load_test(
    stack: Any,
    env: str,
    version: str,
    sqlite_path: str,
    block: str,
    writer: Writer,
    once_thawed: Callable[[], None],
) -> bool:
    """A cutover release of `version` (service congress-cut-slo) whose load test breaches
    its SLO, with `once_thawed` run as soon as its writes thawed onto PostgreSQL and the
    writer writing throughout; returns once writes flowed 1.5 s more, writer stopped.
    Whether `once_thawed` ran."""
    from flows.release import release
    from tests.e2e.test_1_release_docker import OnRecord

    watcher = OnRecord(
        stack, env, lambda rec: rec.version == version and rec.writes_thawed, once_thawed
    )
    writer.start()
    watcher.start()
    try:
        with pytest.raises(Exception, match=r"p\(95\) < 0\.01ms"):
            release(
                **stack.params(env, version=version, service="congress-cut-slo"),
                migrate_from=sqlite_path,
                database=block,
            )
        time.sleep(1.5)  # writes flow on, to whichever version serves
    finally:
        writer.stop.set()
        writer.join(30)
    return watcher.finish()


def _slo_breach() -> Any:
    from tasks.core.checks import LoadPolicy

    return LoadPolicy(
        path="/members?limit=5", duration_s=4, concurrency=2, thresholds=["p(95) < 0.01ms"]
    )


def _stored_in_pg(dsn: str, acked: dict[str, int]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT request_id, id FROM votes WHERE request_id = ANY(%s)", (list(acked),)
            )
        }


def _cutover_parts(
    stack: Any, docker_client: Any, env: str, block: str, service: str, policy: Any
) -> tuple[str, services.Postgres, Writer]:
    """(the SQLite file, a PostgreSQL the containers reach, saved as Postgres Database
    `block`, a writer for `env`) and `service`: the stack's service with `policy`."""
    from blocks import ServiceSpec
    from blocks.postgres import PostgresDatabase

    # a new block, not the loaded one: Block.save(name, overwrite=True) on a loaded block
    # updates the document it was loaded from when `name` exists (prefect 3.8.8), so a
    # second call would have rewritten the stack's own service with this load policy
    loaded = ServiceSpec.load(stack.service)
    fields = {k: getattr(loaded, k) for k in ServiceSpec.model_fields}
    ServiceSpec(**{**fields, "load_policy": policy}).save(service, overwrite=True)
    sqlite_path = docker_client.volumes.get(f"{stack.service}-data").attrs["Mountpoint"]
    gateway = _bridge_gateway(docker_client)
    pg = services.start_postgres(services.tmpdir(f"shipyard-{block}-"), also_listen=gateway)
    port = pg.dsn.rsplit(":", 1)[1].split("/")[0]
    PostgresDatabase(
        dsn=SecretStr(f"postgresql://postgres@127.0.0.1:{port}/postgres"),
        service_dsn=SecretStr(f"postgresql://postgres@{gateway}:{port}/postgres"),
    ).save(block, overwrite=True)
    return sqlite_path + "/congress.db", pg, Writer(stack.proxy.urls[env])


def _killed_during_its_load_test(
    stack: Any, docker_client: Any, env: str, block: str, version: str
) -> tuple[str, services.Postgres, Writer]:
    """A cutover release of `version` in its own process, killed -9 during its load test
    once writes thawed onto PostgreSQL and it acknowledged some: no hook runs, nothing
    is written back. Returns the SQLite file, the PostgreSQL and the writer, running."""
    import os
    import signal

    from tasks.core import history
    from tasks.core.checks import LoadPolicy
    from tests.e2e.test_1_release_docker import records
    from tests.e2e.test_2_lock_and_crash import output, start_release

    if not any(r.outcome == "succeeded" for r in records(stack, env)):  # this test run alone
        from flows.release import release

        assert release(**stack.params(env, version="sqlite1")).outcome == "succeeded"
    assert history.database(records(stack, env)) is None
    sqlite_path, pg, writer = _cutover_parts(
        stack,
        docker_client,
        env,
        block,
        "congress-cut-long",
        LoadPolicy(path="/health", duration_s=60, concurrency=1),
    )
    writer.start()
    proc = start_release(
        stack,
        version,
        env,
        "--service",
        "congress-cut-long",
        "--migrate-from",
        sqlite_path,
        "--database",
        block,
    )
    try:
        deadline = time.monotonic() + 240
        while sum(v == version for v in writer.by_version.values()) < 5:
            assert proc.poll() is None, output(proc)
            assert time.monotonic() < deadline, f"{version} never took a write"
            time.sleep(0.05)
        rec = records(stack, env)[-1]
        assert rec.version == version and rec.writes_thawed and rec.current_step == "load-test"
        assert rec.source == sqlite_path
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return sqlite_path, pg, writer


def test_sigkill_after_the_thaw_then_recover_writes_back_and_restores_the_old_version(
    stack, docker_client
):
    """The release process is killed -9 during its load test, after writes thawed onto
    PostgreSQL: no hook runs. Recovery makes the plan again from the SQLite file,
    freezes writes, writes back what the new version took, and puts the old version
    back on its file, as after any release that died. Every write acknowledged by
    either version is in the file, under the id the client was given."""
    from flows.recover import recover
    from tasks.core import history
    from tests.e2e.test_1_release_docker import records, served_version

    env = "production"
    before = served_version(stack, env)
    sqlite_path, pg, writer = _killed_during_its_load_test(
        stack, docker_client, env, "crash-pg", "pg4"
    )
    try:
        actions = recover(**stack.params(env), lock_timeout_s=150)
        time.sleep(1.5)  # writes flow on, to the file
        writer.stop.set()
        writer.join(30)
        assert any(a.startswith("wrote ") and "pg4 took back" in a for a in actions), actions
        assert f"restored {before}" in actions, actions
        rec = next(r for r in records(stack, env) if r.version == "pg4")
        assert rec.outcome == "crashed" and rec.rolled_back_to == before, rec.reason
        assert not rec.writes_thawed and rec.written_back and rec.written_back > 0
        _backup_is_the_file_before_the_write_back(rec, writer, "pg4")
        assert served_version(stack, env) == before
        assert history.database(records(stack, env)) is None  # production stays on SQLite
        runtime, freeze_map, backend = _freeze_switch(stack, env)
        assert not runtime.writes_frozen(freeze_map, backend)
        assert any(v == "pg4" for v in writer.by_version.values())
        assert not [e for e in writer.errors if e.startswith("5") and not e.startswith("503")]
        stored = _stored_in_sqlite(sqlite_path, writer.acked)
        assert stored == writer.acked, (
            f"{len(set(writer.acked) - set(stored))} acknowledged writes missing from the file"
        )
    finally:
        writer.stop.set()
        services.stop(pg.proc)


def test_sigkill_after_the_thaw_and_a_write_back_that_cannot_run_keeps_the_new_version(
    stack, docker_client
):
    """Killed the same way, but the write-back cannot run: another process holds the
    SQLite file's write lock. The next release recovers first: putting the old version
    back would lose the writes the new one took, so that is kept (outcome `kept`), and
    the environment's data is now in PostgreSQL: the release that follows, whose
    context was loaded before the recovery decided, starts on PostgreSQL too. Every
    acknowledged write is there. Production then runs on this PostgreSQL (stopped after)."""
    import sqlite3

    from flows.release import release
    from tasks.core import history
    from tests.e2e.test_1_release_docker import records, served_version

    env = "production"
    sqlite_path, pg, writer = _killed_during_its_load_test(
        stack, docker_client, env, "kept-pg4", "pg5"
    )
    holder = sqlite3.connect(sqlite_path, timeout=1)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write-back's own BEGIN IMMEDIATE times out
        then = release(**stack.params(env, version="sqlite1"))
        holder.rollback()
        time.sleep(1)  # writes flow on, to PostgreSQL
        writer.stop.set()
        writer.join(30)
        kept = next(r for r in records(stack, env) if r.version == "pg5")
        assert kept.outcome == "kept", kept.reason
        assert "could not be written back" in (kept.reason or "")
        assert "locked" in (kept.reason or "")
        assert then.outcome == "succeeded" and served_version(stack, env) == "sqlite1"
        assert history.database(records(stack, env)) == "kept-pg4"
        with psycopg.connect(pg.dsn) as conn:
            pg_votes = conn.execute("SELECT count(*) FROM votes").fetchone()[0]
        assert _served_votes(stack, env) == pg_votes  # it serves PostgreSQL, not the file
        runtime, freeze_map, backend = _freeze_switch(stack, env)
        assert not runtime.writes_frozen(freeze_map, backend)
        assert _stored_in_pg(pg.dsn, writer.acked) == writer.acked
    finally:
        holder.close()
        writer.stop.set()
        services.stop(pg.proc)


def _kept_on_postgres(
    stack: Any, env: str, version: str, block: str, dsn: str, writer: Writer
) -> None:
    """`version` serves, the environment's data is in `block`, writes flow (it took some),
    and every acknowledged write is in PostgreSQL."""
    from tasks.core import history
    from tests.e2e.test_1_release_docker import records, served_version

    assert served_version(stack, env) == version
    assert history.database(records(stack, env)) == block
    runtime, freeze_map, backend = _freeze_switch(stack, env)
    assert not runtime.writes_frozen(freeze_map, backend)
    assert _stored_in_pg(dsn, writer.acked) == writer.acked
    assert any(v == version for v in writer.by_version.values())


def test_a_write_back_that_cannot_run_keeps_the_new_version_serving(stack, docker_client):
    """The load test fails after the thaw, and the write-back cannot run: the new
    version changed PostgreSQL's schema meanwhile (here a renamed table, as an
    application's own migration might). Going back would lose the writes it took,
    so it keeps serving (outcome `kept`), writes flow, and every acknowledged write
    is in PostgreSQL. On the canary environment, whose first release runs on the
    SQLite file all environments of the sample stack share."""
    from flows.release import release
    from tests.e2e.test_1_release_docker import records

    env = "canary"
    assert release(**stack.params(env, version="sqlite1")).outcome == "succeeded"
    sqlite_path, pg, writer = _cutover_parts(
        stack, docker_client, env, "kept-pg", "congress-cut-slo", _slo_breach()
    )

    def rename_members() -> None:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE members RENAME TO members_moved")

    try:
        acted = _cutover_failing_its_load_test(
            stack, env, "pg3", sqlite_path, "kept-pg", writer, rename_members
        )
        assert acted, "writes never thawed"
        rec = records(stack, env)[-1]
        assert rec.version == "pg3" and rec.outcome == "kept", rec.reason
        assert "write-back failed" in (rec.reason or "") and "members" in (rec.reason or "")
        assert rec.writes_thawed and rec.rolled_back_to is None
        _kept_on_postgres(stack, env, "pg3", "kept-pg", pg.dsn, writer)
    finally:
        writer.stop.set()
        services.stop(pg.proc)


def test_a_write_back_whose_old_version_is_gone_keeps_the_new_version_serving(stack, docker_client):
    """The load test fails after the thaw and the write-back succeeds, but the old
    version's container was removed meanwhile: traffic cannot go back. The new version
    keeps serving on PostgreSQL (outcome `kept`, the rollback's failure named), writes
    thaw onto it, and every acknowledged write is in PostgreSQL. On the preview
    environment, whose first release runs on the SQLite file the stack shares."""
    from flows.release import release
    from tests.e2e.test_1_release_docker import records

    env = "preview"
    assert release(**stack.params(env, version="sqlite1")).outcome == "succeeded"
    old = docker_client.containers.list(
        filters={"label": [f"io.shipyard.environment={env}", "io.shipyard.version=sqlite1"]}
    )
    assert old
    sqlite_path, pg, writer = _cutover_parts(
        stack, docker_client, env, "stuck-pg", "congress-cut-slo", _slo_breach()
    )

    def remove_old() -> None:
        for c in old:
            c.remove(force=True)

    try:
        acted = _cutover_failing_its_load_test(
            stack, env, "pg6", sqlite_path, "stuck-pg", writer, remove_old
        )
        assert acted, "the old version was never removed"
        rec = records(stack, env)[-1]
        assert rec.version == "pg6" and rec.outcome == "kept", rec.reason
        assert "rollback failed" in (rec.reason or "") and "is gone" in (rec.reason or "")
        assert rec.writes_thawed and rec.rolled_back_to is None
        assert rec.written_back is not None and rec.backup  # the write-back itself ran
        _kept_on_postgres(stack, env, "pg6", "stuck-pg", pg.dsn, writer)
    finally:
        writer.stop.set()
        services.stop(pg.proc)
