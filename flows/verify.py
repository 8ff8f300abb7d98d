"""verify: an honest load test gated on k6-style thresholds (issue 4, load part).

`python -m flows.verify load URL [--duration S] [--concurrency N | --rate R]
[--threshold "p(95) < 100ms" ...] [--json]` prints one JSON object and exits 0
only if every threshold passes; `python -m flows.verify smoke URL [--checks
FILE.json] [--expect-version V] [--json]` runs smoke checks the same way.

The `verify` flow checks a released environment (smoke checks, then the
service's load policy) and runs on a schedule as an uptime/SLO monitor; the
`load-test` task is also the release's SLO gate. Results are Prefect
artifacts: a threshold table, a percentile table and a markdown summary with a
latency-over-time chart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.core import history
from tasks.core.errors import VerifyError
from tasks.core.thresholds import Threshold, Verdict, evaluate, parse
from tasks.loadgen import LoadResult, run_load, run_load_processes

MAX_DURATION_S = 600.0


class ThresholdsFailed(VerifyError):
    step = "load-test"


def _abort_check(thresholds: list[Threshold]) -> Any:
    """Abort as soon as a threshold is lost for good (the error budget is spent)."""

    def check(result: LoadResult) -> str | None:
        if result.requests < 50:
            return None
        stats = result.stats()
        for t in thresholds:
            if t.abort_on_fail and not t.can_still_pass(stats.get(t.metric, 0.0)):
                return f"{t.expression} already lost (observed {stats[t.metric]:.4g})"
        return None

    return check


def report(result: LoadResult, verdicts: list[Verdict]) -> dict[str, Any]:
    return {
        "url": result.url,
        "model": result.model,
        "duration_s": round(result.duration_s, 2),
        "requests": result.requests,
        "ok": result.ok,
        "errors": dict(result.errors),
        "in_flight_at_end": result.in_flight_at_end,
        "offered_rps": result.offered_rps,
        "achieved_rps": round(result.achieved_rps, 1),
        "latency_ms": result.histogram.summary_ms(),
        "error_rate": round(result.error_rate, 6),
        "generator": {
            "cpu_share": round(result.cpu_share, 3),
            "loop_lag_p99_ms": round(result.lag_p99_ms, 2),
            "generator_bound": result.generator_bound,
        },
        "aborted": result.aborted,
        "verdicts": [v.model_dump() for v in verdicts],
        "passed": all(v.passed for v in verdicts) and result.aborted is None,
    }


def chart(result: LoadResult, width: int = 40) -> str:
    """A text chart of p95 per second that reads at a glance in the Prefect UI."""
    if not result.timeline:
        return "(no samples)"
    top = max(p for _, p, _, _ in result.timeline) or 1.0
    lines = ["  t(s) |  p95 ms | ok/s | err/s |"]
    for t, p95, ok, err in result.timeline:
        bar = "█" * max(1, int(width * p95 / top)) if p95 else ""
        lines.append(f"{t:6.0f} | {p95:7.1f} | {ok:4d} | {err:5d} | {bar}")
    return "\n".join(lines)


@task(name="load-test", cache_policy=NO_CACHE)
def load_test(
    url: str,
    thresholds: list[str],
    duration_s: float = 30.0,
    concurrency: int | None = None,
    rate: float | None = None,
    abort_early: bool = True,
) -> dict[str, Any]:
    parsed = [parse(t) for t in thresholds]  # validate before sending a single request
    if concurrency is None and rate is None:
        concurrency = 10
    if not 0 < duration_s <= MAX_DURATION_S:
        raise VerifyError(f"duration_s: must be in (0, {MAX_DURATION_S:.0f}]")
    result = asyncio.run(
        run_load(
            url,
            duration_s=duration_s,
            concurrency=concurrency,
            rate=rate,
            should_abort=_abort_check(parsed) if abort_early else None,
        )
    )
    verdicts = evaluate(parsed, result.stats())
    out = report(result, verdicts)
    create_table_artifact(
        key="load-thresholds",
        table=[
            {"threshold": v.threshold, "observed": round(v.observed, 4), "passed": v.passed}
            for v in verdicts
        ],
        description=f"Thresholds for {url}",
    )
    create_table_artifact(
        key="load-latency",
        table=[{"percentile": k, "ms": v} for k, v in out["latency_ms"].items()],
        description=f"Latency percentiles for {url}",
    )
    flag = (
        "⚠️ generator-bound: figures understate the server"
        if result.generator_bound
        else "generator not saturated"
    )
    create_markdown_artifact(
        key="load-summary",
        markdown=(
            f"# Load test of `{url}`: {'✅ passed' if out['passed'] else '❌ failed'}\n\n"
            f"{result.model} model, {out['requests']} requests in {out['duration_s']} s, "
            f"{out['achieved_rps']} req/s achieved (offered {result.offered_rps or 'closed loop'}), "
            f"error rate {out['error_rate']:.4%}, {flag}.\n\n"
            + (f"**Aborted early:** {result.aborted}\n\n" if result.aborted else "")
            + "```\n"
            + chart(result)
            + "\n```\n"
        ),
    )
    get_run_logger().info("load test of %s: %s", url, "passed" if out["passed"] else "failed")
    if not out["passed"]:
        failing = [v.threshold + f" (observed {v.observed:.4g})" for v in verdicts if not v.passed]
        raise ThresholdsFailed(f"load test failed: {'; '.join(failing) or result.aborted}")
    return out


def _on_verify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Tell people when a scheduled check fails; never raises."""
    from flows.common import load_context
    from tasks.core.models import Outcome, ReleaseRecord
    from tasks.notify import send

    p = flow_run.parameters
    try:
        ctx = load_context(p["environment"], p["service"], p.get("target"), None, p.get("notifier"))
    except Exception:  # noqa: BLE001 - hooks never raise
        return
    current = history.current(ctx.ledger.records())
    send(
        ctx.notifier,
        ReleaseRecord(
            release_id=str(flow_run.id),
            kind="verify",
            service=ctx.service.name,
            environment=ctx.environment,
            version=current.version if current else "unknown",
            digest=current.digest if current else None,
            flow_run_id=str(flow_run.id),
            flow_run_name=flow_run.name,
            trigger="schedule" if flow_run.auto_scheduled else "manual",
            outcome=Outcome.FAILED,
            failed_step="load-test" if "load test" in (state.message or "") else "smoke-check",
            reason=state.message,
        ),
        ctx.secrets(),
    )


@flow(name="verify", log_prints=True, on_failure=[_on_verify_failure])
def verify(
    environment: str = "staging",
    service: str = "congress-api",
    target: str | None = None,
    notifier: str | None = None,
    smoke: bool = True,
    load: bool = True,
    thresholds: list[str] | None = None,
    duration_s: float | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    smoke_deadline_s: float = 10.0,
) -> dict[str, Any]:
    """Check what serves `environment` now: smoke checks, then the load policy's thresholds.

    Overrides (thresholds, duration_s, rate, concurrency) replace the service's
    `load_policy` fields for this run; without a policy the defaults are
    `p(95) < 100ms` and `error_rate < 0.001` for 15 s at 10 virtual users.
    """
    from flows.common import load_context
    from tasks.core.checks import LoadPolicy
    from tasks.core.errors import ConfigError
    from tasks.smoke import smoke_check

    ctx = load_context(environment, service, target, None, notifier)
    current = history.current(ctx.ledger.records())
    if current is None:
        raise ConfigError("environment", f"nothing has been released to {environment!r} yet")
    url = ctx.target.public_url
    out: dict[str, Any] = {"environment": environment, "version": current.version, "url": url}
    if smoke:
        result = smoke_check(url, ctx.service, current.version, smoke_deadline_s)
        out["smoke"] = [c.model_dump() for c in result.checks]
    if load:
        policy = ctx.service.load_policy or LoadPolicy()
        if rate is not None or concurrency is not None:
            policy = policy.model_copy(update={"rate": rate, "concurrency": concurrency})
        out["load"] = load_test(
            url + policy.path,
            thresholds or policy.thresholds,
            duration_s or policy.duration_s,
            policy.concurrency if policy.rate is None else None,
            policy.rate,
        )
    return out


@flow(name="verify-load", log_prints=True)
def verify_load(
    url: str,
    thresholds: list[str] | None = None,
    duration_s: float = 30.0,
    concurrency: int | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    return load_test(
        url, thresholds or ["p(95) < 100ms", "error_rate < 0.001"], duration_s, concurrency, rate
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Load-test a URL against thresholds (no Prefect server needed)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load")
    load.add_argument("url")
    load.add_argument("--duration", type=float, default=10.0)
    group = load.add_mutually_exclusive_group()
    group.add_argument("--concurrency", type=int)
    group.add_argument("--rate", type=float)
    load.add_argument("--threshold", action="append", default=[])
    load.add_argument("--no-abort", action="store_true")
    load.add_argument("--processes", type=int, default=1, help="generator processes (one per core)")
    load.add_argument("--json", action="store_true")
    smoke = sub.add_parser("smoke")
    smoke.add_argument("url")
    smoke.add_argument(
        "--checks", help="JSON file: a list of HttpCheck objects (see tasks/core/checks.py)"
    )
    smoke.add_argument(
        "--expect-version", help="also require /health and X-App-Version to report it"
    )
    smoke.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "smoke":
        return _smoke_cli(args)
    thresholds = [parse(t) for t in args.threshold or ["p(95) < 100ms", "error_rate < 0.001"]]
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:.0f}]")
    concurrency = args.concurrency if args.rate is None else None
    if concurrency is None and args.rate is None:
        concurrency = 10
    if args.processes > 1:
        result = run_load_processes(
            args.url,
            processes=args.processes,
            duration_s=args.duration,
            concurrency=concurrency,
            rate=args.rate,
        )
    else:
        result = asyncio.run(
            run_load(
                args.url,
                duration_s=args.duration,
                concurrency=concurrency,
                rate=args.rate,
                should_abort=None if args.no_abort else _abort_check(thresholds),
            )
        )
    out = report(result, evaluate(thresholds, result.stats()))
    if args.json:
        print(json.dumps(out))
    else:
        from rich.console import Console

        Console().print_json(json.dumps(out))
        print(chart(result))
    return 0 if out["passed"] else 1


def _smoke_cli(args: argparse.Namespace) -> int:
    from pathlib import Path

    import httpx

    from tasks.core.checks import HttpCheck
    from tasks.core.smoke import evaluate_health
    from tasks.smoke import run_declarative

    checks = [HttpCheck(name="health", path="/health")]
    if args.checks:
        checks = [HttpCheck.model_validate(c) for c in json.loads(Path(args.checks).read_text())]
    url = args.url.rstrip("/")
    with httpx.Client(timeout=10) as client:
        results = run_declarative(url, checks, client)
        if args.expect_version:
            resp = client.get(url + "/health")
            try:
                body = resp.json()
            except ValueError:
                body = None
            results += evaluate_health(resp.status_code, body, resp.headers, args.expect_version)
    out = {
        "url": url,
        "checks": [r.model_dump() for r in results],
        "passed": all(r.passed for r in results),
    }
    if args.json:
        print(json.dumps(out))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"smoke checks of {url}")
        for col in ("check", "passed", "observed", "expected"):
            table.add_column(col)
        for r in results:
            table.add_row(r.name, "✅" if r.passed else "❌", r.observed, r.expected)
        Console().print(table)
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
