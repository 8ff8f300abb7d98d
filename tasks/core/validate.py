"""Input validation done before the first side effect, naming the offending key."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tasks.core.errors import ConfigError

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REPOSITORY_RE = re.compile(r"^(?P<registry>[A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*$")


def version(value: str, key: str = "version") -> str:
    if not isinstance(value, str) or not VERSION_RE.match(value):
        raise ConfigError(
            key,
            f"{value!r} is not a valid version",
            hint="use letters, digits, '.', '_' or '-' (a Docker tag), e.g. 'v1.4.2'",
        )
    return value


def name(value: str, key: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(
            key,
            f"{value!r} is not a valid name",
            hint="lower-case letters, digits and '-', at most 40 characters, e.g. 'staging'",
        )
    return value


def repository(value: str, key: str = "image_repository") -> str:
    if not isinstance(value, str) or not REPOSITORY_RE.match(value):
        raise ConfigError(
            key,
            f"{value!r} is not an image repository",
            hint="e.g. 'registry.example.com:5000/team/api' (no tag, no digest)",
        )
    return value


def port(value: int, key: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(key, f"{value!r} is not a TCP port (1-65535)")
    return value


def positive(value: float, key: str) -> float:
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(key, f"{value!r} must be a positive number")
    return value


def env_names(env: Mapping[str, object], key: str) -> None:
    for k in env:
        if not ENV_KEY_RE.match(k):
            raise ConfigError(f"{key}.{k}", "is not a valid environment variable name")


def overlapping_env(plain: Mapping[str, object], secret: Mapping[str, object]) -> None:
    both = sorted(set(plain) & set(secret))
    if both:
        raise ConfigError(
            "secret_env." + both[0],
            "is also set in env",
            hint="a variable is either plain or secret, never both",
        )


def registry_host(repository_name: str) -> str | None:
    """The registry part of a repository (what `docker login` needs), if any."""
    first, _, rest = repository_name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return None
