"""What the release, rollback and recover flows share: loading blocks, the lock, recovery."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
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
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_logger
from prefect_docker import DockerRegistryCredentials
from pydantic import SecretStr

from blocks.docker_host import DockerHostTarget
from blocks.postgres import PostgresDatabase
from blocks.service import ServiceSpec
from tasks.core import history, validate
from tasks.core.errors import ConfigError, ReleaseLocked
from tasks.core.haproxy import backend_name
from tasks.core.messages import record_markdown
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
    note = _load(Block, notifier, "notifier") if notifier else None
    if note is not None and not isinstance(note, NotificationBlock):
        raise ConfigError("notifier", f"{notifier!r} is not a notification block")
    return _on_its_database(Context(environment, spec, host, creds, note))


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


@contextmanager
def environment_lock(environment: str, timeout_s: float, flow_run_id: str) -> Iterator[None]:
    """One release per environment, held for the whole flow (Prefect global concurrency limit).

    A timeout means "locked" only while somebody holds a slot: on a loaded machine
    the acquisition of a free lock outlasted a 1 s timeout (seen once in the e2e
    suite, "locked by an unknown run"). Then it is tried again, a bounded number of
    times; a lock that is really held still fails after `timeout_s`, naming the holder.
    """
    name = f"release-{environment}"
    ensure_lock_exists(name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id))
    with ExitStack() as stack:
        for attempt in range(LOCK_ATTEMPTS):
            try:
                stack.enter_context(
                    concurrency(
                        name,
                        occupy=1,
                        timeout_seconds=max(timeout_s, 0.1),
                        strict=True,
                        lease_duration=LOCK_LEASE_S,
                        holder=holder,
                    )
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
        yield


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
    """
    actions: list[str] = []
    client = ctx.client()
    for rec in [r for r in stale if r.writes_thawed]:
        # it died after thawing writes onto its database, before any write-back: putting
        # the old version back on its file would lose them, so the new version serves on
        finish(
            ctx,
            rec,
            outcome=Outcome.KEPT,
            failed_step=rec.failed_step or rec.current_step or "unknown",
            reason=f"{reason}; writes had reached its database, so it keeps serving"
            " (the rollback flow starts an earlier version on that database)",
        )
        actions.append(f"kept {rec.version}: its writes are in its database")
    stale = [r for r in stale if not r.writes_thawed]
    good = history.current(ctx.ledger.records())
    serving = client.serving(ctx.service)
    if (
        good is not None
        and good.image
        and good.digest
        and (serving is None or serving.digest != good.digest)
    ):
        client.restore(ctx.service, good.version, good.image, good.digest, good.release_id)
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
    return actions


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
