"""prefect.yaml deployments on a real server and process worker, driven by the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_1_release_docker import inject, records, served_version
from tests.support import services


def cli(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPYARD_PROJECT_DIR": str(services.ROOT)}
    proc = subprocess.run(
        ["prefect", "--no-prompt", *args],
        cwd=services.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"prefect {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def worker(stack: Any) -> Iterator[subprocess.Popen[str]]:
    cli("work-pool", "create", "shipyard", "--type", "process", "--overwrite", check=True)
    cli("deploy", "--all", check=True)
    env = {**os.environ, "SHIPYARD_PROJECT_DIR": str(services.ROOT)}
    log = open(stack.state_dir / "worker.log", "w")
    proc = subprocess.Popen(
        ["prefect", "worker", "start", "--pool", "shipyard", "--type", "process"],
        cwd=services.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    services.stop(proc)
    log.close()


def run(
    stack: Any, deployment: str, watch: bool = True, **params: Any
) -> subprocess.CompletedProcess[str]:
    merged = {k: v for k, v in stack.params().items() if k != "environment"} | params
    args = ["deployment", "run", deployment, "--params", json.dumps(merged)]
    if watch:
        args += ["--watch", "--watch-timeout", "400"]
    return cli(*args)


def flow_run_state(run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value if state else "?"


def run_id_of(out: str) -> str:
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def test_release_deployment_succeeds_with_exit_code_zero(stack, worker):
    proc = run(stack, "release/staging", version="v10")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert flow_run_state(run_id_of(proc.stdout)) == "COMPLETED"
    assert served_version(stack) == "v10"
    assert records(stack)[-1].trigger == "deployment"


def test_failed_release_deployment_exits_non_zero(stack, worker):
    original = inject(stack, "/health", 503)
    try:
        proc = run(stack, "release/staging", version="v11")
    finally:
        (stack.context / "app" / "main.py").write_text(original)
    assert proc.returncode != 0
    assert flow_run_state(run_id_of(proc.stdout)) == "FAILED"
    assert served_version(stack) == "v10"


def test_cancel_during_deploy_leaves_previous_serving(stack, worker, docker_client):
    # a version that takes long to become healthy, so the cancel lands during deploy
    main = stack.context / "app" / "main.py"
    original = main.read_text()
    main.write_text(
        original.replace("    yield\n", "    import time as _t\n    _t.sleep(25)\n    yield\n", 1)
    )
    try:
        proc = run(stack, "release/staging", watch=False, version="v12")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_id = run_id_of(proc.stdout)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if docker_client.containers.list(
                all=True, filters={"label": f"io.shipyard.release={run_id}"}, ignore_removed=True
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("v12 never started its container")
    finally:
        main.write_text(original)
    cli("flow-run", "cancel", run_id, check=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and flow_run_state(run_id) != "CANCELLED":
        time.sleep(0.5)
    assert flow_run_state(run_id) == "CANCELLED"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec = next((r for r in records(stack) if r.release_id == run_id), None)
        if rec is not None and rec.outcome != "in-progress":
            break
        time.sleep(0.5)
    assert rec is not None and rec.outcome == "cancelled", rec
    assert served_version(stack) == "v10"
    assert not docker_client.containers.list(
        all=True, filters={"label": f"io.shipyard.release={run_id}"}
    )
    assert any("cancelled" in t and "v12" in t for t in stack.webhook.texts())


def test_migrate_deployment_runs_on_the_worker(stack, worker, tmp_path):
    """The migrate flow as a user starts it: `prefect deployment run migrate/staging` on a
    process worker, whose flow-run process forks the SQLite worker processes."""
    import sqlite3

    import psycopg
    from pydantic import SecretStr

    from blocks.postgres import PostgresDatabase

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);"
            "CREATE VIEW top AS SELECT name FROM t WHERE score > 0.5;"
        )
        conn.executemany(
            "INSERT INTO t (name, score) VALUES (?, ?)",
            [(f'n{i}, "q"', i / 1000) for i in range(30_000)],
        )
    pg = services.start_postgres(services.tmpdir("shipyard-e2e-migrate-"))
    try:
        PostgresDatabase(dsn=SecretStr(pg.dsn)).save("e2e-migrate-target", overwrite=True)
        params = {"sqlite_path": str(db), "database": "e2e-migrate-target", "dry_run": False}
        proc = cli(
            "deployment", "run", "migrate/staging", "--params", json.dumps(params),
            "--watch", "--watch-timeout", "300",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert flow_run_state(run_id_of(proc.stdout)) == "COMPLETED"
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT count(*), max(score) FROM public.t").fetchone() == (
                30_000,
                29.999,
            )
            assert conn.execute("SELECT count(*) FROM public.top").fetchone() == (29_499,)
    finally:
        services.stop(pg.proc)
