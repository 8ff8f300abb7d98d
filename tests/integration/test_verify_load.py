"""The load generator and its verdicts against real uvicorn targets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import services


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    port = services.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.targets", str(port)], cwd=services.ROOT
    )
    base = f"http://127.0.0.1:{port}"
    services.wait_for(lambda: httpx.get(base + "/ok", timeout=2).status_code == 200, 30, "target")
    yield base
    services.stop(proc)


def cli(*args: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.verify", "load", *args, "--json"],
        cwd=services.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def test_healthy_target_passes_closed_model(target):
    code, out = cli(
        target + "/ok",
        "--duration",
        "3",
        "--concurrency",
        "8",
        "--threshold",
        "p(95) < 250ms",
        "--threshold",
        "error_rate < 0.001",
    )
    assert code == 0, out
    assert out["passed"] and out["model"] == "closed" and out["errors"] == {}
    assert out["requests"] > 300 and out["achieved_rps"] > 100
    assert set(out["latency_ms"]) >= {"p50", "p90", "p95", "p99", "p99.9", "max"}
    assert set(out["generator"]) == {"cpu_share", "loop_lag_p99_ms", "generator_bound"}


def test_slow_endpoint_open_model_latency_and_failed_threshold(target):
    code, out = cli(
        target + "/slow",
        "--duration",
        "3",
        "--rate",
        "20",
        "--threshold",
        "p(50) < 150ms",
        "--threshold",
        "p(95) < 30ms",
    )
    assert code == 1
    assert out["model"] == "open" and 45 <= out["latency_ms"]["p50"] <= 150
    assert [v["passed"] for v in out["verdicts"]] == [True, False]
    assert out["verdicts"][1]["observed"] >= 45


def test_flaky_target_breaches_error_budget_and_aborts_early(target):
    started = time.monotonic()
    code, out = cli(
        target + "/flaky",
        "--duration",
        "30",
        "--concurrency",
        "4",
        "--threshold",
        "error_rate < 0.001",
    )
    assert code == 1
    assert out["aborted"] and "error_rate" in out["aborted"]
    assert time.monotonic() - started < 15  # a bad release is rolled back fast
    assert out["errors"].get("non_2xx", 0) > 0


def test_open_model_shows_queueing_that_closed_model_hides(target):
    from tasks.loadgen import run_load

    closed = asyncio.run(run_load(target + "/cpu", duration_s=3, concurrency=4))
    capacity = closed.achieved_rps
    opened = asyncio.run(run_load(target + "/cpu", duration_s=3, rate=1.5 * capacity, timeout_s=20))
    closed_p50 = closed.histogram.percentile(50) / 1000
    open_p50 = opened.histogram.percentile(50) / 1000
    # the closed loop slows its own sending and reports small latencies;
    # the open model keeps the schedule and reports the queue that builds up
    assert open_p50 > 4 * closed_p50, (closed_p50, open_p50, capacity)
    assert opened.in_flight_at_end + opened.requests == int(3 * 1.5 * capacity)


def test_unreachable_target_counts_connection_errors(target):
    from tasks.loadgen import run_load

    port = services.free_port()
    result = asyncio.run(run_load(f"http://127.0.0.1:{port}/", duration_s=1, rate=20, timeout_s=1))
    assert result.ok == 0 and result.errors["connection"] == result.requests > 0
    assert result.error_rate == 1.0


def test_verify_flow_publishes_artifacts_and_fails_on_breach(target, prefect_server):
    from prefect import get_client

    from flows.verify import ThresholdsFailed, verify_load

    out = verify_load(target + "/ok", ["p(95) < 500ms"], duration_s=2, concurrency=4)
    assert out["passed"]
    with pytest.raises(ThresholdsFailed, match=r"p\(95\) < 1ms"):
        verify_load(target + "/slow", ["p(95) < 1ms"], duration_s=2, rate=10)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    wanted = {"load-thresholds", "load-latency", "load-summary"}
    with get_client(sync_client=True) as client:  # by key: the server holds every test's artifacts
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=sorted(wanted)))
        )
    assert wanted <= {a.key for a in found}


def test_open_model_ramp_stages_follow_the_schedule(target):
    from tasks.loadgen import run_load

    result = asyncio.run(
        run_load(target + "/ok", duration_s=0, rate=0.0, stages=[(1.5, 60.0), (1.5, 60.0)])
    )
    # integral: 45 during the ramp + 90 flat
    assert abs(result.requests + result.in_flight_at_end - 135) <= 3
    early = sum(ok + err for t, _, ok, err in result.timeline if t <= 1.05)
    assert early < 45  # the first second carries a third of the ramp's requests


def test_closed_model_ramps_virtual_users(target):
    from tasks.loadgen import run_load

    result = asyncio.run(
        run_load(target + "/slow", duration_s=0, concurrency=1, stages=[(1.0, 1.0), (1.0, 8.0)])
    )
    per_second = [ok for _, _, ok, _ in result.timeline]
    # one VU does ~19 req/s against a 50 ms endpoint; the ramp to 8 VUs multiplies it
    assert per_second[0] <= 25 and per_second[-1] >= 2 * per_second[0], per_second


def test_several_processes_merge_exactly(target):
    from tasks.loadgen import run_load_processes

    result = run_load_processes(target + "/slow", processes=2, duration_s=2, rate=40)
    assert result.requests + result.in_flight_at_end == 80
    assert result.histogram.total == result.requests
    assert 45 <= result.histogram.percentile(50) / 1000 <= 200


def test_smoke_cli_passes_and_names_what_differed(target, tmp_path):
    checks = tmp_path / "checks.json"
    checks.write_text(
        json.dumps(
            [
                {"name": "ok", "path": "/ok", "expect_json": {"ok": True}, "max_latency_ms": 2000},
                {
                    "name": "flaky-header",
                    "path": "/ok",
                    "expect_headers": {"content-type": "application/json"},
                },
            ]
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "flows.verify", "smoke", target, "--checks", str(checks), "--json"],
        cwd=services.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["passed"], out
    checks.write_text(
        json.dumps(
            [
                {
                    "name": "ok",
                    "path": "/ok",
                    "expect_json": {"ok": False},
                    "expect_headers": {"strict-transport-security": None},
                }
            ]
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "flows.verify", "smoke", target, "--checks", str(checks), "--json"],
        cwd=services.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 1
    failed = {c["name"]: c for c in out["checks"] if not c["passed"]}
    assert failed["ok: json ok"]["observed"] == "True"
    assert failed["ok: header strict-transport-security"]["observed"] == "<missing>"


def test_rate_limit_behaviour_is_checked(target):
    from tasks.core.checks import HttpCheck
    from tasks.smoke import run_declarative

    limited = HttpCheck(
        name="limited", path="/limited", rate_limit_burst=30, expect_status=[200, 429]
    )
    unlimited = HttpCheck(name="ok", path="/ok", rate_limit_burst=15)
    with httpx.Client(timeout=10) as client:
        time.sleep(1.1)  # a fresh one-second window
        results = {r.name: r for r in run_declarative(target, [limited, unlimited], client)}
    assert results["limited: rate limit"].passed, results["limited: rate limit"]
    # the check's own request was the 1st of the window, so the burst's 10th is the 11th overall
    assert "first 429 at request 10" in results["limited: rate limit"].observed
    assert not results["ok: rate limit"].passed
    assert results["ok: rate limit"].observed == "no 429 in 15 requests"


def test_cli_with_several_processes(target):
    code, out = cli(
        target + "/ok",
        "--duration",
        "2",
        "--concurrency",
        "8",
        "--processes",
        "2",
        "--threshold",
        "p(95) < 1000ms",
    )
    assert code == 0 and out["requests"] > 100 and out["errors"] == {}
