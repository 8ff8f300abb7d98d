"""Scrub known secret values from any text Shipyard emits.

Secrets live in SecretStr fields, but container logs or library exceptions may
echo them back; everything that leaves a task for a log, artifact or
notification goes through `redact`.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "**********"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
