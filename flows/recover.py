"""recover: the path back after a release process was SIGKILLed (no hooks ran).

Also runs at the start of every release and rollback; schedule it (see
prefect.yaml) so an environment heals even when nobody releases. It takes the
environment lock, so it never races a live release: a run that died holds its
lease for at most 60 s.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import current_flow_run, environment_lock, load_context
from flows.common import recover as recover_env
from tasks.core import history
from tasks.core.models import Outcome


@flow(name="recover", log_prints=True)
def recover(
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
        actions = recover_env(
            ctx,
            stale,
            Outcome.CRASHED,
            "the flow process died (no hooks ran); recovered by the recover flow",
        )
    get_run_logger().info("recover %s: %s", environment, actions or "nothing to do")
    return actions
