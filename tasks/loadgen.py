"""The load generator behind the verify flow: closed and open models, honest about itself.

* One TCP connection per virtual user, spoken to by a small HTTP/1.1 client on
  asyncio streams: a shared httpx pool collapses to ~140 req/s here (pool
  contention), and the generator must not be what is measured.
* Open model (constant arrival rate): every request has an intended send time;
  latency is measured from it, so a server that queues shows its queueing
  (no coordinated omission). Requests waiting for a free connection wait in
  FIFO order of intended time; requests still in flight at the end are counted.
* The generator measures its own CPU share and event-loop lag and says
  "generator-bound" instead of blaming the server when it is the bottleneck.
* Bounded always: max duration, max requests, and only the given address.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tasks.core.histogram import Histogram
from tasks.core.schedule import Stage, arrival_offsets, check_stages, level_at, total_duration

CPU_BOUND = 0.90
LAG_BOUND_MS = 5.0


class HTTPError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Connection:
    """A keep-alive HTTP/1.1 connection; reconnects once if the server closed it."""

    def __init__(self, host: str, port: int, request: bytes, timeout: float) -> None:
        self.host, self.port, self.request, self.timeout = host, port, request, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise HTTPError("connection") from exc

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self) -> int:
        # A reused keep-alive connection the server closed while idle gets one
        # retry on a fresh connection; a fresh connection that fails is an error.
        for reused in (self.writer is not None, False):
            if self.writer is None:
                await self._connect()
            try:
                return await asyncio.wait_for(self._exchange(), self.timeout)
            except TimeoutError as exc:
                self.close()
                raise HTTPError("timeout") from exc
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                self.close()
                if not reused:
                    raise HTTPError("connection") from exc
        raise AssertionError("unreachable")

    async def _exchange(self) -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        chunked = close = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            await self.reader.read()
            close = True
        if close:
            self.close()
        return status


@dataclass
class LoadResult:
    model: str
    url: str
    duration_s: float
    offered_rps: float | None
    histogram: Histogram = field(default_factory=Histogram)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    in_flight_at_end: int = 0
    not_sent: int = 0
    cpu_share: float = 0.0
    lag_p99_ms: float = 0.0
    aborted: str | None = None
    timeline: list[tuple[float, float, int, int]] = field(
        default_factory=list
    )  # (t, p95 ms, ok, errors)

    @property
    def requests(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_rate(self) -> float:
        total = self.requests + self.in_flight_at_end
        return (sum(self.errors.values()) + self.in_flight_at_end) / total if total else 0.0

    @property
    def generator_bound(self) -> bool:
        return self.cpu_share >= CPU_BOUND or self.lag_p99_ms > LAG_BOUND_MS

    def stats(self) -> dict[str, float]:
        s = {k: v for k, v in self.histogram.summary_ms().items()}
        s.update(
            {"avg": s["mean"], "min": self.histogram.min_us / 1000 if self.histogram.total else 0.0}
        )
        s.update({"error_rate": self.error_rate, "rps": self.achieved_rps})
        return s


def _request_bytes(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// targets are supported, got {url!r}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    req = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: shipyard-verify\r\nAccept: */*\r\n\r\n"
    return host, port, req.encode()


class _Monitor:
    """Samples the loop's scheduling lag every 10 ms and the process CPU share."""

    def __init__(self) -> None:
        self.lag = Histogram()
        self._task: asyncio.Task[None] | None = None
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lag.record(max(0.0, (time.perf_counter() - t - 0.01) * 1e6))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> tuple[float, float]:
        if self._task:
            self._task.cancel()
        wall = time.perf_counter() - self.wall0
        return (time.process_time() - self.cpu0) / wall if wall else 0.0, self.lag.percentile(
            99
        ) / 1000


async def run_load(
    url: str,
    *,
    duration_s: float,
    concurrency: int | None = None,
    rate: float | None = None,
    max_vus: int = 200,
    max_requests: int = 1_000_000,
    timeout_s: float = 10.0,
    should_abort: object = None,
    stages: list[Stage] | None = None,
) -> LoadResult:
    """Run the closed model (`concurrency` VUs) or the open model (`rate` req/s) against `url`.

    With `stages` [(duration_s, target), ...] the level ramps linearly from
    `concurrency`/`rate` (the start level) and `duration_s` is their total.
    """
    if (concurrency is None) == (rate is None):
        raise ValueError("give exactly one of concurrency (closed model) or rate (open model)")
    if stages:
        check_stages(stages)
        duration_s = total_duration(stages)
    host, port, request = _request_bytes(url)
    result = LoadResult(
        model="closed" if rate is None else "open", url=url, duration_s=duration_s, offered_rps=rate
    )
    monitor = _Monitor()
    monitor.start()
    start = time.perf_counter()
    deadline = start + duration_s
    sent = 0
    in_flight = 0
    window = Histogram()
    window_ok = window_err = 0

    def record(latency_s: float, status: int | None, kind: str | None) -> None:
        nonlocal window_ok, window_err
        us = latency_s * 1e6
        if status is not None and 200 <= status < 400:
            result.ok += 1
            window_ok += 1
        else:
            result.errors[kind or f"http_{status}"] += 1
            window_err += 1
        result.histogram.record(us)
        window.record(us)

    async def one(conn: Connection, intended: float) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            status = await conn.get()
            record(
                time.perf_counter() - intended, status, None if 200 <= status < 400 else "non_2xx"
            )
        except HTTPError as exc:
            record(time.perf_counter() - intended, None, exc.kind)
        finally:
            in_flight -= 1

    async def ticker() -> None:
        nonlocal window, window_ok, window_err
        while True:
            await asyncio.sleep(1.0)
            t = time.perf_counter() - start
            result.timeline.append(
                (round(t, 2), window.percentile(95) / 1000, window_ok, window_err)
            )
            window, window_ok, window_err = Histogram(), 0, 0
            if callable(should_abort):
                reason = should_abort(result)
                if reason:
                    result.aborted = str(reason)
                    return

    tick = asyncio.get_running_loop().create_task(ticker())
    conns: list[Connection] = []
    try:
        if rate is None:
            assert concurrency is not None

            def target_vus() -> int:
                if not stages:
                    return concurrency or 0
                return round(level_at(concurrency or 0, stages, time.perf_counter() - start))

            async def vu(index: int) -> None:
                nonlocal sent
                conn = Connection(host, port, request, timeout_s)
                conns.append(conn)
                while (
                    time.perf_counter() < deadline
                    and sent < max_requests
                    and not result.aborted
                    and index < target_vus()
                ):
                    sent += 1
                    await one(conn, time.perf_counter())

            running: dict[int, asyncio.Task[None]] = {}
            while time.perf_counter() < deadline and not result.aborted and sent < max_requests:
                # VUs above the target stop after their request; they start again on a ramp-up
                for index in range(min(target_vus(), max_vus)):
                    if index not in running or running[index].done():
                        running[index] = asyncio.get_running_loop().create_task(vu(index))
                if not stages:
                    break
                await asyncio.sleep(0.05)
            await asyncio.gather(*running.values())
        else:
            idle: collections.deque[Connection] = collections.deque()
            waiting: collections.deque[float] = collections.deque()
            pending: set[asyncio.Task[None]] = set()
            wake = asyncio.Event()
            if stages:
                offsets = list(itertools.islice(arrival_offsets(rate, stages), max_requests))
            else:
                offsets = [i / rate for i in range(min(max_requests, int(duration_s * rate)))]
            total = len(offsets)

            async def serve(conn: Connection, intended: float) -> None:
                await one(conn, intended)
                # FIFO: the oldest intended request gets the freed connection first
                if waiting and not result.aborted:
                    nxt = waiting.popleft()
                    t = asyncio.get_running_loop().create_task(serve(conn, nxt))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                else:
                    idle.append(conn)
                    wake.set()

            for offset in offsets:
                if result.aborted:
                    break
                intended = start + offset
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent += 1
                if idle:
                    conn = idle.popleft()
                elif len(conns) < max_vus:
                    conn = Connection(host, port, request, timeout_s)
                    conns.append(conn)
                else:
                    waiting.append(intended)
                    continue
                t = asyncio.get_running_loop().create_task(serve(conn, intended))
                pending.add(t)
                t.add_done_callback(pending.discard)
            # let requests in flight finish until the deadline (+ one timeout), then count the rest
            end_by = max(deadline, time.perf_counter()) + timeout_s
            while pending and time.perf_counter() < end_by:
                await asyncio.wait(set(pending), timeout=max(0.0, end_by - time.perf_counter()))
            result.not_sent = total - sent
            for t in pending:
                t.cancel()
            result.in_flight_at_end = len(pending) + len(waiting)
    finally:
        tick.cancel()
        result.duration_s = time.perf_counter() - start
        result.cpu_share, result.lag_p99_ms = monitor.stop()
        for c in conns:
            c.close()
    return result


def _worker(url: str, kwargs: dict[str, object], conn: object) -> None:
    result = asyncio.run(run_load(url, **kwargs))  # type: ignore[arg-type]
    h = result.histogram
    conn.send(  # type: ignore[attr-defined]
        {
            "sparse": h.to_sparse(),
            "min": h.min_us,
            "max": h.max_us,
            "sum": h.sum_us,
            "ok": result.ok,
            "errors": dict(result.errors),
            "in_flight": result.in_flight_at_end,
            "not_sent": result.not_sent,
            "cpu": result.cpu_share,
            "lag": result.lag_p99_ms,
            "duration": result.duration_s,
            "aborted": result.aborted,
        }
    )


def run_load_processes(
    url: str,
    *,
    processes: int,
    duration_s: float,
    concurrency: int | None = None,
    rate: float | None = None,
    timeout_s: float = 10.0,
    max_requests: int = 1_000_000,
) -> LoadResult:
    """Split the load over several processes (one event loop per core) and merge the results.

    Histograms merge exactly (bucket counts add); the CPU share is the mean
    over the processes (each on its own core); generator-bound uses the
    busiest process's loop lag.
    """
    if processes < 1:
        raise ValueError("processes must be >= 1")
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for i in range(processes):
        share: dict[str, object] = {
            "duration_s": duration_s,
            "timeout_s": timeout_s,
            "max_requests": max_requests // processes,
        }
        if rate is not None:
            share["rate"] = rate / processes
        else:
            base, extra = divmod(concurrency or 0, processes)
            share["concurrency"] = base + (1 if i < extra else 0)
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(url, share, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    parts = [p.recv() for p in pipes]
    for proc in procs:
        proc.join(10)
    merged = LoadResult(
        model="closed" if rate is None else "open",
        url=url,
        duration_s=max(x["duration"] for x in parts),
        offered_rps=rate,
    )
    for x in parts:
        merged.histogram.merge(Histogram.from_sparse(x["sparse"], x["min"], x["max"], x["sum"]))
        merged.ok += x["ok"]
        merged.errors.update(x["errors"])
        merged.in_flight_at_end += x["in_flight"]
        merged.not_sent += x["not_sent"]
        merged.cpu_share += x["cpu"]
        merged.lag_p99_ms = max(merged.lag_p99_ms, x["lag"])
        merged.aborted = merged.aborted or x["aborted"]
    merged.cpu_share /= processes  # share of the cores in use, comparable with one process
    return merged
