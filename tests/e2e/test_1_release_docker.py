"""The whole release path on a Docker host, through a real Prefect API.

The tests build on each other in file order, like a real environment's
history: v1, v2 under load, a v3 that never gets healthy, a v4 that fails its
smoke check, then rollbacks and pruning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.probe import Probe

FAULT = """

@app.middleware("http")
async def _injected_fault(request, call_next):
    if request.url.path.startswith("{path}"):
        return JSONResponse({{"status": "broken"}}, status_code={status})
    return await call_next(request)
"""


def served_version(stack, env="staging") -> str:
    return httpx.get(stack.proxy.urls[env] + "/health", timeout=5).headers["x-app-version"]


def inject(stack, path: str, status: int) -> str:
    main = stack.context / "app" / "main.py"
    original = main.read_text()
    main.write_text(original + FAULT.format(path=path, status=status))
    return original


def records(stack, env="staging"):
    from tasks.ledger import Ledger

    return Ledger(str(stack.state_dir), stack.service, env).records()


class OnRecord(threading.Thread):
    """Runs `action` once, as soon as the environment's latest ledger record satisfies
    `condition` (polled every 50 ms), while the test's own thread runs a release:
    the way to act at one exact step of it (remove a container during its load test,
    change PostgreSQL once writes thawed)."""

    def __init__(
        self,
        stack: Any,
        env: str,
        condition: Callable[[Any], bool],
        action: Callable[[], None],
        timeout_s: float = 180,
    ) -> None:
        super().__init__(daemon=True)
        self.stack, self.env, self.condition, self.action = stack, env, condition, action
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.acted = False

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            found = records(self.stack, self.env)
            if found and self.condition(found[-1]):
                self.action()
                self.acted = True
                return
            time.sleep(0.05)

    def finish(self) -> bool:
        """Stop watching; whether the action ran."""
        self.stop.set()
        self.join(10)
        return self.acted


def test_first_release(stack):
    from flows.release import release

    record = release("v1", **stack.params())
    assert record.outcome == "succeeded"
    assert record.digest and record.digest.startswith("sha256:")
    assert served_version(stack) == "v1"
    assert [p.name for p in record.phases] == [
        "build-image",
        "push-image",
        "deploy",
        "smoke-check",
        "finalize",
    ]
    assert any("succeeded" in t and "v1" in t for t in stack.webhook.texts())


def test_v2_under_load_loses_no_request(stack):
    from flows.release import release

    with Probe(
        stack.proxy.urls["staging"] + "/members?limit=1", connections=24, max_seconds=240
    ) as probe:
        time.sleep(1.0)
        release("v2", **stack.params())
        switched = time.time()
        time.sleep(1.5)
    result = probe.result
    assert result.ok > 100
    assert result.failed == 0, result.errors
    assert result.versions_after(switched + 0.2) == {"v2"}
    assert served_version(stack) == "v2"


def test_v3_never_healthy_fails_and_v2_keeps_serving(stack):
    from flows.release import release

    original = inject(stack, "/health", 503)
    try:
        with pytest.raises(Exception, match=r"unhealthy|not healthy"):
            release("v3", **stack.params())
    finally:
        (stack.context / "app" / "main.py").write_text(original)
    assert served_version(stack) == "v2"
    rec = records(stack)[-1]
    assert rec.version == "v3" and rec.outcome == "failed" and rec.failed_step == "deploy"
    message = stack.webhook.texts()[-1]
    assert "v3" in message and "failed_step: deploy" in message and "unhealthy" in message


def test_v4_failing_smoke_is_rolled_back(stack):
    from flows.release import release

    original = inject(stack, "/members", 500)
    try:
        with pytest.raises(Exception, match=r"smoke check"):
            release("v4", **stack.params())
    finally:
        (stack.context / "app" / "main.py").write_text(original)
    assert served_version(stack) == "v2"
    rec = records(stack)[-1]
    assert rec.version == "v4" and rec.outcome == "rolled-back"
    assert rec.failed_step == "smoke-check" and rec.rolled_back_to == "v2"
    assert "GET /members" in (rec.reason or "")


def test_more_releases_then_rollback_previous_is_a_proxy_switch(stack):
    from flows.release import release
    from flows.rollback import rollback

    release("v5", **stack.params())
    release("v6", **stack.params())
    assert served_version(stack) == "v6"
    started = time.monotonic()
    record = rollback(to="previous", **stack.params())
    assert time.monotonic() - started < 30
    assert record.kind == "rollback" and record.version == "v5" and record.outcome == "succeeded"
    assert served_version(stack) == "v5"
    # the version rolled away from is marked bad, so "last-good" will not pick it
    assert any(r.version == "v6" and r.marked_bad for r in records(stack))


def test_rollback_three_releases_back_without_rebuild(stack, docker_client):
    from flows.rollback import rollback

    # successful history, newest first: v5 (rollback), v6, v5, v2, v1 -> v2 is three releases back
    before = {i.id for i in docker_client.images.list()}
    record = rollback(to="v2", **stack.params())
    assert record.version == "v2" and served_version(stack) == "v2"
    v2 = next(r for r in records(stack) if r.version == "v2" and r.kind == "release")
    assert record.digest == v2.digest
    assert {i.id for i in docker_client.images.list()} <= before  # nothing was built


def test_rollback_to_pruned_version_is_refused(stack):
    from flows.rollback import rollback
    from tasks.core.errors import RollbackRefused

    # keep_releases=3 and v2, v5, v6 are the newest: v1's image is gone (host and registry)
    with pytest.raises(RollbackRefused, match="pruned"):
        rollback(to="v1", **stack.params())
    with pytest.raises(RollbackRefused, match="never released"):
        rollback(to="v4", **stack.params())
    assert served_version(stack) == "v2"


def test_last_good_skips_versions_marked_bad(stack):
    from flows.rollback import rollback
    from tasks.core.errors import RollbackRefused

    # serving v2; v6 and v5 were rolled away from (marked bad), so last-good would be v1,
    # whose image is pruned: refused, and v2 keeps serving
    assert {r.version for r in records(stack) if r.marked_bad} == {"v5", "v6"}
    with pytest.raises(RollbackRefused, match="v1"):
        rollback(to="last-good", **stack.params())
    assert served_version(stack) == "v2"


def test_secrets_never_leak(stack, prefect_server):
    """Registry password and secret env must not appear in logs, artifacts, notifications, reprs."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter
    from prefect_docker import DockerRegistryCredentials

    from blocks import ServiceSpec

    needles = [stack.registry.password, stack.secret_value]
    haystacks: list[str] = []
    haystacks += stack.webhook.texts()
    for path in stack.state_dir.iterdir():
        if path.is_file():
            haystacks.append(path.read_text())
    haystacks.append(repr(ServiceSpec.load(stack.service)))
    haystacks.append(repr(DockerRegistryCredentials.load("test-registry")))
    haystacks.append(str(ServiceSpec.load(stack.service).model_dump()))
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(), limit=200)
        offset = 200
        while logs:
            haystacks += [entry.message for entry in logs]
            logs = client.read_logs(log_filter=LogFilter(), limit=200, offset=offset)
            offset += 200
        artifacts = client.read_artifacts(limit=200)
        offset = 200
        while artifacts:  # every page: the server holds every test's artifacts
            haystacks += [str(a.data) + str(a.description) for a in artifacts]
            artifacts = client.read_artifacts(limit=200, offset=offset)
            offset += 200
        runs = client.read_flow_runs(limit=200)
        haystacks += [str(r.state.message if r.state else "") + str(r.parameters) for r in runs]
    assert len(haystacks) > 50
    # the test itself can find them where they must be: in the container environment
    import docker

    env = (
        docker.from_env()
        .containers.list(filters={"label": f"io.shipyard.service={stack.service}"})[0]
        .attrs
    )
    assert stack.secret_value in str(env["Config"]["Env"])
    for needle in needles:
        leaks = [h[:200] for h in haystacks if needle in h]
        assert not leaks, f"secret leaked into: {leaks}"
