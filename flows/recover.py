"""recover: the path back after a release process was SIGKILLed (no hooks ran).

Also runs at the start of every release and rollback, and inside the scheduled
`maintenance` flow, so an environment heals even when nobody releases. It
takes the environment lock, so it never races a live release. A run that died
on this machine is seen dead and its lease released at once; one that died
elsewhere holds its lease for at most 60 s.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import current_flow_run, environment_lock, load_context
from flows.common import recover as recover_env
from tasks.core import history
from tasks.core.models import Outcome


def heal(
    environment: str,
    service: str,
    target: str | None,
    registry: str | None,
    notifier: str | None,
    lock_timeout_s: float,
    retire_standby: bool,
) -> list[str]:
    """Under the lock: restore the last good version, then optionally stop expired standbys."""
    ctx = load_context(environment, service, target, registry, notifier)
    run_id, run_name = current_flow_run()
    actions: list[str] = []  # a dead holder's lock lease released, first
    with environment_lock(environment, lock_timeout_s, run_id, actions):
        stale = history.in_progress(ctx.ledger.records())
        actions += recover_env(
            ctx,
            stale,
            Outcome.CRASHED,
            f"the flow process died (no hooks ran); recovered by {run_name or 'recover'}",
        )
        if retire_standby:
            bake = ctx.target.bake_window_s
            stopped = ctx.client().retire_standby(ctx.service, bake)
            actions += [
                f"stopped standby {name} (bake window {bake:.0f}s over)" for name in stopped
            ]
    get_run_logger().info("%s: %s", environment, actions or "nothing to do")
    return actions


@flow(name="recover", log_prints=True)
def recover(
    environment: str = "staging",
    service: str = "congress-api",
    target: str | None = None,
    registry: str | None = None,
    notifier: str | None = None,
    lock_timeout_s: float = 120.0,
) -> list[str]:
    return heal(
        environment, service, target, registry, notifier, lock_timeout_s, retire_standby=False
    )
