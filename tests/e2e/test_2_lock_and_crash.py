"""The environment lock, and the recovery path after a release process is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.objects import StateType

from tests.conftest import Stack
from tests.e2e.test_1_release_docker import records, served_version


def start_release(
    stack: Stack, version: str, env: str = "staging", *extra: str
) -> subprocess.Popen[bytes]:
    """A release in its own process, its output in a file: a pipe nobody reads until
    the end fills up (64 KB of build and Prefect logs) and blocks the release in a
    write() before it ever deploys."""
    p = stack.params(env)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.release",
            version,
            "--environment",
            env,
            "--service",
            p["service"],
            "--target",
            p["target"],
            "--registry",
            p["registry"],
            "--notifier",
            p["notifier"],
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen[bytes]) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read().decode(errors="replace")[-3000:])


def wait_in_progress(
    stack: Stack,
    version: str,
    env: str = "staging",
    step: str | None = None,
    timeout: float = 120,
    proc: subprocess.Popen[bytes] | None = None,
):
    """The release's record once it is in `step` (any step by default)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in records(stack, env):
            if (
                r.version == version
                and r.outcome == "in-progress"
                and (step is None or r.current_step == step)
            ):
                return r
        time.sleep(0.1)
    last = [r for r in records(stack, env) if r.version == version]
    raise AssertionError(
        f"{version} never reached {step or 'in-progress'}; record: {last[-1:]}; "
        + (output(proc) if proc is not None else "")
    )


AFTER_PUSH = ("deploy", "smoke-check", "load-test", "finalize")


def test_second_release_is_refused_naming_holder_and_other_environment_runs_in_parallel(stack):
    from flows.release import release
    from tasks.core.errors import ReleaseLocked

    holder = start_release(stack, "v7")
    try:
        held = wait_in_progress(stack, "v7", proc=holder)
        with pytest.raises(ReleaseLocked) as err:
            release("v8", lock_timeout_s=1, **stack.params())
        assert held.flow_run_name and held.flow_run_name in str(err.value)
        assert "locked by" in str(err.value)
        # once staging has pushed v7, production promotes the same digest while staging still
        # runs: any step after the push, finalize included, will do (a cached build left a
        # 2.8 s deploy, shorter than the refused release's round trip on a loaded machine)
        deadline = time.monotonic() + 120
        while not any(
            r.version == "v7" and r.finished_at is None and r.current_step in AFTER_PUSH
            for r in records(stack)
        ):
            assert holder.poll() is None, "staging finished too early: " + output(holder)
            assert time.monotonic() < deadline, output(holder)
            time.sleep(0.05)
        called_at = datetime.now(UTC)  # the flow's own start-up can outlast staging's deploy
        production = release("v7", lock_timeout_s=1, **stack.params("production"))
        assert holder.wait(300) == 0, output(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
    staging = next(r for r in records(stack) if r.version == "v7")
    assert staging.outcome == "succeeded" and production.outcome == "succeeded"
    # the two environments' releases overlapped in time: production was started while
    # staging ran, and went through with a 1 s lock timeout (staging's lock is not its own)
    assert called_at < staging.finished_at and staging.started_at < production.finished_at
    assert served_version(stack, "staging") == "v7" and served_version(stack, "production") == "v7"
    assert not any(r.version == "v8" for r in records(stack))
    assert production.digest == staging.digest
    assert production.phases[0].name == "deploy"  # promoted: no build, no push


def test_sigkill_during_deploy_then_recover_restores_previous(stack, docker_client):
    from flows.recover import recover

    before = served_version(stack)
    proc = start_release(stack, "v9")
    try:
        rec = wait_in_progress(stack, "v9", step="deploy", proc=proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = docker_client.containers.list(  # a container may go while we look
                all=True,
                filters={"label": f"io.shipyard.release={rec.release_id}"},
                ignore_removed=True,
            )
            if found:
                break
            time.sleep(0.05)
        assert found, "the release never started its container"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    actions = recover(lock_timeout_s=150, **{k: v for k, v in stack.params().items()})
    assert served_version(stack) == before
    assert not docker_client.containers.list(
        all=True, filters={"label": f"io.shipyard.release={rec.release_id}"}
    )
    crashed = next(r for r in records(stack) if r.release_id == rec.release_id)
    assert crashed.outcome == "crashed" and crashed.failed_step == "deploy"
    assert any("removed" in a for a in actions)
    # the killed process is provably gone (same machine): its lock lease was released at
    # once rather than after 60 s, and the run it was shows as crashed, not running
    assert f"released the lock of dead flow run {rec.flow_run_name!r}" in actions[0], actions
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(rec.flow_run_id)).state
    assert state is not None and state.type == StateType.CRASHED, state


def test_maintenance_stops_standby_after_bake_window_and_rollback_still_works(stack, docker_client):
    from blocks import DockerHostTarget
    from flows.maintenance import maintenance
    from flows.release import release
    from flows.rollback import rollback

    release("v13", **stack.params("production"))  # v7 stays warm as standby
    label = {
        "label": [f"io.shipyard.service={stack.service}", "io.shipyard.environment=production"]
    }
    assert len(docker_client.containers.list(filters=label)) == 2
    block = DockerHostTarget.load(f"{stack.service}-production")
    block.bake_window_s = 0.5
    block.save(f"{stack.service}-production", overwrite=True)
    time.sleep(1)
    actions = maintenance(**stack.params("production"))
    assert any("stopped standby" in a and "v7" in a for a in actions)
    running = docker_client.containers.list(filters=label)
    assert [c.labels["io.shipyard.version"] for c in running] == ["v13"]
    # past the bake window rollback starts the retained image again
    record = rollback(to="previous", **stack.params("production"))
    assert record.version == "v7" and served_version(stack, "production") == "v7"
