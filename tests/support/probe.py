"""A bounded load probe: N connections hammering a URL, recording who answered."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class ProbeResult:
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: list[tuple[float, str]] = field(default_factory=list)

    def versions_after(self, t: float) -> set[str]:
        return {v for ts, v in self.versions if ts > t}

    def first_time_all(self, version: str, after: float) -> float | None:
        """Earliest time after which every answer came from `version`."""
        last_other = after
        for ts, v in self.versions:
            if ts > after and v != version:
                last_other = max(last_other, ts)
        later = [ts for ts, v in self.versions if ts > last_other and v == version]
        return min(later) if later else None


class Probe:
    def __init__(
        self, url: str, connections: int = 20, max_seconds: float = 300, max_requests: int = 500_000
    ):
        self.url, self.connections = url, connections
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.result = ProbeResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._count = 0

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if self._count >= self.max_requests:
                        return
                    self._count += 1
                try:
                    resp = client.get(self.url)
                    version = resp.headers.get("x-app-version", "?")
                    with self._lock:
                        if resp.status_code == 200:
                            self.result.ok += 1
                            self.result.versions.append((time.time(), version))
                        else:
                            self.result.failed += 1
                            self.result.errors[f"HTTP {resp.status_code}"] += 1
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.result.failed += 1
                        self.result.errors[type(exc).__name__] += 1

    def __enter__(self) -> Probe:
        for _ in range(self.connections):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
