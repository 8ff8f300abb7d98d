"""HDR-style histogram accuracy and k6-style threshold parsing."""

from __future__ import annotations

import random

import pytest

from tasks.core.errors import ConfigError
from tasks.core.histogram import Histogram
from tasks.core.thresholds import evaluate, parse


def exact_percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


@pytest.mark.parametrize("p", [50, 90, 95, 99, 99.9])
def test_percentiles_within_a_tenth_of_a_percent(p):
    rng = random.Random(7)
    values = [int(rng.lognormvariate(9, 1.2)) for _ in range(50_000)]
    h = Histogram()
    for v in values:
        h.record(v)
    exact = exact_percentile(values, p)
    assert abs(h.percentile(p) - exact) <= max(1, exact * 0.001)
    assert h.percentile(100) == max(values) and h.total == len(values)


def test_small_values_are_exact_and_merge_adds():
    a, b = Histogram(), Histogram()
    for v in range(1, 1001):
        a.record(v)
    for v in range(1001, 2001):
        b.record(v)
    a.merge(b)
    assert a.percentile(50) == 1000 and a.percentile(100) == 2000 and a.min_us == 1
    c = Histogram.from_sparse(a.to_sparse(), a.min_us, a.max_us, a.sum_us)
    assert c.percentile(99) == a.percentile(99) and c.total == 2000


def test_thresholds_parse_units_and_verdicts():
    ts = [
        parse("p(95) < 100ms"),
        parse("p(99)<0.3s"),
        parse("error_rate < 0.1%"),
        parse("rps >= 17"),
        parse("avg<=500us"),
    ]
    assert [(t.metric, t.target) for t in ts] == [
        ("p95", 100.0),
        ("p99", 300.0),
        ("error_rate", 0.001),
        ("rps", 17.0),
        ("avg", 0.5),
    ]
    verdicts = evaluate(ts, {"p95": 80, "p99": 350, "error_rate": 0.0, "rps": 20, "avg": 0.4})
    assert [v.passed for v in verdicts] == [True, False, True, True, True]
    assert not ts[2].can_still_pass(0.01) and ts[0].can_still_pass(500)


@pytest.mark.parametrize(
    "bad",
    ["p(95) < ", "p(101) < 5ms", "error_rate < 5ms", "rps > 5ms", "p95 < 100ms", "latency < 1"],
)
def test_bad_thresholds_name_the_key(bad):
    with pytest.raises(ConfigError, match="thresholds"):
        parse(bad)


def test_ramp_levels_and_arrivals_follow_the_integral():
    from tasks.core.schedule import arrival_offsets, check_stages, level_at

    stages = [(2.0, 100.0), (2.0, 100.0), (1.0, 0.0)]
    assert level_at(0, stages, 1.0) == 50.0 and level_at(0, stages, 3.0) == 100.0
    assert level_at(0, stages, 4.5) == 50.0 and level_at(0, stages, 9) == 0.0
    times = list(arrival_offsets(0.0, stages))
    # integral: ramp 0→100 over 2 s = 100, flat 2 s = 200, ramp down 1 s = 50
    assert abs(len(times) - 350) <= 2
    assert times == sorted(times) and times[-1] < 5.0
    assert abs(sum(1 for t in times if t < 2.0) - 100) <= 2
    with pytest.raises(ConfigError, match=r"stages\[1\]"):
        check_stages([(1, 5), (0, 5)])
