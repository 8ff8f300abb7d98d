"""Saving the blocks of a local environment: shared by the tests, the demo and the benches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support.services import Proxy, Registry, Webhook

BASE_IMAGE = os.environ.get("SHIPYARD_BASE_IMAGE", "shipyard/base:bookworm")


def save_registry(registry: Registry, name: str) -> None:
    from prefect_docker import DockerRegistryCredentials
    from pydantic import SecretStr

    DockerRegistryCredentials(
        username=registry.username,
        password=SecretStr(registry.password),
        registry_url=registry.address,
    ).save(name, overwrite=True)


def save_service(
    name: str,
    registry: Registry,
    namespace: str,
    context: Path,
    block_name: str | None = None,
    **fields: Any,
) -> None:
    """A ServiceSpec for the sample service pushed to `registry/namespace/name`."""
    from blocks import ServiceSpec

    ServiceSpec(
        name=name,
        image_repository=f"{registry.address}/{namespace}/{name}",
        build_context=str(context),
        build_args={"BASE_IMAGE": BASE_IMAGE},
        **fields,
    ).save(block_name or name, overwrite=True)


def save_target(
    block_name: str, environment: str, proxy: Proxy, state_dir: Path, **fields: Any
) -> None:
    from blocks import DockerHostTarget

    DockerHostTarget(
        environment=environment,
        proxy_admin=proxy.admin,
        public_url=proxy.urls[environment],
        state_dir=str(state_dir),
        freeze_map=proxy.freeze_map or None,
        **fields,
    ).save(block_name, overwrite=True)


def save_webhook(webhook: Webhook, name: str = "ops") -> None:
    """Saved as `custom-webhook/<name>`; the receiver records subject and body."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(
        name=name,
        url=webhook.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        headers=None,
        cookies=None,
    ).save(name, overwrite=True)
