"""smoke-check: the new version answers, through the edge proxy, as itself."""

from __future__ import annotations

import time

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.service import ServiceSpec
from tasks.core import checks as declarative
from tasks.core.errors import SmokeCheckFailed
from tasks.core.messages import smoke_failure_reason
from tasks.core.models import CheckResult, SmokeResult
from tasks.core.smoke import evaluate_health, evaluate_path


def run_checks(url: str, service: ServiceSpec, version: str, client: httpx.Client) -> SmokeResult:
    checks: list[CheckResult] = []
    try:
        resp = client.get(url + service.health_path)
        try:
            body = resp.json()
        except ValueError:
            body = None
        checks += evaluate_health(resp.status_code, body, resp.headers, version)
    except httpx.HTTPError as exc:
        checks.append(
            CheckResult(name="health", passed=False, observed=type(exc).__name__, expected="200")
        )
    for path in service.smoke_paths:
        try:
            resp = client.get(url + path)
            checks.append(evaluate_path(path, resp.status_code, resp.headers, version))
        except httpx.HTTPError as exc:
            checks.append(
                CheckResult(
                    name=f"GET {path}", passed=False, observed=type(exc).__name__, expected="2xx"
                )
            )
    checks += run_declarative(url, service.checks, client)
    return SmokeResult(url=url, version=version, checks=tuple(checks))


def run_declarative(
    url: str, checks: list[declarative.HttpCheck], client: httpx.Client
) -> list[CheckResult]:
    """Send each declared request (and its CORS probes) once and evaluate the answers."""
    out: list[CheckResult] = []
    for check in checks:
        started = time.perf_counter()
        try:
            resp = client.request(
                check.method, url + check.path, headers=check.headers, json=check.json_body
            )
        except httpx.HTTPError as exc:
            out.append(
                CheckResult(
                    name=f"{check.name}: request",
                    passed=False,
                    observed=type(exc).__name__,
                    expected="an answer",
                )
            )
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            body = resp.json()
        except ValueError:
            body = None
        out += declarative.evaluate(check, resp.status_code, resp.headers, body, latency_ms)
        if check.rate_limit_burst:
            out.append(_rate_limit(url, check, client))
        for origin, allowed in (
            (check.cors_allowed_origin, True),
            (check.cors_forbidden_origin, False),
        ):
            if origin:
                try:
                    probe = client.request(
                        check.method, url + check.path, headers={**check.headers, "Origin": origin}
                    )
                    out.append(declarative.evaluate_cors(check, origin, allowed, probe.headers))
                except httpx.HTTPError as exc:
                    out.append(
                        CheckResult(
                            name=f"{check.name}: CORS {origin}",
                            passed=False,
                            observed=type(exc).__name__,
                            expected="an answer",
                        )
                    )
    return out


def _rate_limit(url: str, check: declarative.HttpCheck, client: httpx.Client) -> CheckResult:
    """Burst requests until the first 429 (or the bound) and evaluate the refusal."""
    statuses: list[int] = []
    retry_after = None
    for _ in range(check.rate_limit_burst or 0):
        try:
            r = client.request(check.method, url + check.path, headers=check.headers)
        except httpx.HTTPError:
            statuses.append(0)
            continue
        statuses.append(r.status_code)
        if r.status_code == 429:
            retry_after = r.headers.get("retry-after")
            break
    return declarative.evaluate_rate_limit(check, statuses, retry_after)


@task(name="smoke-check", cache_policy=NO_CACHE)
def smoke_check(
    url: str, service: ServiceSpec, version: str, deadline_s: float = 20.0
) -> SmokeResult:
    """Retry until the checks pass or the deadline, then one strict pass decides."""
    logger = get_run_logger()
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=5.0) as client:
        result = run_checks(url, service, version, client)
        while not result.passed and time.monotonic() < deadline:
            time.sleep(0.5)
            result = run_checks(url, service, version, client)
        if result.passed:
            result = run_checks(url, service, version, client)
    create_table_artifact(
        key=f"smoke-{service.name}",
        table=[c.model_dump() for c in result.checks],
        description=f"Smoke checks of {service.name} {version} at {url}",
    )
    if not result.passed:
        raise SmokeCheckFailed(f"smoke check of {version} failed: {smoke_failure_reason(result)}")
    logger.info("smoke check of %s passed (%d checks)", version, len(result.checks))
    return result
