"""Load-generator figures next to wrk and locust, on one local target; prints one JSON line.

- rps_per_core: achieved req/s divided by the generator's own CPU share (user+sys over
  wall), for Shipyard's generator, locust (FastHttpUser) and wrk, against /ok
- p50 at low load against a 50 ms endpoint: Shipyard open model at 20 req/s vs wrk -c1
- open model at 1.5x the server's capacity: p50/p99 vs a fluid queueing-model prediction
  (arrivals λ for T seconds at a server completing μ per second: a request arriving at
  t waits (λ/μ - 1)·t, so latency(q) ≈ service + (λ/μ - 1)·q·T). μ is the throughput
  the server sustained during the overload run itself; the 3-s closed-loop probe that
  sets λ = 1.5 x probe under-reads μ by up to 7 %, which alone moved p50 by 20 %
  (that comparison is printed too, as *_vs_probe_model). Like wrk2 (-c N), the open
  model runs over a fixed 32 connections and queues the rest client-side, timed from
  each request's intended send time; with 400 connections the target itself slowed
  as its sockets piled up, which is the server's behaviour, not a queueing model's.

Usage: `uv run --group bench python bench/load.py` (needs wrk: `apt-get install wrk`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tasks.loadgen import run_load  # noqa: E402
from tests.support import services  # noqa: E402

DURATION = 5.0


def child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_child(
    cmd: list[str], **kw: object
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    cpu0, t0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    return proc, child_cpu() - cpu0, time.perf_counter() - t0


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    proc, cpu, wall = timed_child(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url]
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", proc.stdout)
        assert m, proc.stdout
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": rps, "cpu_share": cpu / wall, "p50_ms": ms("50"), "p99_ms": ms("99")}


def locust(url: str, users: int, seconds: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="shipyard-locust-"))
    (tmp / "locustfile.py").write_text(
        "from locust import constant, task\nfrom locust.contrib.fasthttp import FastHttpUser\n"
        "class U(FastHttpUser):\n    wait_time = constant(0)\n    @task\n    def ok(self):\n        self.client.get('/ok')\n"
    )
    _proc, cpu, wall = timed_child(
        [
            "locust",
            "-f",
            str(tmp / "locustfile.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{int(seconds)}s",
            "--host",
            url,
            "--csv",
            str(tmp / "out"),
            "--only-summary",
        ],
        cwd=tmp,
    )
    lines = (tmp / "out_stats.csv").read_text().splitlines()
    header = lines[0].split(",")
    agg = next(line.split(",") for line in lines if ",Aggregated," in line)
    row = dict(zip(header, agg, strict=False))
    return {
        "rps": float(row["Requests/s"]),
        "cpu_share": cpu / wall,
        "requests": float(row["Request Count"]),
    }


def main() -> int:
    port = services.free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.targets", str(port)], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        services.wait_for(
            lambda: httpx.get(base + "/ok", timeout=2).status_code == 200, 30, "target"
        )
        ours = asyncio.run(run_load(base + "/ok", duration_s=DURATION, concurrency=20))
        w = wrk(base + "/ok", 20, DURATION)
        loc = locust(base, 20, DURATION)

        low = asyncio.run(run_load(base + "/slow", duration_s=DURATION, rate=20))
        w_low = wrk(base + "/slow", 1, DURATION)

        closed = asyncio.run(run_load(base + "/cpu", duration_s=3, concurrency=4))
        capacity = closed.achieved_rps
        service_ms = closed.histogram.percentile(50) / 1000 / 4  # 4 VUs queue behind each other
        T = DURATION
        over = asyncio.run(
            run_load(base + "/cpu", duration_s=T, rate=1.5 * capacity, timeout_s=30, max_vus=32)
        )
        p50, p99 = over.histogram.percentile(50) / 1000, over.histogram.percentile(99) / 1000
        mu_over = over.requests / over.duration_s  # what the server sustained
        growth = 1.5 * capacity / mu_over - 1
        pred_p50 = service_ms + growth * 0.5 * T * 1000
        pred_p99 = service_ms + growth * 0.99 * T * 1000
        probe_p50 = service_ms + 0.5 * 0.5 * T * 1000  # if μ were exactly the probe's figure
        probe_p99 = service_ms + 0.5 * 0.99 * T * 1000
        ours_per_core = ours.achieved_rps / max(ours.cpu_share, 1e-6)
        locust_per_core = loc["rps"] / max(loc["cpu_share"], 1e-6)
        print(
            json.dumps(
                {
                    "shipyard_rps": round(ours.achieved_rps),
                    "shipyard_cpu_share": round(ours.cpu_share, 3),
                    "shipyard_rps_per_core": round(ours_per_core),
                    "locust_fasthttp_rps": round(loc["rps"]),
                    "locust_cpu_share": round(loc["cpu_share"], 3),
                    "locust_rps_per_core": round(locust_per_core),
                    "wrk_rps": round(w["rps"]),
                    "wrk_cpu_share": round(w["cpu_share"], 3),
                    "wrk_rps_per_core": round(w["rps"] / max(w["cpu_share"], 1e-6)),
                    "per_core_vs_locust": round(ours_per_core / locust_per_core, 2),
                    "low_load_p50_ms": round(low.histogram.percentile(50) / 1000, 2),
                    "wrk_low_load_p50_ms": round(w_low["p50_ms"], 2),
                    "low_load_p50_delta_ms": round(
                        low.histogram.percentile(50) / 1000 - w_low["p50_ms"], 2
                    ),
                    "capacity_rps": round(capacity),
                    "overload_rate_rps": round(1.5 * capacity),
                    "overload_p50_ms": round(p50),
                    "overload_p99_ms": round(p99),
                    "model_p50_ms": round(pred_p50),
                    "model_p99_ms": round(pred_p99),
                    "overload_p50_vs_model": round(p50 / pred_p50, 3),
                    "overload_p99_vs_model": round(p99 / pred_p99, 3),
                    "overload_in_flight_at_end": over.in_flight_at_end,
                    "overload_sustained_rps": round(mu_over),
                    "overload_p50_vs_probe_model": round(p50 / probe_p50, 3),
                    "overload_p99_vs_probe_model": round(p99 / probe_p99, 3),
                    "generator_bound_at_max": ours.generator_bound,
                    "generator_lag_p99_ms": round(ours.lag_p99_ms, 2),
                    "cpus": os.cpu_count(),
                }
            )
        )
    finally:
        services.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
