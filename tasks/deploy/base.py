"""The one interface every deploy target implements (Docker host, ECS, Cloud Run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tasks.core.models import Deployment, Instance, PushedImage, Undo

if TYPE_CHECKING:
    from blocks.service import ServiceSpec


@runtime_checkable
class DeployTarget(Protocol):
    """Blue/green on any platform.

    `deploy` starts the new version beside the old, waits for health and moves
    traffic; `undo` puts traffic back on `deployment.previous` and removes the
    new instance (idempotent, never raises; if traffic cannot go back, the new
    instance keeps serving and the returned `Undo` says why); `restore` brings back any retained
    version; `serving` tells what takes traffic now.
    """

    name: str

    def serving(self, service: ServiceSpec) -> Instance | None: ...

    def has_image(self, service: ServiceSpec, image_ref: str) -> bool: ...

    def deploy(
        self, service: ServiceSpec, version: str, image: PushedImage, release_id: str
    ) -> Deployment: ...

    def restore(
        self, service: ServiceSpec, version: str, image_ref: str, digest: str, release_id: str
    ) -> Deployment: ...

    def undo(
        self,
        deployment: Deployment,
        service: ServiceSpec,
        on_switched: Callable[[], None] | None = None,
    ) -> Undo: ...

    def discard(self, service: ServiceSpec, release_id: str) -> list[str]: ...

    def finalize(
        self, service: ServiceSpec, deployment: Deployment, keep_digests: set[str]
    ) -> list[str]: ...
