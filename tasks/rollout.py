"""deploy / restore: move traffic to a version on a target, undone by the hook below."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction

from blocks.docker_host import DockerHostTarget
from blocks.service import ServiceSpec
from tasks.core.models import Deployment, PushedImage, Undo
from tasks.deploy.docker_host import registry_auth_config


class UndoReport:
    """Where the rollback hook leaves what undoing the deployment did, for the flow to
    record. Prefect hands hooks a deep copy of what the transaction stores: the
    report is shared instead, so the flow sees what the hook did."""

    def __init__(self) -> None:
        self.undo: Undo | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> UndoReport:
        return self

    def stuck(self) -> Undo | None:
        """The undo, if traffic could not go back."""
        return self.undo if self.undo is not None and not self.undo.switched else None


def _remember(
    target: DockerHostTarget, service: ServiceSpec, registry: Any, deployment: Deployment
) -> None:
    txn = get_transaction()
    if txn is not None:
        txn.set("deployment", deployment)
        txn.set("target_block", target)
        txn.set("service_block", service)
        txn.set("registry_block", registry)


@task(name="deploy", cache_policy=NO_CACHE)
def deploy(
    target: DockerHostTarget,
    service: ServiceSpec,
    version: str,
    image: PushedImage,
    release_id: str,
    registry: Any | None = None,
) -> Deployment:
    client = target.get_client(registry_auth_config(registry))
    deployment = client.deploy(service, version, image, release_id)
    _remember(target, service, registry, deployment)
    get_run_logger().info(
        "%s %s serving from %s (%s); previous %s kept warm",
        service.name,
        version,
        deployment.instance.name,
        deployment.instance.address,
        deployment.previous.name if deployment.previous else "none",
    )
    return deployment


@deploy.on_rollback
def undo_deploy(txn: Transaction) -> None:
    """Traffic back to the previous version, new container removed; idempotent, never raises."""
    _undo(txn)


@task(name="restore", cache_policy=NO_CACHE)
def restore(
    target: DockerHostTarget,
    service: ServiceSpec,
    version: str,
    image_ref: str,
    digest: str,
    release_id: str,
    registry: Any | None = None,
) -> Deployment:
    client = target.get_client(registry_auth_config(registry))
    deployment = client.restore(service, version, image_ref, digest, release_id)
    _remember(target, service, registry, deployment)
    return deployment


@restore.on_rollback
def undo_restore(txn: Transaction) -> None:
    _undo(txn)


def _undo(txn: Transaction) -> None:
    from prefect.logging import get_logger

    log = get_logger("shipyard.rollback")
    report: UndoReport | None = txn.get("undo_report", None)
    try:
        deployment: Deployment | None = txn.get("deployment", None)
        if deployment is None:
            return
        # a cutover release that thawed writes onto the new version's database puts them
        # back into the old version's file first; if it cannot, traffic stays
        write_back: Any = txn.get("write_back", None)
        if write_back is not None and not write_back():
            log.error(
                "not rolled back: %s keeps serving, its writes could not be written back",
                deployment.version,
            )
            return
        target: DockerHostTarget = txn.get("target_block")
        client = target.get_client(registry_auth_config(txn.get("registry_block", None)))
        # writes frozen for the write-back thaw as soon as the old version has traffic
        undo = client.undo(
            deployment,
            txn.get("service_block"),
            on_switched=write_back.thaw if write_back is not None else None,
        )
        if report is not None:
            report.undo = undo
        if undo.switched:
            log.warning(
                "rolled back %s: traffic on %s",
                deployment.version,
                deployment.previous.version if deployment.previous else "nothing",
            )
        else:
            log.error(
                "not rolled back: %s; %s takes traffic",
                undo.error,
                undo.serving or "nothing known",
            )
    except Exception as exc:  # noqa: BLE001 - a rollback hook must never raise
        log.error("rollback hook failed: %s", exc)
        if report is not None and report.undo is None:
            report.undo = Undo(switched=False, error=f"the rollback hook failed: {exc}")
