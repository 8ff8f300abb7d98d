"""Evaluation of the minimal smoke check: is the new version up, and is it the new version?"""

from __future__ import annotations

from collections.abc import Mapping

from tasks.core.models import CheckResult


def evaluate_health(
    status: int, body: object, headers: Mapping[str, str], expected_version: str
) -> list[CheckResult]:
    version_header = headers.get("x-app-version", "<missing>")
    body_version = body.get("version") if isinstance(body, dict) else None
    return [
        CheckResult(
            name="health status", passed=status == 200, observed=str(status), expected="200"
        ),
        CheckResult(
            name="health version",
            passed=body_version == expected_version,
            observed=str(body_version),
            expected=expected_version,
        ),
        CheckResult(
            name="X-App-Version header",
            passed=version_header == expected_version,
            observed=version_header,
            expected=expected_version,
        ),
    ]


def evaluate_path(path: str, status: int, headers: Mapping[str, str], version: str) -> CheckResult:
    got = headers.get("x-app-version", "<missing>")
    ok = 200 <= status < 300 and got == version
    return CheckResult(
        name=f"GET {path}",
        passed=ok,
        observed=f"{status} from {got}",
        expected=f"2xx from {version}",
    )
