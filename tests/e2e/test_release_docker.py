"""The whole release path on a Docker host, through a real Prefect API.

The tests build on each other in file order, like a real environment's
history: v1, v2 under load, a v3 that never gets healthy, a v4 that fails its
smoke check, then rollbacks and pruning.
"""

from __future__ import annotations

import time

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
        switched = time.monotonic()
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
