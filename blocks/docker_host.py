"""A Docker host fronted by an HAProxy edge proxy: Shipyard's blue/green target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field

from tasks.core import validate
from tasks.core.errors import ConfigError

if TYPE_CHECKING:
    from tasks.deploy.docker_host import DockerHost


class DockerHostTarget(Block):
    """Where and how a service runs. Load with `DockerHostTarget.load("staging")`.

    The target's client factory, `get_client()`, returns the `DeployTarget`
    implementation, so flows never touch the Docker SDK or the proxy directly.
    """

    _block_type_name = "Shipyard Docker Host"
    _block_type_slug = "shipyard-docker-host"
    _description = "A Docker engine plus an HAProxy edge proxy switched through its Runtime API."

    environment: str = Field(description="Environment name served by this host, e.g. 'staging'.")
    engine_url: str = Field(
        default="unix:///var/run/docker.sock",
        description="Docker Engine API URL (unix socket, or tcp://host:2376 for a remote host).",
    )
    network: str | None = Field(
        default=None, description="Docker network to attach containers to (None: default bridge)."
    )
    publish_host: str = Field(
        default="127.0.0.1",
        description="Host address the container port is published on; the proxy reaches it there.",
    )
    proxy_admin: str = Field(
        default="127.0.0.1:9999",
        description="HAProxy Runtime API address (host:port of a `stats socket ... level admin`).",
    )
    public_url: str = Field(
        description="URL clients use through the edge proxy; smoke checks go through it, e.g. "
        "'http://127.0.0.1:18080'."
    )
    health_timeout_s: float = Field(
        default=60.0,
        description="Deadline for a new container to become healthy before the release fails.",
    )
    drain_s: float = Field(
        default=2.0,
        description="Seconds the old container keeps finishing in-flight requests before it may be stopped.",
    )
    bake_window_s: float = Field(
        default=900.0,
        description="How long the previous version stays running (warm) after a release, so rollback "
        "is a proxy switch; the maintenance flow stops it afterwards.",
    )
    state_dir: str = Field(
        default="~/.shipyard/state",
        description="Directory holding the release ledger (JSON lines per service/environment); "
        "point it at shared storage when several workers release to this host.",
    )
    freeze_map: str | None = Field(
        default=None,
        description="HAProxy map file used by the backend's write-freeze rule (see README, 'Edge "
        "proxy'); a release with a database migration freezes writes through it during cutover.",
    )
    stop_timeout_s: int = Field(
        default=10, description="SIGTERM grace period when stopping containers."
    )

    def validate_target(self) -> None:
        validate.name(self.environment, "target.environment")
        host, _, port = self.proxy_admin.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("target.proxy_admin", f"{self.proxy_admin!r} is not host:port")
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("target.public_url", "must start with http:// or https://")
        validate.positive(self.health_timeout_s, "target.health_timeout_s")

    def get_client(self, registry_auth: dict[str, str] | None = None) -> DockerHost:
        """The `DeployTarget` for this host; `registry_auth` lets it pull retained images."""
        from tasks.deploy.docker_host import DockerHost

        self.validate_target()
        return DockerHost(self, registry_auth)
