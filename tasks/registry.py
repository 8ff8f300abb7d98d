"""push-image: push with the block's credentials, then prove the registry has it."""

from __future__ import annotations

import time
from typing import Any

import docker
import httpx
from docker.errors import DockerException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.errors import RegistryError
from tasks.core.images import split_repository
from tasks.core.models import BuiltImage, PushedImage
from tasks.core.redact import redact

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
ATTEMPTS = 3


def api_base(registry: str) -> str:
    """Registry HTTP API root; loopback registries speak plain HTTP (as Docker assumes)."""
    if registry.startswith(("http://", "https://")):
        return registry.rstrip("/")
    host = registry.split(":")[0]
    insecure = host in ("localhost", "::1") or host.startswith("127.")
    return f"{'http' if insecure else 'https'}://{registry}"


class RegistryAPI:
    """Distribution v2 API with Basic auth and the Bearer token dance."""

    def __init__(
        self, registry: str, username: str | None = None, password: str | None = None
    ) -> None:
        self.base = api_base(registry)
        self.auth = (username, password) if username and password else None
        self.http = httpx.Client(timeout=30)
        self._token: str | None = None

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        resp = self.http.request(
            method, self.base + path, headers=headers, auth=None if self._token else self.auth, **kw
        )
        challenge = resp.headers.get("www-authenticate", "")
        if resp.status_code == 401 and challenge.lower().startswith("bearer"):
            params = dict(
                part.split("=", 1)
                for part in challenge[7:].replace('"', "").split(",")
                if "=" in part
            )
            realm = params.pop("realm", "")
            tok = self.http.get(realm, params=params, auth=self.auth)
            tok.raise_for_status()
            self._token = tok.json().get("token") or tok.json().get("access_token")
            headers["Authorization"] = f"Bearer {self._token}"
            resp = self.http.request(method, self.base + path, headers=headers, **kw)
        return resp

    def manifest_digest(self, name: str, reference: str) -> str | None:
        resp = self._request(
            "HEAD", f"/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        if resp.status_code == 404:
            return None
        if resp.status_code == 401:
            raise RegistryError(
                "the registry refused our credentials", hint="check the registry credentials block"
            )
        resp.raise_for_status()
        return resp.headers.get("docker-content-digest")

    def delete_manifest(self, name: str, digest: str) -> bool:
        resp = self._request("DELETE", f"/v2/{name}/manifests/{digest}")
        return resp.status_code in (202, 200, 404)


def registry_api(repository: str, credentials: Any | None) -> tuple[RegistryAPI, str]:
    registry, name = split_repository(repository)
    if registry is None:
        registry = "registry-1.docker.io"
    user = credentials.username if credentials else None
    pw = credentials.password.get_secret_value() if credentials else None
    return RegistryAPI(registry, user, pw), name


@task(name="push-image", cache_policy=NO_CACHE)
def push_image(built: BuiltImage, engine_url: str, credentials: Any | None = None) -> PushedImage:
    logger = get_run_logger()
    secrets = [credentials.password.get_secret_value()] if credentials else []
    client = docker.DockerClient(base_url=engine_url, timeout=600)
    auth = (
        {
            "username": credentials.username,
            "password": secrets[0],
            "serveraddress": credentials.registry_url,
        }
        if credentials
        else None
    )
    digest: str | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            error = None
            for line in client.api.push(
                built.repository, built.tag, stream=True, decode=True, auth_config=auth
            ):
                if "error" in line:
                    error = line.get("error")
                aux = line.get("aux") or {}
                if aux.get("Digest"):
                    digest = aux["Digest"]
            if error is None and digest:
                break
            message = error or "the engine reported no digest"
        except DockerException as exc:
            message = str(exc)
        message = redact(message, secrets)
        permanent = "denied" in message or "unauthorized" in message.lower()
        if permanent or attempt == ATTEMPTS:
            raise RegistryError(
                f"push of {built.reference} failed: {message}",
                hint="check the registry credentials block" if permanent else "is the registry up?",
            )
        logger.warning("push attempt %s failed (%s); retrying", attempt, message)
        time.sleep(2 * attempt)
    assert digest is not None
    api, name = registry_api(built.repository, credentials)
    try:
        remote = api.manifest_digest(name, built.tag)
    except httpx.HTTPError as exc:
        raise RegistryError(redact(f"cannot verify the pushed manifest: {exc}", secrets)) from exc
    if remote != digest:
        raise RegistryError(
            f"registry has {remote} for {built.reference}, the engine pushed {digest}",
            hint="another push to the same tag raced this one; use unique versions",
        )
    logger.info("pushed %s, registry confirms %s", built.reference, digest)
    return PushedImage(
        repository=built.repository, tag=built.tag, digest=digest, image_id=built.image_id
    )


@task(name="promote-image", cache_policy=NO_CACHE)
def find_released_image(
    repository: str, version: str, credentials: Any | None = None
) -> PushedImage | None:
    """The image already pushed for `version`, if any: build once, promote everywhere.

    Rebuilding the same version for another environment would give a new digest
    (build timestamps differ) and race the first push on the same tag.
    """
    api, name = registry_api(repository, credentials)
    secrets = [credentials.password.get_secret_value()] if credentials else []
    try:
        digest = api.manifest_digest(name, version)
    except httpx.HTTPError as exc:
        raise RegistryError(
            redact(f"cannot query the registry for {repository}:{version}: {exc}", secrets),
            hint="is the registry up and reachable from the worker?",
        ) from exc
    if digest is None:
        return None
    get_run_logger().info(
        "%s:%s is already in the registry as %s: promoting it", repository, version, digest
    )
    return PushedImage(repository=repository, tag=version, digest=digest, image_id="")
