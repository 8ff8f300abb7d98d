"""An HDR-style latency histogram: fixed relative precision, mergeable, O(1) record.

Values are microseconds. Like HdrHistogram with 3 significant digits: values
below 2048 µs are exact; above, each power-of-two range is split into 1024
buckets, so any reported percentile is within 0.1 % of the true value.
Histograms from several generator processes merge by adding counts.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

SUB = 1024  # half the sub-bucket count: 2048 sub-buckets → 3 significant digits
MAX_US = 3_600_000_000  # one hour; larger values are clamped (and counted in `clamped`)
_SIZE = (MAX_US.bit_length() - 10 + 1) * SUB + SUB


def _index(value: int) -> int:
    shift = max(0, value.bit_length() - 11)
    return shift * SUB + (value >> shift)


def _lowest(index: int) -> int:
    shift = max(0, index // SUB - 1)
    return (index - shift * SUB) << shift


def _highest(index: int) -> int:
    shift = max(0, index // SUB - 1)
    return _lowest(index) + (1 << shift) - 1


class Histogram:
    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * _SIZE))
        self.total = 0
        self.min_us = MAX_US
        self.max_us = 0
        self.sum_us = 0
        self.clamped = 0

    def record(self, value_us: float, count: int = 1) -> None:
        v = int(value_us)
        if v < 0:
            v = 0
        if v > MAX_US:
            v = MAX_US
            self.clamped += count
        self.counts[_index(v)] += count
        self.total += count
        self.sum_us += v * count
        self.min_us = min(self.min_us, v)
        self.max_us = max(self.max_us, v)

    def merge(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.total += other.total
        self.sum_us += other.sum_us
        self.clamped += other.clamped
        self.min_us = min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, p: float) -> float:
        """Value at percentile p (0-100), in µs; the bucket's highest value, capped at max."""
        if self.total == 0:
            return 0.0
        if p >= 100:
            return float(self.max_us)
        rank = max(1, -(-self.total * p // 100))  # ceil
        seen = 0
        for i, c in enumerate(self.counts):
            if c:
                seen += c
                if seen >= rank:
                    return float(min(_highest(i), self.max_us))
        return float(self.max_us)

    def mean(self) -> float:
        return self.sum_us / self.total if self.total else 0.0

    def summary_ms(self, percentiles: Iterable[float] = (50, 90, 95, 99, 99.9)) -> dict[str, float]:
        out = {f"p{p:g}": round(self.percentile(p) / 1000, 3) for p in percentiles}
        out["max"] = round(self.max_us / 1000, 3)
        out["mean"] = round(self.mean() / 1000, 3)
        return out

    def to_sparse(self) -> dict[int, int]:
        """Non-zero buckets, for sending a histogram between processes."""
        return {i: c for i, c in enumerate(self.counts) if c}

    @classmethod
    def from_sparse(
        cls, sparse: dict[int, int], min_us: int, max_us: int, sum_us: int
    ) -> Histogram:
        h = cls()
        for i, c in sparse.items():
            h.counts[int(i)] = c
            h.total += c
        h.min_us, h.max_us, h.sum_us = min_us, max_us, sum_us
        return h
