"""Load shapes: piecewise-linear ramps for arrival rate (open model) or virtual users (closed).

Like k6's ramping-arrival-rate / ramping-vus: `start` then stages of
(duration_s, target), each ramping linearly from the previous target.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tasks.core.errors import ConfigError

Stage = tuple[float, float]


def check_stages(stages: Sequence[Stage], key: str = "stages") -> None:
    if not stages:
        raise ConfigError(key, "needs at least one (duration_s, target) stage")
    for i, (duration, target) in enumerate(stages):
        if duration <= 0 or target < 0:
            raise ConfigError(
                f"{key}[{i}]", f"({duration}, {target}) needs duration > 0 and target >= 0"
            )


def total_duration(stages: Sequence[Stage]) -> float:
    return sum(d for d, _ in stages)


def level_at(start: float, stages: Sequence[Stage], t: float) -> float:
    """The ramped level (req/s or VUs) at time t since the start."""
    level = start
    elapsed = 0.0
    for duration, target in stages:
        if t < elapsed + duration:
            return level + (target - level) * (t - elapsed) / duration
        elapsed += duration
        level = target
    return level


def arrival_offsets(
    start_rate: float, stages: Sequence[Stage], min_rate: float = 0.01
) -> Iterator[float]:
    """Intended send times (seconds from start) whose density follows the ramped rate.

    Each next arrival is placed where the integral of the rate grows by one,
    found by stepping the piecewise-linear rate exactly segment by segment.
    """
    end = total_duration(stages)
    t = 0.0
    owed = 0.0  # fraction of the next request accumulated so far
    step = 0.001
    while t < end:
        rate = max(level_at(start_rate, stages, t), 0.0)
        owed += rate * step
        while owed >= 1.0:
            owed -= 1.0
            yield t
        t += step
