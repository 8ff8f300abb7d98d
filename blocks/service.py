"""The service being released: how to build it, run it and check it."""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.core import validate
from tasks.core.checks import HttpCheck, LoadPolicy
from tasks.core.errors import ConfigError


class ServiceSpec(Block):
    """What Shipyard releases. Load with `ServiceSpec.load("congress-api")`.

    Secret environment variables are `SecretStr`: they reach the container's
    environment and nothing else (no log, artifact, notification or repr).
    """

    _block_type_name = "Shipyard Service"
    _block_type_slug = "shipyard-service"
    _description = "A containerized web service released by Shipyard."

    name: str = Field(description="Service name; part of container, backend and lock names.")
    image_repository: str = Field(
        description="Repository to push to, including the registry host, without a tag, "
        "e.g. 'registry.example.com/team/congress-api'."
    )
    build_context: str = Field(description="Directory sent to `docker build`.")
    dockerfile: str = Field(
        default="Dockerfile", description="Dockerfile path, relative to the build context."
    )
    build_args: dict[str, str] = Field(
        default_factory=dict,
        description="Extra build arguments (e.g. BASE_IMAGE). APP_VERSION is always set to the version.",
    )
    requirements: str | None = Field(
        default="requirements.txt",
        description="Requirements file (relative to the build context) from which a wheelhouse is "
        "built on the host for a hermetic, offline image build; None to skip.",
    )
    port: int = Field(default=8000, description="Port the service listens on inside the container.")
    health_path: str = Field(
        default="/health", description="Readiness endpoint; must return 200 and the version."
    )
    smoke_paths: list[str] = Field(
        default_factory=lambda: ["/members?limit=1"],
        description="Read endpoints that must answer 2xx from the new version before traffic stays on it.",
    )
    checks: list[HttpCheck] = Field(
        default_factory=list,
        description="Declarative smoke checks (status, JSON values or schema, required headers, CORS, "
        "max latency) run after every deploy, retried while the version warms up, then strictly.",
    )
    load_policy: LoadPolicy | None = Field(
        default=None,
        description="Optional SLO gate after the smoke checks; a breached threshold rolls the release back.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables.")
    secret_env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Secret environment variables (passwords, DSNs, API keys).",
    )
    volumes: dict[str, str] = Field(
        default_factory=dict,
        description="Named volumes to mount, volume name -> container path (shared by blue and green).",
    )
    keep_releases: int = Field(
        default=5,
        description="Successful releases whose images are kept for rollback without a rebuild.",
    )
    prune_registry: bool = Field(
        default=False,
        description="Also delete manifests of pruned releases from the registry (needs delete enabled).",
    )

    def validate_spec(self) -> None:
        """Check every field before the first side effect, naming the offending key."""
        validate.name(self.name, "service.name")
        validate.repository(self.image_repository, "service.image_repository")
        context = Path(self.build_context)
        if not context.is_dir():
            raise ConfigError("service.build_context", f"{context} is not a directory")
        if not (context / self.dockerfile).is_file():
            raise ConfigError("service.dockerfile", f"{context / self.dockerfile} does not exist")
        if self.requirements and not (context / self.requirements).is_file():
            raise ConfigError(
                "service.requirements", f"{context / self.requirements} does not exist"
            )
        validate.port(self.port, "service.port")
        if not self.health_path.startswith("/"):
            raise ConfigError("service.health_path", "must start with '/'")
        for i, path in enumerate(self.smoke_paths):
            if not path.startswith("/"):
                raise ConfigError(f"service.smoke_paths[{i}]", "must start with '/'")
        validate.env_names(self.env, "service.env")
        validate.env_names(self.secret_env, "service.secret_env")
        validate.overlapping_env(self.env, self.secret_env)
        if self.keep_releases < 2:
            raise ConfigError(
                "service.keep_releases", "must be at least 2 (current + one to roll back to)"
            )

    def container_env(self, version: str) -> dict[str, str]:
        """The environment a container gets; the only place secret values are revealed."""
        env = {**self.env, "APP_VERSION": version}
        env.update({k: v.get_secret_value() for k, v in self.secret_env.items()})
        return env

    def secret_values(self) -> list[str]:
        return [v.get_secret_value() for v in self.secret_env.values()]
