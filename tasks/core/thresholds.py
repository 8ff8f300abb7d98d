"""k6-style thresholds: `p(95) < 100ms`, `error_rate < 0.001`, `rps >= 17`, with verdicts."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict

from tasks.core.errors import ConfigError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}
_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}
_EXPR = re.compile(
    r"^\s*(?P<metric>p\((?P<pct>\d+(?:\.\d+)?)\)|avg|max|min|error_rate|rps)\s*"
    r"(?P<op><=|>=|==|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>us|µs|ms|s|%)?\s*$"
)


class Threshold(BaseModel):
    model_config = ConfigDict(frozen=True)

    expression: str
    metric: str  # "p95", "avg", "max", "min", "error_rate", "rps"
    op: str
    target: float  # ms for latency, a fraction for error_rate, req/s for rps
    abort_on_fail: bool = True

    def check(self, observed: float) -> bool:
        return _OPS[self.op](observed, self.target)

    def can_still_pass(self, observed: float) -> bool:
        """Whether more samples could still bring the metric back; only the error budget can be lost for good."""
        return not (
            self.metric == "error_rate" and self.op in ("<", "<=") and not self.check(observed)
        )


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    threshold: str
    observed: float
    passed: bool


def parse(expression: str, abort_on_fail: bool = True) -> Threshold:
    m = _EXPR.match(expression)
    if not m:
        raise ConfigError(
            "thresholds",
            f"cannot parse {expression!r}",
            hint="e.g. 'p(95) < 100ms', 'avg < 50ms', 'error_rate < 0.001', 'rps >= 17'",
        )
    metric = m["metric"]
    value = float(m["value"])
    unit = m["unit"]
    if metric.startswith("p("):
        pct = float(m["pct"])
        if not 0 < pct <= 100:
            raise ConfigError("thresholds", f"percentile {pct} out of range in {expression!r}")
        metric = f"p{pct:g}"
    if metric in ("error_rate",):
        if unit == "%":
            value /= 100
        elif unit:
            raise ConfigError("thresholds", f"error_rate takes a fraction or %, not {unit!r}")
    elif metric == "rps":
        if unit:
            raise ConfigError("thresholds", f"rps takes no unit, got {unit!r}")
    else:
        if unit == "%":
            raise ConfigError("thresholds", f"latency needs a time unit, not % in {expression!r}")
        value *= _UNITS[unit or "ms"]
    return Threshold(
        expression=expression.strip(),
        metric=metric,
        op=m["op"],
        target=value,
        abort_on_fail=abort_on_fail,
    )


def observed_value(metric: str, stats: Mapping[str, float]) -> float:
    if metric not in stats:
        raise ConfigError("thresholds", f"no statistic {metric!r} (have {sorted(stats)})")
    return float(stats[metric])


def evaluate(thresholds: list[Threshold], stats: Mapping[str, float]) -> list[Verdict]:
    return [
        Verdict(
            threshold=t.expression,
            observed=observed_value(t.metric, stats),
            passed=t.check(observed_value(t.metric, stats)),
        )
        for t in thresholds
    ]
