"""Deploy targets: one protocol, one implementation per platform."""

from tasks.deploy.base import DeployTarget

__all__ = ["DeployTarget"]
