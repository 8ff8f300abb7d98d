"""Image metadata decisions: OCI labels, tags, wheelhouse fingerprint."""

from __future__ import annotations

import hashlib
from datetime import datetime


def oci_labels(
    service: str, version: str, revision: str | None, created: datetime, source: str | None = None
) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": service,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.revision": revision or "unknown",
        "io.shipyard.service": service,
    }
    if source:
        labels["org.opencontainers.image.source"] = source
    return labels


def wheelhouse_fingerprint(requirements: bytes, platforms: tuple[str, ...], python: str) -> str:
    """Changes when anything that decides the wheel set changes, and only then."""
    h = hashlib.sha256(requirements)
    h.update(("|".join(platforms) + "|" + python).encode())
    return h.hexdigest()


def split_repository(repository: str) -> tuple[str | None, str]:
    """'host:5000/team/api' -> ('host:5000', 'team/api'); no registry part -> (None, repo)."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, repository
