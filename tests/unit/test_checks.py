"""Declarative smoke checks: every difference is named."""

from __future__ import annotations

from tasks.core.checks import SECURITY_HEADERS, HttpCheck, evaluate, evaluate_cors


def test_all_expectations_pass_and_fail_with_what_differed():
    check = HttpCheck(
        name="health",
        path="/health",
        expect_json={"status": "ok", "db.kind": "sqlite", "items.0": 1},
        json_schema={"type": "object", "required": ["status", "version"]},
        expect_headers={**SECURITY_HEADERS, "x-app-version": "v2"},
        max_latency_ms=100,
    )
    good_headers = {
        "Strict-Transport-Security": "max-age=1",
        "Content-Security-Policy": "default-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "X-App-Version": "v2",
    }
    body = {"status": "ok", "version": "v2", "db": {"kind": "sqlite"}, "items": [1]}
    assert all(r.passed for r in evaluate(check, 200, good_headers, body, 12.0))
    bad = evaluate(check, 503, {"X-App-Version": "v1"}, {"status": "down"}, 250.0)
    failed = {r.name: r for r in bad if not r.passed}
    assert failed["health: status"].observed == "503"
    assert failed["health: header strict-transport-security"].observed == "<missing>"
    assert failed["health: header x-app-version"].observed == "v1"
    assert failed["health: json status"].observed == "'down'"
    assert failed["health: json db.kind"].observed == "<missing>"
    assert "version" in failed["health: schema"].observed
    assert failed["health: latency"].observed == "250.0ms"


def test_cors_allowed_and_forbidden():
    check = HttpCheck(name="cors", path="/")
    assert evaluate_cors(
        check, "https://a", True, {"Access-Control-Allow-Origin": "https://a"}
    ).passed
    assert not evaluate_cors(check, "https://a", True, {}).passed
    assert evaluate_cors(check, "https://evil", False, {}).passed
    assert not evaluate_cors(
        check, "https://evil", False, {"access-control-allow-origin": "*"}
    ).passed
