"""rollback: put an earlier release back in service without a rebuild.

`to` is "previous", "last-good" or a version. A warm standby makes it a proxy
switch; otherwise the retained image (by digest) is started. A pruned image is
refused, never rebuilt: a rollback runs exactly the bytes that once passed.
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger
from prefect.transactions import transaction

from flows.common import current_flow_run, environment_lock, finish, load_context, recover, timed
from tasks.core import history
from tasks.core.errors import ReleaseRolledBack, RollbackRefused, ShipyardError
from tasks.core.models import Outcome, PhaseTiming, ReleaseRecord
from tasks.rollout import UndoReport, restore
from tasks.smoke import smoke_check


@flow(name="rollback", log_prints=True)
def rollback(
    environment: str = "staging",
    to: str = "previous",
    service: str = "congress-api",
    target: str | None = None,
    registry: str | None = None,
    notifier: str | None = None,
    reason: str = "manual rollback",
    trigger: str = "manual",
    lock_timeout_s: float = 600.0,
    pre_cutover_ok: bool = False,
) -> ReleaseRecord:
    """Put `to` back in service. A version released before the environment's data moved
    to PostgreSQL is refused unless `pre_cutover_ok`: it starts with DATABASE_URL, and
    one that does not read it would serve the stale SQLite file."""
    ctx = load_context(environment, service, target, registry, notifier)
    run_id, run_name = current_flow_run()
    logger = get_run_logger()
    with environment_lock(environment, lock_timeout_s, run_id):
        stale = history.in_progress(ctx.ledger.records())
        if stale:
            recover(ctx, stale, Outcome.CRASHED, "the flow process died; recovered by a rollback")
        records = ctx.ledger.records()
        client = ctx.client()
        candidates = history.serving_timeline(records)[-25:]
        retained = {
            r.version for r in candidates if r.image and client.has_image(ctx.service, r.image)
        }
        chosen = history.resolve_rollback_target(records, to, retained, pre_cutover_ok)
        now = history.current(records)
        cut = history.cutover(records)
        if cut is not None and chosen.started_at < cut.started_at:
            logger.warning(
                "%s was released before the data moved to PostgreSQL (%s): it starts with"
                " DATABASE_URL of %r (pre_cutover_ok)",
                chosen.version,
                cut.version,
                cut.database,
            )
        assert chosen.image and chosen.digest
        logger.info(
            "rolling back %s from %s to %s",
            environment,
            now.version if now else "-",
            chosen.version,
        )
        record = ctx.ledger.write(
            ReleaseRecord(
                release_id=run_id,
                kind="rollback",
                service=ctx.service.name,
                environment=environment,
                version=chosen.version,
                digest=chosen.digest,
                image=chosen.image,
                trigger=trigger,
                flow_run_id=run_id,
                flow_run_name=run_name,
                reason=reason,
            )
        )
        phases: list[PhaseTiming] = []
        report = UndoReport()
        switched = False
        try:
            with transaction() as txn:
                txn.set("undo_report", report)  # the restore's rollback hook fills it
                deployment = timed(
                    phases,
                    "restore",
                    restore,
                    ctx.target,
                    ctx.service,
                    chosen.version,
                    chosen.image,
                    chosen.digest,
                    run_id,
                    ctx.registry,
                )
                switched = True
                timed(
                    phases, "smoke-check", smoke_check, deployment.url, ctx.service, chosen.version
                )
            if txn.is_rolled_back():
                raise ReleaseRolledBack("the rollback transaction was rolled back")
        except Exception as exc:
            # a restored version that failed its smoke checks and could not be taken out
            # of service again serves on: the record says so (outcome kept)
            outcome, serves, _back = history.after_failure(
                chosen.version, switched, now.version if now else None, undo=report.undo
            )
            finish(
                ctx,
                record,
                outcome=Outcome.FAILED if outcome == Outcome.ROLLED_BACK else outcome,
                failed_step=getattr(exc, "step", "restore"),
                reason=f"{type(exc).__name__}: {exc}" + (f"; {serves}" if serves else ""),
                phases=tuple(phases),
            )
            raise
        if now is not None:
            bad = next((r for r in reversed(records) if r.release_id == now.release_id), None)
            if bad is not None:
                ctx.ledger.write(bad.with_changes(marked_bad=True))
        return finish(
            ctx,
            record,
            outcome=Outcome.SUCCEEDED,
            phases=tuple(phases),
            rolled_back_to=chosen.version,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Roll an environment back.")
    parser.add_argument("environment")
    parser.add_argument("--to", default="previous")
    parser.add_argument("--service", default="congress-api")
    parser.add_argument("--target")
    parser.add_argument("--registry")
    parser.add_argument("--notifier")
    parser.add_argument(
        "--pre-cutover-ok",
        action="store_true",
        help="allow a version released before the data moved to PostgreSQL (it must read"
        " DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    try:
        record = rollback(
            args.environment,
            args.to,
            args.service,
            args.target,
            args.registry,
            args.notifier,
            pre_cutover_ok=args.pre_cutover_ok,
        )
    except (ShipyardError, RollbackRefused) as exc:
        print(f"rollback failed: {exc}", file=sys.stderr)
        return 1
    print(record.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
