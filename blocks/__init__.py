"""Prefect Block types that hold Shipyard's configuration and credentials.

Registry credentials reuse prefect-docker's `DockerRegistryCredentials` and
notifications use Prefect's own notification blocks (`SlackWebhook`,
`CustomWebhookNotificationBlock`, ...): Shipyard adds only what has no
existing block.
"""

from blocks.docker_host import DockerHostTarget
from blocks.postgres import PostgresDatabase
from blocks.service import ServiceSpec

__all__ = ["DockerHostTarget", "PostgresDatabase", "ServiceSpec"]
