"""What the release, rollback and recover flows share: loading blocks, the lock, recovery."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

from prefect import get_client
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.concurrency._events import (
    emit_concurrency_acquisition_events,
    emit_concurrency_release_events,
)
from prefect.concurrency._leases import maintain_concurrency_lease  # pinned prefect==3.8.8
from prefect.concurrency._sync import (  # concurrency() keeps its lease id to itself
    acquire_concurrency_slots_with_lease,
    release_concurrency_slots_with_lease,
)
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_logger
from prefect.states import Crashed
from prefect.variables import Variable
from prefect_docker import DockerRegistryCredentials
from pydantic import SecretStr

from blocks.docker_host import DockerHostTarget
from blocks.postgres import PostgresDatabase
from blocks.service import ServiceSpec
from tasks.core import history, validate
from tasks.core.errors import ConfigError, ReleaseLocked
from tasks.core.haproxy import backend_name
from tasks.core.lockholder import Holder, holder_dead, stat_fields
from tasks.core.messages import record_markdown
from tasks.core.migration import Since
from tasks.core.models import Outcome, PhaseTiming, ReleaseRecord, utcnow
from tasks.core.redact import redact
from tasks.deploy.docker_host import DockerHost, registry_auth_config
from tasks.deploy.haproxy import HAProxyRuntime
from tasks.ledger import Ledger
from tasks.notify import send

T = TypeVar("T")
LOCK_LEASE_S = 60.0  # the server refuses shorter leases
log = get_logger("shipyard")


@dataclass
class Context:
    """Everything a flow needs, loaded and validated before any side effect."""

    environment: str
    service: ServiceSpec
    target: DockerHostTarget
    registry: DockerRegistryCredentials | None
    notifier: NotificationBlock | None
    ledger: Ledger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.target.state_dir, self.service.name, self.environment)

    def secrets(self) -> list[str]:
        out = self.service.secret_values()
        if self.registry is not None:
            out.append(self.registry.password.get_secret_value())
        return out

    def client(self) -> DockerHost:
        return self.target.get_client(registry_auth_config(self.registry))


def _load(kind: type[Block], name: str, key: str) -> Any:
    try:
        return kind.load(name)
    except (ValueError, ObjectNotFound) as exc:
        raise ConfigError(
            key,
            f"no {kind.__name__} block named {name!r}",
            hint="see README, 'Configure an environment'",
        ) from exc


def load_context(
    environment: str, service: str, target: str | None, registry: str | None, notifier: str | None
) -> Context:
    validate.name(environment, "environment")
    spec: ServiceSpec = _load(ServiceSpec, service, "service")
    spec.validate_spec()
    host: DockerHostTarget = _load(DockerHostTarget, target or environment, "target")
    host.validate_target()
    if host.environment != environment:
        raise ConfigError(
            "target", f"block {target!r} serves {host.environment!r}, not {environment!r}"
        )
    creds = _load(DockerRegistryCredentials, registry, "registry") if registry else None
    return _on_its_database(Context(environment, spec, host, creds, load_notifier(notifier)))


def load_notifier(notifier: str | None) -> NotificationBlock | None:
    """ "<block-type-slug>/<name>" of any notification block, checked before any side effect."""
    note = _load(Block, notifier, "notifier") if notifier else None
    if note is not None and not isinstance(note, NotificationBlock):
        raise ConfigError("notifier", f"{notifier!r} is not a notification block")
    return note


def _on_its_database(ctx: Context) -> Context:
    """The service as this environment must start it: after a cutover, every version
    gets DATABASE_URL of the database the data moved into. The service block is
    shared by environments, so the cutover is remembered per environment, in the
    ledger, not written into the block."""
    name = history.database(ctx.ledger.records())
    if name is None:
        return ctx
    db = _load(PostgresDatabase, name, "database")
    env = {**ctx.service.secret_env, "DATABASE_URL": SecretStr(db.dsn_for_service())}
    ctx.service = ctx.service.model_copy(update={"secret_env": env})
    return ctx


def current_flow_run() -> tuple[str, str | None]:
    ctx = FlowRunContext.get()
    if ctx and ctx.flow_run:
        return str(ctx.flow_run.id), ctx.flow_run.name
    return str(uuid4()), None


def lock_holders(environment: str, me: str) -> str:
    """Name the runs holding an environment (the server keeps no list of lease holders)."""
    note = _holder_note(environment)
    if note is not None and note.flow_run_id != me:
        return note.describe()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(
                name=FlowFilterName(any_=["release", "rollback", "recover", "maintenance"])
            ),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
    names = [
        f"flow run {r.name!r} ({r.id}, version {r.parameters.get('version') or r.parameters.get('to')})"
        for r in runs
        if str(r.id) != me and r.parameters.get("environment") == environment
    ]
    return "; ".join(names) or "an unknown run (its lease expires within 60 s if it died)"


def ensure_lock_exists(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


# -- who holds the lock: a note beside the lease, so a dead holder's lease can be released


def _note_name(environment: str) -> str:
    return f"shipyard-lock-{environment}"


def _holder_note(environment: str) -> Holder | None:
    try:
        value = Variable.get(_note_name(environment), default=None)
        return Holder.model_validate(value) if value else None
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable note proves nothing
        log.warning("cannot read the lock note of %s: %s", environment, exc)
        return None


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _pid_ns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _stat(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None


def _me(lease_id: UUID, flow_run_id: str) -> Holder:
    pid = os.getpid()
    stat = _stat(pid)
    assert stat is not None
    run = FlowRunContext.get()
    return Holder(
        lease_id=str(lease_id),
        flow_run_id=flow_run_id,
        flow_run_name=run.flow_run.name if run is not None and run.flow_run else None,
        host=socket.gethostname(),
        boot_id=_boot_id(),
        pid_ns=_pid_ns(),
        pid=pid,
        started=stat_fields(stat)[1],
    )


def take_over_dead_holder(environment: str) -> str | None:
    """Release the lock lease of a run that provably died (SIGKILL, OOM, a lost
    machine reboots: no code of it ran), instead of waiting for the lease to expire.
    Returns what was done, for the run's actions. The Prefect run it was is marked
    Crashed: nothing else would, and the UI would show it running for ever."""
    note = _holder_note(environment)
    if note is None:
        return None
    try:
        dead = holder_dead(note, _boot_id(), _pid_ns(), _stat(note.pid))
    except (OSError, ValueError) as exc:  # no /proc (not Linux): wait for the lease instead
        log.warning("cannot tell whether %s is alive: %s", note.describe(), exc)
        return None
    if not dead:
        return None
    try:
        release_concurrency_slots_with_lease(UUID(note.lease_id))  # a lease gone: a no-op
    except Exception as exc:  # noqa: BLE001 - then its lease expires, as without the note
        log.warning("could not release the lease of dead %s: %s", note.describe(), exc)
        return None
    _clear_note(environment, note.lease_id)
    log.warning("%s died holding the lock of %s: its lease released", note.describe(), environment)
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(note.flow_run_id))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(
                    run.id,
                    Crashed(
                        message=f"process {note.pid} on {note.host} died (found by a later run)"
                    ),
                    force=True,
                )
    except Exception as exc:  # noqa: BLE001 - the lease is what matters; the UI is a courtesy
        log.warning("could not mark %s crashed: %s", note.describe(), exc)
    return f"released the lock of dead {note.describe()}"


def _clear_note(environment: str, lease_id: str) -> None:
    note = _holder_note(environment)
    if note is not None and note.lease_id == lease_id:
        try:
            Variable.unset(_note_name(environment))
        except Exception as exc:  # noqa: BLE001 - a stale note names a dead lease: harmless
            log.warning("could not clear the lock note of %s: %s", environment, exc)


@contextmanager
def environment_lock(
    environment: str, timeout_s: float, flow_run_id: str, taken_over: list[str] | None = None
) -> Iterator[None]:
    """One release per environment, held for the whole flow (Prefect global concurrency
    limit, with a 60 s lease the run renews while it lives).

    The lease is taken with Prefect's own acquisition and renewal (as `concurrency()`
    does, which does not hand out its lease id), so that the holder can leave a note
    of who holds it. A run that finds the holder provably dead releases its lease at
    once (`take_over_dead_holder`; what it did is appended to `taken_over`).

    A timeout means "locked" only while somebody holds a slot: on a loaded machine
    the acquisition of a free lock outlasted a 1 s timeout (seen once in the e2e
    suite, "locked by an unknown run"). Then it is tried again, a bounded number of
    times; a lock that is really held still fails after `timeout_s`, naming the holder.
    """
    name = f"release-{environment}"
    ensure_lock_exists(name)
    done = take_over_dead_holder(environment)
    if done is not None and taken_over is not None:
        taken_over.append(done)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id))
    for attempt in range(LOCK_ATTEMPTS):
        try:
            acquired = acquire_concurrency_slots_with_lease(
                [name],
                1,
                timeout_seconds=max(timeout_s, 0.1),
                lease_duration=LOCK_LEASE_S,
                strict=True,
                holder=holder,
            )
            break
        except TimeoutError as exc:
            if attempt + 1 < LOCK_ATTEMPTS and _lock_free(name):
                log.warning("%s is free but its acquisition timed out; trying again", name)
                continue
            raise ReleaseLocked(
                f"environment {environment!r} is locked by"
                f" {lock_holders(environment, flow_run_id)}",
                hint=f"waited {timeout_s:.0f}s; retry later or raise lock_timeout_s",
            ) from exc
    lease = acquired.lease_id
    events = emit_concurrency_acquisition_events(acquired.limits, 1)  # as concurrency() does
    try:
        try:
            Variable.set(
                _note_name(environment),
                _me(lease, flow_run_id).model_dump(mode="json"),
                overwrite=True,
            )
        except Exception as exc:  # noqa: BLE001 - without a note, a death waits for the lease
            log.warning("could not leave the lock note of %s: %s", environment, exc)
        with maintain_concurrency_lease(lease, LOCK_LEASE_S, raise_on_lease_renewal_failure=True):
            yield
    finally:
        _clear_note(environment, str(lease))
        release_concurrency_slots_with_lease(lease)
        emit_concurrency_release_events(acquired.limits, 1, events)


LOCK_ATTEMPTS = 3


def _lock_free(name: str) -> bool:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots == 0


def timed(phases: list[PhaseTiming], name: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    started = time.monotonic()
    ok = False
    try:
        result = fn(*args, **kw)
        ok = True
        return result
    finally:
        phases.append(PhaseTiming(name=name, seconds=round(time.monotonic() - started, 3), ok=ok))


def publish(ctx: Context, record: ReleaseRecord) -> None:
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(
            key=f"{record.kind}-{ctx.service.name}-{ctx.environment}",
            markdown=redact(record_markdown(record, ctx.ledger.records()), ctx.secrets()),
            description=f"{record.kind} {record.version} to {ctx.environment}: {record.outcome.value}",
        )
    except Exception as exc:  # noqa: BLE001 - also runs in hooks, where no run context may exist
        log.warning("could not publish the record artifact: %s", exc)


def finish(ctx: Context, record: ReleaseRecord, **changes: Any) -> ReleaseRecord:
    """Write the final record, show it in the UI and notify; used by flows and hooks alike."""
    if changes.get("reason"):
        changes["reason"] = redact(str(changes["reason"]), ctx.secrets())[:2000]
    record = ctx.ledger.write(record.with_changes(finished_at=utcnow(), **changes))
    publish(ctx, record)
    send(ctx.notifier, record, ctx.secrets())
    return record


def recover(ctx: Context, stale: list[ReleaseRecord], outcome: Outcome, reason: str) -> list[str]:
    """Put the last good version back in service and clean up after runs that died.

    Used by the crash/cancel hooks, at the start of every release (a SIGKILLed
    run leaves an in-progress record and no hooks), and by the recover flow.
    A cutover release that died after thawing writes onto PostgreSQL first has
    them written back into its SQLite file; if that cannot be done, it is kept
    serving on PostgreSQL instead (the old version would miss those writes).
    """
    actions: list[str] = []
    client = ctx.client()
    thawed = [r for r in stale if r.writes_thawed]
    stale = [r for r in stale if not r.writes_thawed]
    written: list[ReleaseRecord] = []
    for rec in thawed:
        # it died after thawing writes onto its database: they go back into the old
        # version's file first, or putting the old version back would lose them
        rows, why, backup = _write_back_after_crash(ctx, rec)
        if rows is None:
            finish(
                ctx,
                rec,
                outcome=Outcome.KEPT,
                failed_step=rec.failed_step or rec.current_step or "unknown",
                reason=f"{reason}; writes had reached its database and could not be written"
                f" back ({why}), so it keeps serving (the rollback flow starts an earlier"
                " version on that database)",
            )
            actions.append(f"kept {rec.version}: its writes are in its database")
            continue
        rec = ctx.ledger.write(
            rec.with_changes(writes_thawed=False, written_back=rows, backup=backup)
        )
        actions.append(f"wrote {rows} row(s) {rec.version} took back into {rec.source}")
        written.append(rec)
        stale.append(rec)
    good = history.current(ctx.ledger.records())
    serving = client.serving(ctx.service)
    if (
        good is not None
        and good.image
        and good.digest
        and (serving is None or serving.digest != good.digest)
    ):
        try:
            client.restore(ctx.service, good.version, good.image, good.digest, good.release_id)
        except Exception:
            for rec in written:  # the new version serves on, on its database: writes
                # thawed now reach it, and the next recovery writes them back again
                ctx.ledger.write(rec.with_changes(writes_thawed=True))
            thaw_writes(ctx)
            raise
        actions.append(f"restored {good.version}")
    actions += thaw_writes(ctx)  # after the good version is back: writes go to it
    for rec in stale:
        actions += [f"removed {name}" for name in client.discard(ctx.service, rec.release_id)]
        finish(
            ctx,
            rec,
            outcome=outcome,
            failed_step=rec.failed_step or rec.current_step or "unknown",
            reason=reason,
            rolled_back_to=good.version if good else None,
        )
    # a version kept on its database moved the environment's data there: whatever the
    # caller starts next (a release, a rollback) must get DATABASE_URL, as its context
    # was loaded before the recovery decided
    _on_its_database(ctx)
    if thawed:  # what a dead cutover kept for its write-back has served
        shutil.rmtree(kept_cutover_snapshot(ctx), ignore_errors=True)
    return actions


def kept_cutover_snapshot(ctx: Context) -> Path:
    """Where a cutover release keeps the snapshot it swapped in, until it ends: a
    write-back, or a recovery's after a crash, finds PostgreSQL's later writes from it."""
    return ctx.ledger.dir / "cutover" / ctx.environment


def _write_back_after_crash(ctx: Context, rec: ReleaseRecord) -> tuple[int | None, str, str | None]:
    """(rows written back, or None and why not; the backup of the file) for a cutover
    release that died after thawing writes onto PostgreSQL. Writes are frozen (the recovery thaws them once
    the old version serves), and PostgreSQL's rows go back into the SQLite file in
    one checked transaction; on failure they thaw again onto the new version."""
    from flows.migrate import plan_again
    from tasks.writeback import backup_source, write_back

    if not rec.source or not rec.database or not ctx.target.freeze_map:
        return None, "the release recorded no SQLite file", None
    runtime = HAProxyRuntime(ctx.target.proxy_admin)
    backend = backend_name(ctx.service.name, ctx.environment)
    freeze_map = ctx.target.freeze_map
    try:
        db: PostgresDatabase = _load(PostgresDatabase, rec.database, "database")
        plan = plan_again(rec.source, db)  # the file does not change meanwhile
        copy = backup_source(Path(rec.source), ctx.ledger.dir / "backups", rec.release_id[:8])
        runtime.freeze_writes(freeze_map, backend)
        time.sleep(WRITE_BACK_DRAIN_S)  # writes already inside the new version finish
        dsn, password = db.get_client()
        kept = kept_cutover_snapshot(ctx) / "snapshot.db"
        since = (
            Since(horizon=rec.horizon, snapshot=str(kept))
            if rec.horizon is not None and kept.is_file()
            else None
        )
        done = write_back(Path(rec.source), dsn, password, plan, db.target_schema, since=since)
    except Exception as exc:  # noqa: BLE001 - the new version then serves on: recorded kept
        why = redact(f"{type(exc).__name__}: {exc}", ctx.secrets())[:500]
        log.error("writing back what %s took failed: %s", rec.version, why)
        try:
            runtime.thaw_writes(freeze_map, backend)
        except Exception as thaw_exc:  # noqa: BLE001 - the next recovery thaws them
            log.error("writes are still frozen: %s", thaw_exc)
        return None, why, None
    if done.not_written:
        log.warning("not written back (only PostgreSQL has them): %s", ", ".join(done.not_written))
    rows = sum(done.rows.values())
    log.warning(
        "wrote %d row(s) %s took back into %s (found by %s; a copy from before: %s): %s",
        rows,
        rec.version,
        rec.source,
        done.found_by,
        copy,
        done.rows,
    )
    return rows, "", str(copy)


WRITE_BACK_DRAIN_S = 0.5


def thaw_writes(ctx: Context) -> list[str]:
    """Lift a write freeze that no live release will lift.

    A release that migrates freezes writes at the proxy and thaws them itself,
    on success or failure; a release killed during its freeze (SIGKILL, a lost
    worker, a cancel) cannot, and writes would get 503 until someone edited
    HAProxy by hand. Recovery runs under the environment lock, so no release is
    mid-freeze: a frozen entry is a leftover, and thawing it loses nothing
    (nothing wrote anywhere while it was frozen).
    """
    freeze_map = ctx.target.freeze_map
    if not freeze_map:
        return []
    runtime = HAProxyRuntime(ctx.target.proxy_admin)
    backend = backend_name(ctx.service.name, ctx.environment)
    if not runtime.writes_frozen(freeze_map, backend):
        return []
    runtime.thaw_writes(freeze_map, backend)
    log.warning("writes to %s were still frozen by a release that died; thawed", backend)
    return [f"thawed writes to {backend}"]
