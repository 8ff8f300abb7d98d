"""Session-wide real services: a Prefect server, a registry with htpasswd, HAProxy, a webhook.

Prefect is pointed at a temporary PREFECT_HOME and a real `prefect server
start` before anything imports it, so result and transaction records never
leak between runs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import services

_SERVER: services.PrefectServer | None = None
SERVICE = "congress"
# canary and preview: the last cutover tests, each on an environment of its own
ENVIRONMENTS = ["staging", "production", "canary", "preview"]


def pytest_configure(config: pytest.Config) -> None:
    global _SERVER
    home = services.tmpdir("shipyard-prefect-")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.3"
    os.environ.pop("PREFECT_API_URL", None)
    _SERVER = services.start_prefect_server(home)
    os.environ["PREFECT_API_URL"] = _SERVER.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SERVER is not None:
        services.stop(_SERVER.proc)


@pytest.fixture(scope="session")
def prefect_server() -> services.PrefectServer:
    assert _SERVER is not None
    return _SERVER


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    client = docker.from_env()
    client.ping()
    base = os.environ.get("SHIPYARD_BASE_IMAGE", "shipyard/base:bookworm")
    client.images.get(base)  # made by `stack.sh up`; a clear ImageNotFound otherwise
    yield client
    for c in client.containers.list(
        all=True, filters={"label": f"io.shipyard.service={SERVICE}"}, ignore_removed=True
    ):
        c.remove(force=True)


@pytest.fixture(scope="session")
def registry() -> Iterator[services.Registry]:
    reg = services.start_registry(services.tmpdir("shipyard-registry-"))
    yield reg
    services.stop(reg.proc)


@pytest.fixture(scope="session")
def proxy() -> Iterator[services.Proxy]:
    p = services.start_haproxy(services.tmpdir("shipyard-haproxy-"), SERVICE, ENVIRONMENTS)
    yield p
    services.stop(p.proc)


@pytest.fixture(scope="session")
def webhook() -> Iterator[services.Webhook]:
    hook = services.start_webhook()
    yield hook
    hook.close()


@dataclass
class Stack:
    """Saved blocks of a complete local environment, plus handles to the parts."""

    service: str
    context: Path
    registry: services.Registry
    proxy: services.Proxy
    webhook: services.Webhook
    secret_value: str
    state_dir: Path

    def params(self, environment: str = "staging", **extra: Any) -> dict[str, Any]:
        return {
            "environment": environment,
            "service": self.service,
            "target": f"{self.service}-{environment}",
            "registry": "test-registry",
            "notifier": "custom-webhook/ops",
            **extra,
        }


@pytest.fixture(scope="session")
def stack(
    docker_client: Any,
    registry: services.Registry,
    proxy: services.Proxy,
    webhook: services.Webhook,
    prefect_server: Any,
) -> Stack:
    from pydantic import SecretStr

    from tests.support.blocks import save_registry, save_service, save_target, save_webhook

    context = services.service_copy(services.tmpdir("shipyard-ctx-") / "service")
    wheelhouse = services.ROOT / "examples" / "service" / "wheelhouse"
    if wheelhouse.exists():
        subprocess.run(["cp", "-a", str(wheelhouse), str(context)], check=True)
    secret = "sekrit-" + secrets.token_hex(10)
    state_dir = services.tmpdir("shipyard-state-")
    save_registry(registry, "test-registry")
    save_service(
        SERVICE,
        registry,
        "shipyard",
        context,
        env={"SEED_SCALE": "0.2", "CORS_ORIGINS": "https://app.example.com"},
        secret_env={"API_TOKEN": SecretStr(secret)},
        volumes={f"{SERVICE}-data": "/data"},
        keep_releases=3,
        prune_registry=True,
    )
    for env in ENVIRONMENTS:
        save_target(f"{SERVICE}-{env}", env, proxy, state_dir, health_timeout_s=40)
    save_webhook(webhook)
    return Stack(SERVICE, context, registry, proxy, webhook, secret, state_dir)
