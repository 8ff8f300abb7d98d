"""maintenance: the scheduled upkeep of an environment.

Heals it after a release process died without hooks (like `recover`), then
stops warm standbys whose bake window has passed: until then a rollback is a
proxy switch; afterwards it starts the retained image again (seconds, not ms).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import current_flow_run, environment_lock, load_context, recover
from tasks.core import history
from tasks.core.models import Outcome


@flow(name="maintenance", log_prints=True)
def maintenance(
    environment: str = "staging",
    service: str = "congress-api",
    target: str | None = None,
    registry: str | None = None,
    notifier: str | None = None,
    lock_timeout_s: float = 120.0,
) -> list[str]:
    ctx = load_context(environment, service, target, registry, notifier)
    run_id, _ = current_flow_run()
    with environment_lock(environment, lock_timeout_s, run_id):
        stale = history.in_progress(ctx.ledger.records())
        actions = recover(
            ctx, stale, Outcome.CRASHED, "the flow process died; recovered by maintenance"
        )
        stopped = ctx.client().retire_standby(ctx.service, ctx.target.bake_window_s)
        actions += [
            f"stopped standby {name} (bake window {ctx.target.bake_window_s:.0f}s over)"
            for name in stopped
        ]
    get_run_logger().info("maintenance of %s: %s", environment, actions or "nothing to do")
    return actions
