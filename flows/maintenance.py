"""maintenance: the scheduled upkeep of an environment.

Heals it after a release process died without hooks (like `recover`), then
stops warm standbys whose bake window has passed: until then a rollback is a
proxy switch; afterwards it starts the retained image again (seconds, not ms).
"""

from __future__ import annotations

from prefect import flow

from flows.recover import heal


@flow(name="maintenance", log_prints=True)
def maintenance(
    environment: str = "staging",
    service: str = "congress-api",
    target: str | None = None,
    registry: str | None = None,
    notifier: str | None = None,
    lock_timeout_s: float = 120.0,
) -> list[str]:
    return heal(
        environment, service, target, registry, notifier, lock_timeout_s, retire_standby=True
    )
