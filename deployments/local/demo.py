"""One-command local release of the sample service (README's quick start).

Starts a Prefect server, a registry with htpasswd auth, HAProxy and a webhook
receiver on 127.0.0.1, saves the blocks a real environment needs, releases
two versions of the sample service to `staging` (the second while traffic
flows), then prints where to look in the Prefect UI. Everything it starts is
stopped at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402 - the same real services the tests use


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the services running")
    parser.add_argument("--versions", nargs="+", default=["1.0.0", "1.1.0"])
    args = parser.parse_args()
    home = services.tmpdir("shipyard-demo-")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_UI_ENABLED"] = "true"
    server = services.start_prefect_server(home)
    os.environ["PREFECT_API_URL"] = server.url
    registry = services.start_registry(home / "registry")
    proxy = services.start_haproxy(home / "haproxy", "congress-api", ["staging"])
    webhook = services.start_webhook()
    try:
        from pydantic import SecretStr
        from rich.console import Console

        from flows.release import release
        from tests.support.blocks import save_registry, save_service, save_target, save_webhook
        from tests.support.probe import Probe

        console = Console()
        save_registry(registry, "registry")
        save_service(
            "congress-api",
            registry,
            "demo",
            ROOT / "examples" / "service",
            secret_env={"API_TOKEN": SecretStr("demo-" + os.urandom(6).hex())},
            volumes={"congress-api-demo-data": "/data"},
        )
        save_target("staging", "staging", proxy, home / "state")
        save_webhook(webhook)
        params: dict[str, Any] = {
            "environment": "staging",
            "service": "congress-api",
            "target": "staging",
            "registry": "registry",
            "notifier": "custom-webhook/ops",
            "trigger": "demo",
        }
        for version in args.versions:
            with Probe(
                proxy.urls["staging"] + "/members?limit=1", connections=20, max_seconds=300
            ) as probe:
                started = time.monotonic()
                record = release(version, **params)
            console.print(
                f"[bold green]{version}[/] {record.outcome.value} in {time.monotonic() - started:.1f}s, "
                f"digest {record.digest}; probe: {probe.result.ok} ok, {probe.result.failed} failed"
            )
        ui = server.url.removesuffix("/api")
        console.print(f"\nServing: {proxy.urls['staging']}/health")
        console.print(f"Prefect UI: {ui}  (flow runs, artifacts 'release-congress-api-staging')")
        console.print(f"Notifications received: {len(webhook.messages)}")
        if args.keep:
            console.print("--keep: services stay up; Ctrl-C to stop")
            while True:
                time.sleep(3600)
    finally:
        if not args.keep:
            import docker

            for c in docker.from_env().containers.list(
                all=True, filters={"label": "io.shipyard.service=congress-api"}
            ):
                c.remove(force=True)
        webhook.close()
        for proc in (proxy.proc, registry.proc, server.proc):
            services.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
