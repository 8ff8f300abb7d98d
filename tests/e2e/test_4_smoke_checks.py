"""Declarative smoke checks against the real sample service behind the edge proxy."""

from __future__ import annotations

import httpx

from tasks.core.checks import SECURITY_HEADERS, HttpCheck


def test_declarative_checks_pass_on_the_real_service_and_roundtrip_through_the_block(stack):
    from blocks import ServiceSpec
    from tasks.smoke import run_declarative

    checks = [
        HttpCheck(
            name="health",
            path="/health",
            expect_json={"status": "ok"},
            json_schema={"type": "object", "required": ["status", "version", "members"]},
            expect_headers=SECURITY_HEADERS,
            max_latency_ms=2000,
            cors_allowed_origin="https://app.example.com",
            cors_forbidden_origin="https://evil.example",
        ),
        HttpCheck(
            name="vote",
            method="POST",
            path="/votes",
            expect_status=[201],
            json_body={"bill_id": 1, "member_id": 1, "position": "yea", "request_id": "smoke-1"},
            expect_json={"request_id": "smoke-1"},
        ),
    ]
    spec = ServiceSpec.load(stack.service)
    spec.checks = checks
    spec.save("congress-with-checks", overwrite=True)
    loaded = ServiceSpec.load("congress-with-checks")
    assert loaded.checks == checks
    with httpx.Client(timeout=10) as client:
        results = run_declarative(stack.proxy.urls["staging"], loaded.checks, client)
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]
    assert any("CORS refuses https://evil.example" in r.name for r in results)


def test_failing_declarative_check_names_the_difference(stack):
    from tasks.smoke import run_declarative

    check = HttpCheck(
        name="members",
        path="/members?limit=1",
        expect_json={"0.party": "X"},
        expect_headers={"x-frame-options": None},
    )
    with httpx.Client(timeout=10) as client:
        results = run_declarative(stack.proxy.urls["staging"], [check], client)
    failed = {r.name: r for r in results if not r.passed}
    assert set(failed) == {"members: json 0.party", "members: header x-frame-options"}
    assert failed["members: header x-frame-options"].observed == "<missing>"


def test_breached_slo_rolls_the_release_back_and_names_the_threshold(stack):
    import pytest

    from blocks import ServiceSpec
    from flows.release import release
    from tasks.core.checks import LoadPolicy
    from tests.e2e.test_1_release_docker import records, served_version

    before = served_version(stack)
    spec = ServiceSpec.load(stack.service)
    spec.load_policy = LoadPolicy(
        path="/members?limit=5",
        duration_s=3,
        concurrency=4,
        thresholds=["p(95) < 0.01ms", "error_rate < 0.001"],
    )
    spec.save("congress-slo", overwrite=True)
    with pytest.raises(Exception, match=r"p\(95\) < 0\.01ms"):
        release("v14", **stack.params(service="congress-slo"))
    assert served_version(stack) == before
    rec = records(stack)[-1]
    assert rec.version == "v14" and rec.outcome == "rolled-back" and rec.failed_step == "load-test"
    assert "p(95) < 0.01ms" in stack.webhook.texts()[-1]


def test_a_rollback_that_cannot_restore_the_route_keeps_the_new_version_serving(
    stack, docker_client
):
    """The load test fails, but the previous version's container is gone by then (removed
    by hand, a host clean-up): traffic cannot go back. The new version keeps running and
    serving instead of being stopped too, which would serve nothing, and the record says
    so (outcome `kept`, the reason named), so the next release starts from the truth."""
    import pytest

    from flows.release import release
    from tasks.core import history
    from tests.e2e.test_1_release_docker import OnRecord, records, served_version

    before = served_version(stack)
    old = docker_client.containers.list(
        filters={"label": ["io.shipyard.environment=staging", f"io.shipyard.version={before}"]}
    )
    assert old, f"no container of {before} on staging"

    def remove_old() -> None:
        for c in old:
            c.remove(force=True)

    remover = OnRecord(
        stack,
        "staging",
        lambda rec: rec.outcome == "in-progress" and rec.current_step == "load-test",
        remove_old,
    )
    remover.start()
    with pytest.raises(Exception, match=r"p\(95\) < 0\.01ms"):
        release("v14", **stack.params(service="congress-slo"))  # promoted, not rebuilt
    assert remover.finish(), "the load test ended before the old container could be removed"
    rec = records(stack)[-1]
    assert rec.version == "v14" and rec.outcome == "kept", rec.reason
    assert rec.rolled_back_to is None and rec.failed_step == "load-test"
    assert "rollback failed" in (rec.reason or "") and "is gone" in (rec.reason or "")
    assert served_version(stack) == "v14"  # through the proxy: it still answers
    assert history.current(records(stack)) == rec
    assert "kept" in stack.webhook.texts()[-1]


def test_verify_flow_checks_the_serving_version_and_reports_breaches(stack):
    import pytest

    from flows.verify import ThresholdsFailed, verify
    from tests.e2e.test_1_release_docker import served_version

    params = {k: v for k, v in stack.params().items() if k != "registry"}
    out = verify(
        **params,
        duration_s=2,
        concurrency=4,
        thresholds=["p(95) < 3000ms", "error_rate < 0.01"],
    )
    assert out["version"] == served_version(stack)
    assert all(c["passed"] for c in out["smoke"]) and out["load"]["passed"]
    with pytest.raises(ThresholdsFailed, match=r"p\(99\) < 0\.001ms"):
        verify(**params, duration_s=2, rate=20, thresholds=["p(99) < 0.001ms"])
    message = stack.webhook.texts()[-1]
    assert (
        "Verify" in message and "p(99) < 0.001ms" in message and "failed_step: load-test" in message
    )
