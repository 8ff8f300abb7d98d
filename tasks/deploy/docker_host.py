"""Blue/green on one Docker host behind HAProxy.

The new container starts beside the old one, must become healthy before a
deadline, then the proxy's idle slot is pointed at it and made ready while the
old slot goes to maintenance (in-flight requests finish). The old container
stays running so that rollback is a proxy switch.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import docker
import httpx
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from prefect.logging import get_logger

from tasks.core.errors import ContainerExited, DeployError, HealthCheckTimeout
from tasks.core.haproxy import active_slot, backend_name, disable_commands, other_slot
from tasks.core.models import Deployment, Instance, PushedImage, Undo
from tasks.core.redact import redact
from tasks.deploy.haproxy import HAProxyRuntime

if TYPE_CHECKING:
    from docker.models.containers import Container

    from blocks.docker_host import DockerHostTarget
    from blocks.service import ServiceSpec

LABEL = "io.shipyard"
log = get_logger("shipyard.deploy.docker_host")


def _labels(
    service: ServiceSpec, environment: str, version: str, digest: str, release_id: str
) -> dict[str, str]:
    return {
        f"{LABEL}.service": service.name,
        f"{LABEL}.environment": environment,
        f"{LABEL}.version": version,
        f"{LABEL}.digest": digest,
        f"{LABEL}.release": release_id,
        f"{LABEL}.config": config_digest(service, version),
    }


def config_digest(service: ServiceSpec, version: str) -> str:
    """What a container was started with (environment, secrets included, volumes,
    port), hashed: a warm container is reused only when it matches. After a cutover
    the same image must run with DATABASE_URL; the standby started before it, on the
    old SQLite file, must not be switched back into service. Anyone who can read the
    label can read the container's environment itself; the hash reveals no more."""
    text = json.dumps(
        [
            sorted(service.container_env(version).items()),
            sorted(service.volumes.items()),
            service.port,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DockerHost:
    """`DeployTarget` for a Docker engine plus HAProxy."""

    name = "docker-host"

    def __init__(
        self, block: DockerHostTarget, registry_auth: dict[str, str] | None = None
    ) -> None:
        self.block = block
        self.environment = block.environment
        self.registry_auth = registry_auth
        self.proxy = HAProxyRuntime(block.proxy_admin)
        try:
            self.client = docker.DockerClient(base_url=block.engine_url, timeout=120)
            self.client.ping()
        except DockerException as exc:
            raise DeployError(
                f"cannot reach the Docker engine at {block.engine_url}: {exc}",
                hint="is dockerd running and is target.engine_url right?",
            ) from exc

    # -- reading state -------------------------------------------------------------------

    def _containers(self, service: ServiceSpec, *, all: bool = True) -> list[Container]:
        filters = {
            "label": [f"{LABEL}.service={service.name}", f"{LABEL}.environment={self.environment}"]
        }
        return list(self.client.containers.list(all=all, filters=filters, ignore_removed=True))

    def _published(self, container: Container, service: ServiceSpec) -> tuple[str, int] | None:
        ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        bindings = ports.get(f"{service.port}/tcp") or []
        for b in bindings:
            if b.get("HostPort"):
                return self.block.publish_host, int(b["HostPort"])
        return None

    def _instance(self, container: Container, service: ServiceSpec, slot: str) -> Instance:
        pub = self._published(container, service)
        labels = container.labels
        return Instance(
            id=container.id or "",
            name=container.name or "",
            version=labels.get(f"{LABEL}.version", "?"),
            digest=labels.get(f"{LABEL}.digest", "?"),
            address=f"{pub[0]}:{pub[1]}" if pub else "",
            slot=slot,
        )

    def _backend(self, service: ServiceSpec) -> str:
        return backend_name(service.name, self.environment)

    def serving(self, service: ServiceSpec) -> Instance | None:
        active = active_slot(self.proxy.states(self._backend(service)))
        if active is None:
            return None
        for container in self._containers(service, all=False):
            pub = self._published(container, service)
            if pub and pub[1] == active.port:
                return self._instance(container, service, active.slot)
        return None

    # -- starting and checking a container ----------------------------------------------

    def _secrets(self, service: ServiceSpec) -> list[str]:
        secrets = service.secret_values()
        if self.registry_auth:
            secrets.append(self.registry_auth.get("password", ""))
        return secrets

    def has_image(self, service: ServiceSpec, image_ref: str) -> bool:
        try:
            self.client.images.get(image_ref)
            return True
        except ImageNotFound:
            pass
        try:
            self.client.images.get_registry_data(image_ref, auth_config=self.registry_auth)
            return True
        except (APIError, NotFound):
            return False

    def _ensure_image(self, service: ServiceSpec, image_ref: str) -> None:
        try:
            self.client.images.get(image_ref)
            return
        except ImageNotFound:
            pass
        try:
            self.client.images.pull(image_ref, auth_config=self.registry_auth)
        except DockerException as exc:
            raise DeployError(
                redact(f"cannot pull {image_ref}: {exc}", self._secrets(service)),
                hint="check the registry credentials block and that the image still exists",
            ) from exc

    def _start(
        self, service: ServiceSpec, version: str, image_ref: str, digest: str, release_id: str
    ) -> Container:
        self._ensure_image(service, image_ref)
        name = f"{service.name}-{self.environment}-{version}-{uuid.uuid4().hex[:6]}"
        try:
            return self.client.containers.run(
                image_ref,
                detach=True,
                name=name,
                labels=_labels(service, self.environment, version, digest, release_id),
                environment=service.container_env(version),
                ports={f"{service.port}/tcp": (self.block.publish_host, None)},
                volumes={
                    vol: {"bind": path, "mode": "rw"} for vol, path in service.volumes.items()
                },
                network=self.block.network,
                restart_policy={"Name": "unless-stopped"},
            )
        except DockerException as exc:
            raise DeployError(
                redact(f"cannot start {name} from {image_ref}: {exc}", self._secrets(service))
            ) from exc

    def _logs(self, container: Container, service: ServiceSpec) -> str:
        try:
            raw = container.logs(tail=15).decode(errors="replace").strip()
        except DockerException:
            return ""
        return redact(raw, self._secrets(service))[-1500:]

    def _wait_healthy(self, container: Container, service: ServiceSpec) -> tuple[str, int]:
        """Block until Docker and an HTTP probe both say healthy, or fail with the reason."""
        deadline = time.monotonic() + self.block.health_timeout_s
        last = "not started"
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                container.reload()
                state = container.attrs["State"]
                if state["Status"] in ("exited", "dead"):
                    raise ContainerExited(
                        f"container {container.name} exited with code {state.get('ExitCode')} "
                        f"before becoming healthy; last log lines:\n{self._logs(container, service)}",
                        hint="run the image locally with the same env to see why it stops",
                    )
                health = (state.get("Health") or {}).get("Status")
                if health == "unhealthy":
                    raise HealthCheckTimeout(
                        f"container {container.name} is unhealthy (Docker HEALTHCHECK failed); "
                        f"last log lines:\n{self._logs(container, service)}"
                    )
                pub = self._published(container, service)
                if pub and health in (None, "healthy"):
                    url = f"http://{pub[0]}:{pub[1]}{service.health_path}"
                    try:
                        resp = http.get(url)
                        if resp.status_code == 200:
                            return pub
                        last = f"{service.health_path} answered {resp.status_code}"
                    except httpx.HTTPError as exc:
                        last = f"{service.health_path} unreachable ({type(exc).__name__})"
                else:
                    last = f"Docker health is {health!r}"
                time.sleep(0.25)
        raise HealthCheckTimeout(
            f"container {container.name} not healthy after {self.block.health_timeout_s:.0f}s: {last}",
            hint="raise target.health_timeout_s if the service needs longer to start",
        )

    def _remove(self, container_id: str) -> None:
        try:
            self.client.containers.get(container_id).remove(force=True, v=False)
        except NotFound:
            pass

    def _retire(self, container_id: str) -> None:
        """Remove a container that took traffic: drain, then SIGTERM, then remove.

        The route has already moved away; requests still in flight on this
        container finish during the drain and the graceful stop, instead of
        being cut (a force-remove right after the switch loses them).
        """
        try:
            container = self.client.containers.get(container_id)
        except NotFound:
            return
        time.sleep(self.block.drain_s)
        try:
            container.stop(timeout=self.block.stop_timeout_s)
        except DockerException as exc:
            log.warning("graceful stop of %s failed: %s", container.name, exc)
        self._remove(container_id)

    # -- the DeployTarget operations -----------------------------------------------------

    def _bring_up(
        self, service: ServiceSpec, version: str, image_ref: str, digest: str, release_id: str
    ) -> Deployment:
        """Start (or reuse a warm) container of `version` and move traffic to it."""
        backend = self._backend(service)
        previous = self.serving(service)
        config = config_digest(service, version)
        warm = [
            c
            for c in self._containers(service, all=False)
            if c.labels.get(f"{LABEL}.digest") == digest
            and c.labels.get(f"{LABEL}.config") == config
            and (previous is None or c.id != previous.id)
        ]
        slot = other_slot(previous.slot) if previous else "blue"
        started: Container | None = None
        try:
            if warm:
                container = warm[0]
                host, port = self._wait_healthy(container, service)
            else:
                container = started = self._start(service, version, image_ref, digest, release_id)
                host, port = self._wait_healthy(container, service)
            self.proxy.switch(backend, slot, host, port)
        except Exception:
            if started is not None:
                self._restore_route(service, previous)
                self._retire(started.id or "")
            raise
        container.reload()
        return Deployment(
            target=self.name,
            service=service.name,
            environment=self.environment,
            version=version,
            digest=digest,
            instance=self._instance(container, service, slot),
            previous=previous,
            url=self.block.public_url,
        )

    def deploy(
        self, service: ServiceSpec, version: str, image: PushedImage, release_id: str
    ) -> Deployment:
        return self._bring_up(service, version, image.reference, image.digest, release_id)

    def restore(
        self, service: ServiceSpec, version: str, image_ref: str, digest: str, release_id: str
    ) -> Deployment:
        return self._bring_up(service, version, image_ref, digest, release_id)

    def _restore_route(self, service: ServiceSpec, previous: Instance | None) -> None:
        backend = self._backend(service)
        if previous is None or not previous.address:
            self.proxy.apply(disable_commands(backend, "blue") + disable_commands(backend, "green"))
            return
        try:
            container = self.client.containers.get(previous.id)
            if container.status != "running":
                container.start()
            host, port = self._wait_healthy(container, service)
        except NotFound as exc:
            raise DeployError(f"previous container {previous.name} is gone") from exc
        self.proxy.switch(backend, previous.slot, host, port)

    def undo(
        self,
        deployment: Deployment,
        service: ServiceSpec,
        on_switched: Callable[[], None] | None = None,
    ) -> Undo:
        """Put traffic back on the previous instance and drop the new one. Never raises.
        `on_switched` runs once traffic is back, before the new container stops (a
        cutover's writes thaw then, not seconds later). Should traffic not go back (the
        previous container is gone, or never gets healthy), the new container keeps
        running: it is what still serves, and removing it would leave nothing."""
        previous_id = deployment.previous.id if deployment.previous else None
        try:
            current = self.serving(service)
            if current is None or current.id != previous_id:
                self._restore_route(service, deployment.previous)
        except Exception as exc:  # noqa: BLE001 - undo must never raise
            now = self._serving_or_none(service)
            if now is None or now.id != previous_id or previous_id is None:
                error = redact(f"could not restore the route: {exc}", self._secrets(service))
                log.error("undo of %s: %s", deployment.version, error)
                return Undo(switched=False, serving=now.version if now else None, error=error)
        if on_switched is not None:
            try:
                on_switched()
            except Exception as exc:  # noqa: BLE001 - undo must never raise
                log.error("undo of %s: after the switch: %s", deployment.version, exc)
        try:
            if deployment.previous is None or deployment.instance.id != deployment.previous.id:
                self._retire(deployment.instance.id)
        except Exception as exc:  # noqa: BLE001 - undo must never raise
            log.error(
                "undo of %s: could not remove %s: %s",
                deployment.version,
                deployment.instance.name,
                exc,
            )
        return Undo(
            switched=True, serving=deployment.previous.version if deployment.previous else None
        )

    def _serving_or_none(self, service: ServiceSpec) -> Instance | None:
        try:
            return self.serving(service)
        except Exception as exc:  # noqa: BLE001 - the proxy itself may be what failed
            log.warning("cannot tell what serves %s: %s", service.name, exc)
            return None

    def discard(self, service: ServiceSpec, release_id: str) -> list[str]:
        """Remove containers a crashed release left, unless they are serving."""
        serving = self.serving(service)
        removed = []
        for c in self._containers(service):
            if c.labels.get(f"{LABEL}.release") == release_id and (
                serving is None or c.id != serving.id
            ):
                self._retire(c.id or "")
                removed.append(c.name or "")
        return removed

    def finalize(
        self, service: ServiceSpec, deployment: Deployment, keep_digests: set[str]
    ) -> list[str]:
        """Prune containers beyond active + warm standby, and images outside retention."""
        keep_ids = {deployment.instance.id}
        if deployment.previous:
            keep_ids.add(deployment.previous.id)
        removed: list[str] = []
        for c in self._containers(service):
            if c.id not in keep_ids:
                try:
                    c.stop(timeout=self.block.stop_timeout_s)
                    c.remove(v=False)
                    removed.append(f"container {c.name}")
                except DockerException as exc:
                    log.warning("could not remove %s: %s", c.name, exc)
        # any container on the host, of any environment, pins its image
        used = {c.get("ImageID") for c in self.client.api.containers(all=True)}
        # Low-level listing: no per-image inspect, so an image another environment's
        # finalize removes meanwhile cannot make this one fail.
        for image in self.client.api.images(filters={"label": f"{LABEL}.service={service.name}"}):
            digests = {d.split("@", 1)[1] for d in image.get("RepoDigests") or [] if "@" in d}
            if image["Id"] in used or not digests or digests & keep_digests:
                continue
            try:
                self.client.images.remove(image["Id"], force=False)
                removed.append(f"image {', '.join(sorted(digests))}")
            except DockerException as exc:
                log.warning("could not remove image %s: %s", image["Id"], exc)
        return removed

    def retire_standby(self, service: ServiceSpec, older_than_s: float) -> list[str]:
        """Stop warm standbys whose bake window has passed (the maintenance flow calls this)."""
        serving = self.serving(service)
        stopped = []
        now = time.time()
        for c in self._containers(service, all=False):
            if serving and c.id == serving.id:
                continue
            started = c.attrs["State"].get("StartedAt", "")
            age = now - _parse_docker_time(started)
            if age >= older_than_s:
                c.stop(timeout=self.block.stop_timeout_s)
                stopped.append(c.name or "")
        return stopped


def _parse_docker_time(value: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return 0.0


def registry_auth_config(credentials: Any) -> dict[str, str] | None:
    if credentials is None:
        return None
    return {
        "username": credentials.username,
        "password": credentials.password.get_secret_value(),
        "serveraddress": credentials.registry_url,
    }
