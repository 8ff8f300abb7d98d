"""Release figures on real parts; prints one JSON line.

- release_s: warm-cache release of the sample service (build → push → deploy → smoke → finalize)
- orchestration_share: part of release_s spent outside the phases (Prefect engine, lock, ledger, artifacts)
- failed_requests: probe failures (40 connections) during the warm release and during every rollback
- time_to_rollback_p95_s: from the failure decision (smoke-check task failed) to 100 % of the
  probe's answers coming from the previous version, over N failing releases
- rollback_flow_s: wall time of `rollback(to="previous")` with a warm standby

Usage: `uv run python bench/release.py [--trials 5]` (needs `stack.sh up`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402

SERVICE = "bench-api"
FAULT = """

@app.middleware("http")
async def _bench_fault(request, call_next):
    if request.url.path == "/stats":
        return JSONResponse({"broken": True}, status_code=500)
    return await call_next(request)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--connections", type=int, default=40)
    args = parser.parse_args()
    home = services.tmpdir("shipyard-bench-")
    os.environ["PREFECT_HOME"] = str(home)
    server = services.start_prefect_server(home)
    os.environ["PREFECT_API_URL"] = server.url
    registry = services.start_registry(home / "registry")
    proxy = services.start_haproxy(home / "haproxy", SERVICE, ["bench"])
    context = services.service_copy(home / "service")
    wheelhouse = ROOT / "examples" / "service" / "wheelhouse"
    os.system(f"cp -a {wheelhouse} {context}/")
    try:
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        from flows.release import release
        from flows.rollback import rollback
        from tasks.ledger import Ledger
        from tests.support.blocks import save_registry, save_service, save_target
        from tests.support.probe import Probe

        save_registry(registry, "bench-registry")
        save_service(
            SERVICE,
            registry,
            "bench",
            context,
            env={"SEED_SCALE": "0.2"},
            smoke_paths=["/members?limit=1", "/stats"],
            volumes={f"{SERVICE}-data": "/data"},
            keep_releases=3,
        )
        save_target(f"{SERVICE}-bench", "bench", proxy, home / "state")
        params: dict[str, Any] = {
            "environment": "bench",
            "service": SERVICE,
            "target": f"{SERVICE}-bench",
            "registry": "bench-registry",
        }
        url = proxy.urls["bench"] + "/members?limit=1"
        ledger = Ledger(str(home / "state"), SERVICE, "bench")

        t0 = time.monotonic()
        release("b1", **params)
        cold_s = time.monotonic() - t0

        with Probe(url, connections=args.connections, max_seconds=600) as probe:
            time.sleep(1)
            t0 = time.monotonic()
            rec = release("b2", **params)
            release_s = time.monotonic() - t0
            time.sleep(1)
        failed = probe.result.failed
        served = probe.result.ok
        failures: dict[str, dict[str, int]] = {"release": dict(probe.result.errors)}
        phases_s = sum(p.seconds for p in rec.phases)

        main_py = context / "app" / "main.py"
        original = main_py.read_text()
        ttr: list[float] = []
        for i in range(args.trials):
            main_py.write_text(original + FAULT + f"\n# trial {i}\n")
            with Probe(url, connections=args.connections, max_seconds=600) as probe:
                time.sleep(0.5)
                try:
                    release(f"bad{i}", smoke_deadline_s=2, **params)
                    raise SystemExit("a faulty release succeeded")
                except Exception:  # noqa: BLE001 - the failure is the point
                    pass
                time.sleep(1.5)
            main_py.write_text(original)
            failed += probe.result.failed
            served += probe.result.ok
            if probe.result.errors:
                failures[f"failed-release-{i}"] = dict(probe.result.errors)
            run_id = ledger.records()[-1].release_id
            with get_client(sync_client=True) as client:
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
                )
            smoke = next(
                t
                for t in tasks
                if t.name.startswith("smoke-check") and t.state and t.state.is_failed()
            )
            assert smoke.state is not None
            decided = smoke.state.timestamp.timestamp()
            back = probe.result.first_time_all("b2", decided)
            ttr.append(max(0.0, (back or time.time()) - decided))

        with Probe(url, connections=args.connections, max_seconds=120) as probe:
            time.sleep(0.5)
            t0 = time.monotonic()
            rollback(to="previous", **params)
            rollback_flow_s = time.monotonic() - t0
            time.sleep(1)
        failed += probe.result.failed
        served += probe.result.ok
        failures["rollback-flow"] = dict(probe.result.errors)

        ttr.sort()
        p95 = ttr[min(len(ttr) - 1, round(0.95 * (len(ttr) - 1)))]
        print(
            json.dumps(
                {
                    "time_to_rollback_p95_s": round(p95, 3),
                    "time_to_rollback_s": [round(x, 3) for x in ttr],
                    "time_to_rollback_median_s": round(statistics.median(ttr), 3),
                    "failed_requests": failed,
                    "failures_by_phase": {k: v for k, v in failures.items() if v},
                    "requests_served": served,
                    "connections": args.connections,
                    "release_s": round(release_s, 2),
                    "release_phases_s": {p.name: p.seconds for p in rec.phases},
                    "orchestration_s": round(release_s - phases_s, 2),
                    "orchestration_share": round((release_s - phases_s) / release_s, 3),
                    "cold_release_s": round(cold_s, 2),
                    "rollback_flow_s": round(rollback_flow_s, 2),
                    "trials": args.trials,
                }
            )
        )
    finally:
        import docker as _docker

        for c in _docker.from_env().containers.list(
            all=True, filters={"label": f"io.shipyard.service={SERVICE}"}
        ):
            c.remove(force=True)
        for proc in (proxy.proc, registry.proc, server.proc):
            services.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
