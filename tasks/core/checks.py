"""Declarative HTTP smoke checks and their pure evaluation.

A check says what to send and what must come back; `evaluate` turns one
observed response into named results that state exactly what differed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from tasks.core.models import CheckResult

SECURITY_HEADERS: dict[str, str | None] = {
    "strict-transport-security": None,
    "content-security-policy": None,
    "x-content-type-options": "nosniff",
}


class HttpCheck(BaseModel):
    """One request and its expectations (kept in the ServiceSpec block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Shown in results and notifications.")
    method: str = Field(default="GET", description="HTTP method.")
    path: str = Field(description="Path and query, e.g. '/members?limit=1'.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    json_body: Any | None = Field(default=None, description="JSON request body.")
    expect_status: list[int] = Field(
        default_factory=lambda: [200], description="Accepted status codes."
    )
    expect_json: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted JSON paths and their expected values, e.g. {'status': 'ok'}.",
    )
    json_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON-schema fragment the body must match."
    )
    expect_headers: dict[str, str | None] = Field(
        default_factory=dict,
        description="Required response headers; a value must match exactly, None only requires presence.",
    )
    max_latency_ms: float | None = Field(
        default=None, description="Slowest acceptable answer in the strict pass."
    )
    cors_allowed_origin: str | None = Field(
        default=None, description="An Origin that must be echoed in Access-Control-Allow-Origin."
    )
    cors_forbidden_origin: str | None = Field(
        default=None, description="An Origin that must not be allowed."
    )
    rate_limit_burst: int | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Send this many requests back to back; at least one must be refused with 429 "
        "and a Retry-After header (the service's rate limit is on). Bounded to 1000.",
    )


_MISSING = object()


def _dig(body: Any, dotted: str) -> Any:
    cur = body
    for part in dotted.split("."):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def evaluate(
    check: HttpCheck, status: int, headers: Mapping[str, str], body: Any, latency_ms: float
) -> list[CheckResult]:
    name = check.name
    out = [
        CheckResult(
            name=f"{name}: status",
            passed=status in check.expect_status,
            observed=str(status),
            expected=" or ".join(map(str, check.expect_status)),
        )
    ]
    lower = {k.lower(): v for k, v in headers.items()}
    for header, want in check.expect_headers.items():
        got = lower.get(header.lower())
        ok = got is not None and (want is None or got == want)
        out.append(
            CheckResult(
                name=f"{name}: header {header}",
                passed=ok,
                observed="<missing>" if got is None else got,
                expected="present" if want is None else want,
            )
        )
    for path, want in check.expect_json.items():
        got = _dig(body, path)
        out.append(
            CheckResult(
                name=f"{name}: json {path}",
                passed=got is not _MISSING and got == want,
                observed="<missing>" if got is _MISSING else repr(got),
                expected=repr(want),
            )
        )
    if check.json_schema is not None:
        try:
            jsonschema.validate(body, check.json_schema)
            out.append(
                CheckResult(name=f"{name}: schema", passed=True, observed="valid", expected="valid")
            )
        except jsonschema.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path)) or "<root>"
            out.append(
                CheckResult(
                    name=f"{name}: schema",
                    passed=False,
                    observed=f"{where}: {exc.message}",
                    expected="valid",
                )
            )
    if check.max_latency_ms is not None:
        out.append(
            CheckResult(
                name=f"{name}: latency",
                passed=latency_ms <= check.max_latency_ms,
                observed=f"{latency_ms:.1f}ms",
                expected=f"<= {check.max_latency_ms:g}ms",
            )
        )
    return out


def evaluate_rate_limit(
    check: HttpCheck, statuses: list[int], retry_after: str | None
) -> CheckResult:
    limited = statuses.count(429)
    first = statuses.index(429) + 1 if limited else None
    ok = limited > 0 and retry_after is not None
    return CheckResult(
        name=f"{check.name}: rate limit",
        passed=ok,
        observed=(
            f"first 429 at request {first} of {len(statuses)}, Retry-After: {retry_after or '<missing>'}"
            if limited
            else f"no 429 in {len(statuses)} requests"
        ),
        expected=f"a 429 with Retry-After within {check.rate_limit_burst} requests",
    )


def evaluate_cors(
    check: HttpCheck, origin: str, allowed: bool, headers: Mapping[str, str]
) -> CheckResult:
    got = {k.lower(): v for k, v in headers.items()}.get("access-control-allow-origin")
    ok = got in (origin, "*") if allowed else got not in (origin, "*")
    return CheckResult(
        name=f"{check.name}: CORS {'allows' if allowed else 'refuses'} {origin}",
        passed=ok,
        observed=f"Access-Control-Allow-Origin: {got or '<missing>'}",
        expected=f"Access-Control-Allow-Origin: {origin}" if allowed else f"not {origin}",
    )


class LoadPolicy(BaseModel):
    """An SLO gate run after the smoke checks: a bounded load test and its thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(default="/health", description="Path to load, e.g. '/members?limit=10'.")
    duration_s: float = Field(
        default=15.0, gt=0, le=600, description="Bounded duration of the test."
    )
    rate: float | None = Field(
        default=None, gt=0, description="Open model: constant arrival rate (req/s)."
    )
    concurrency: int | None = Field(default=None, gt=0, description="Closed model: virtual users.")
    thresholds: list[str] = Field(
        default_factory=lambda: ["p(95) < 100ms", "error_rate < 0.001"],
        description="k6-style thresholds, e.g. 'p(95) < 100ms', 'error_rate < 0.1%', 'rps >= 17'.",
    )
