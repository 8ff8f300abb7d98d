"""Pure decisions: no Docker, no network, no Prefect server needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.core import haproxy, history, images, lockholder, messages, smoke, validate
from tasks.core.errors import ConfigError, RollbackRefused, ShipyardError, SmokeCheckFailed
from tasks.core.models import CheckResult, Outcome, ReleaseRecord, SmokeResult, Undo
from tasks.core.redact import MASK, redact


def rec(
    version: str, outcome: Outcome = Outcome.SUCCEEDED, kind: str = "release", bad: bool = False
) -> ReleaseRecord:
    return ReleaseRecord(
        release_id=f"{kind}-{version}-{outcome.value}",
        kind=kind,
        service="api",
        environment="staging",
        version=version,
        digest=f"sha256:{version}",
        image=f"reg/api@sha256:{version}",
        outcome=outcome,
        marked_bad=bad,
    )


HISTORY = [
    rec("v1"),
    rec("v2"),
    rec("v3", Outcome.FAILED),
    rec("v4", Outcome.ROLLED_BACK),
    rec("v5"),
]
ALL = {"v1", "v2", "v5"}


class TestRollbackTarget:
    def test_previous_skips_failed_releases(self):
        assert history.resolve_rollback_target(HISTORY, "previous", ALL).version == "v2"

    def test_explicit_version(self):
        assert history.resolve_rollback_target(HISTORY, "v1", ALL).version == "v1"

    def test_unknown_and_failed_versions_are_refused_with_the_known_ones(self):
        with pytest.raises(RollbackRefused, match=r"v4.*never released") as err:
            history.resolve_rollback_target(HISTORY, "v4", ALL)
        assert "v5, v2, v1" in str(err.value)

    def test_pruned_image_is_refused(self):
        with pytest.raises(RollbackRefused, match="pruned"):
            history.resolve_rollback_target(HISTORY, "v1", {"v2", "v5"})

    def test_already_serving(self):
        with pytest.raises(RollbackRefused, match="already serving"):
            history.resolve_rollback_target(HISTORY, "v5", ALL)

    def test_last_good_skips_bad(self):
        hist = [*HISTORY[:1], rec("v2", bad=True), *HISTORY[2:]]
        assert history.resolve_rollback_target(hist, "last-good", ALL).version == "v1"

    def test_nothing_released(self):
        with pytest.raises(RollbackRefused, match="nothing has been released"):
            history.resolve_rollback_target([rec("v1", Outcome.FAILED)], "previous", ALL)

    def test_rollback_record_counts_as_serving(self):
        hist = [*HISTORY, rec("v2", kind="rollback")]
        assert history.current(hist).version == "v2"
        assert history.resolve_rollback_target(hist, "previous", ALL).version == "v5"


def test_retention_counts_distinct_successful_versions():
    hist = [*HISTORY, rec("v6"), rec("v7")]
    assert history.retained_versions(hist, 3) == ["v7", "v6", "v5"]
    assert [r.version for r in history.prune_versions(hist, 3)] == ["v1", "v2"]


STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be 1 blue 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 32771 - 0 0 - - 0
3 be 2 green 127.0.0.1 0 5 1 1 5 1 0 0 8 0 0 0 - 9 - 0 0 - - 0
"""


class TestHAProxy:
    def test_parse_state_treats_config_disabled_bit_as_serving_once_ready(self):
        states = haproxy.parse_servers_state(STATE)
        assert states["blue"].ready and states["blue"].port == 32771
        assert not states["green"].ready
        assert haproxy.active_slot(states).slot == "blue"

    def test_half_switched_backend_has_no_single_active_slot(self):
        both = STATE.replace("green 127.0.0.1 0 5", "green 127.0.0.1 2 0")
        assert haproxy.active_slot(haproxy.parse_servers_state(both)) is None

    def test_switch_readies_new_before_old_leaves(self):
        cmds = haproxy.switch_commands("be", "green", "127.0.0.1", 5000)
        assert cmds == [
            "set server be/green addr 127.0.0.1 port 5000",
            "set server be/green state ready",
            "set server be/blue state maint",
        ]

    def test_config_has_runtime_api_and_two_slots(self):
        cfg = haproxy.render_config(
            [haproxy.Route("my-api", "prod", "127.0.0.1:80")], "127.0.0.1:9999"
        )
        assert "stats socket ipv4@127.0.0.1:9999 level admin" in cfg
        assert "backend shipyard_my_api_prod" in cfg
        assert cfg.count("server blue") == 1 and cfg.count("server green") == 1


class TestValidate:
    @pytest.mark.parametrize("bad", ["", "-v1", "v 1", "v1;rm", "x" * 200, "v1/2"])
    def test_bad_versions_name_the_key(self, bad):
        with pytest.raises(ConfigError) as err:
            validate.version(bad)
        assert err.value.key == "version" and "version:" in str(err.value)

    def test_good_inputs(self):
        assert validate.version("v1.4.2-rc_1") == "v1.4.2-rc_1"
        assert validate.repository("127.0.0.1:5000/team/api") == "127.0.0.1:5000/team/api"
        assert validate.registry_host("127.0.0.1:5000/team/api") == "127.0.0.1:5000"
        assert validate.registry_host("team/api") is None

    def test_env_key_and_overlap(self):
        with pytest.raises(ConfigError, match=r"service\.env\.1BAD"):
            validate.env_names({"1BAD": "x"}, "service.env")
        with pytest.raises(ConfigError, match=r"secret_env\.TOKEN"):
            validate.overlapping_env({"TOKEN": "a"}, {"TOKEN": "b"})


def test_redact_masks_longest_first_and_ignores_trivial():
    assert redact("pw=hunter22 and hunter2", ["hunter2", "hunter22", ""]) == f"pw={MASK} and {MASK}"
    assert redact("abc", ["ab"]) == "abc"


def test_notification_names_step_reason_digest_and_duration():
    r = rec("v3", Outcome.FAILED).with_changes(
        failed_step="deploy",
        reason="container unhealthy",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=datetime(2026, 1, 1, 0, 0, 42, tzinfo=UTC),
    )
    subject, body = messages.notification(r)
    assert "v3" in subject and "failed" in subject
    assert "failed_step: deploy" in body and "reason: container unhealthy" in body
    assert "duration_s: 42.0" in body and "sha256:v3" in body
    assert "| outcome | `failed` |" in messages.record_markdown(r, [r])


def test_smoke_evaluation():
    checks = smoke.evaluate_health(200, {"version": "v2"}, {"x-app-version": "v1"}, "v2")
    assert [c.passed for c in checks] == [True, True, False]
    result = SmokeResult(
        url="u",
        version="v2",
        checks=(*checks, CheckResult(name="x", passed=True, observed="", expected="")),
    )
    assert (
        not result.passed
        and "X-App-Version header: expected v2, got v1" in messages.smoke_failure_reason(result)
    )
    assert smoke.evaluate_path("/m", 500, {"x-app-version": "v2"}, "v2").observed == "500 from v2"


def test_oci_labels_and_repository_split():
    labels = images.oci_labels("api", "v1", None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert labels["org.opencontainers.image.created"] == "2026-01-02T03:04:05Z"
    assert labels["org.opencontainers.image.revision"] == "unknown"
    assert images.split_repository("localhost/api") == ("localhost", "api")
    assert images.split_repository("team/api") == (None, "team/api")
    a = images.wheelhouse_fingerprint(b"x", ("p",), "3.11")
    assert a != images.wheelhouse_fingerprint(b"y", ("p",), "3.11")


def test_error_tree_carries_step_and_hint():
    err = SmokeCheckFailed("bad", hint="look")
    assert (
        isinstance(err, ShipyardError)
        and err.step == "smoke-check"
        and str(err) == "bad (hint: look)"
    )


def test_the_environments_database_is_that_of_its_last_successful_cutover():
    """A failed cutover put the old version back on its file: it does not count. After
    a successful one, every later version (a rollback too) runs on that database."""
    failed = rec("pg0", Outcome.ROLLED_BACK).with_changes(database="db-a")
    assert history.database([*HISTORY, failed]) is None
    assert history.cutover([*HISTORY, failed]) is None
    moved = rec("pg1").with_changes(database="db-a")
    hist = [*HISTORY, failed, moved, rec("v6"), rec("v5", kind="rollback")]
    assert history.database(hist) == "db-a"
    assert history.cutover(hist) == moved
    again = rec("pg2").with_changes(database="db-b")
    assert history.database([*hist, again, rec("v7", Outcome.FAILED)]) == "db-b"


def test_a_kept_release_serves_and_its_database_counts():
    """A cutover release that failed after its writes thawed and could not write them
    back keeps serving: it is the current version, its database the environment's, and
    a rollback picks the version before it."""
    kept = rec("pg1", Outcome.KEPT).with_changes(database="db-a")
    hist = [*HISTORY, kept]
    assert history.current(hist) == kept
    assert history.database(hist) == "db-a"
    before = history.serving_timeline(HISTORY)[-1]
    with pytest.raises(RollbackRefused, match=r"released before the data moved"):
        history.resolve_rollback_target(hist, "previous", {before.version})
    ok = history.resolve_rollback_target(hist, "previous", {before.version}, pre_cutover_ok=True)
    assert ok == before


def test_a_rollback_behind_the_cutover_is_refused_unless_allowed():
    """Versions released since the cutover run on its database as a matter of course;
    one released before it may ignore DATABASE_URL and serve the stale file, so it is
    only restored when the caller says it reads DATABASE_URL."""
    moved = rec("pg1").with_changes(database="db-a")
    hist, kept = [*HISTORY, moved, rec("v6")], ALL | {"pg1", "v6"}
    assert history.resolve_rollback_target(hist, "previous", kept).version == "pg1"
    with pytest.raises(RollbackRefused, match=r"v5 was released before .* 'db-a', release pg1"):
        history.resolve_rollback_target(hist, "v5", kept)
    assert history.resolve_rollback_target(hist, "v5", kept, pre_cutover_ok=True).version == "v5"


def test_a_second_cutover_is_refused_once_the_data_moved():
    """After a cutover served (succeeded, or kept), the SQLite file is stale: a cutover
    from it again would replace PostgreSQL's data; a failed cutover does not count."""
    history.check_cutover(HISTORY, "staging")
    failed = rec("pg0", Outcome.ROLLED_BACK).with_changes(database="db-a")
    history.check_cutover([*HISTORY, failed], "staging")
    for served in (Outcome.SUCCEEDED, Outcome.KEPT):
        moved = rec("pg1", served).with_changes(database="db-a")
        with pytest.raises(ConfigError, match=r"migrate_from: 'staging' already runs on"):
            history.check_cutover([*HISTORY, moved, rec("v9")], "staging")


def test_a_failed_release_records_what_really_serves():
    """Rolled back only when traffic went back; a new version that could not be taken
    out of service (write-back failed, previous container gone, proxy unreachable)
    is kept, serving; another known version serving is a plain failure."""
    after = history.after_failure
    assert after("v2", False, "v1") == (Outcome.FAILED, None, None)
    assert after("v2", True, "v1", undo=Undo(switched=True, serving="v1")) == (
        Outcome.ROLLED_BACK,
        None,
        "v1",
    )
    assert after("v2", True, "v1") == (Outcome.ROLLED_BACK, None, "v1")  # no report: no hook ran
    kept, why, back = after("v2", True, "v1", write_back_failed="UndefinedTable: members")
    assert (kept, back) == (Outcome.KEPT, None) and "write-back failed: UndefinedTable" in str(why)
    gone = Undo(switched=False, serving="v2", error="previous container v1-abc is gone")
    kept, why, back = after("v2", True, "v1", undo=gone)
    assert (kept, back) == (Outcome.KEPT, None)
    assert why == "v2 keeps serving, the rollback failed: previous container v1-abc is gone"
    blind = Undo(switched=False, serving=None, error="proxy unreachable")
    assert after("v2", True, "v1", undo=blind)[0] == Outcome.KEPT
    other = Undo(switched=False, serving="v0", error="half-switched")
    assert after("v2", True, "v1", undo=other)[:2] == (
        Outcome.FAILED,
        "the rollback failed: half-switched; v0 serves",
    )


def _holder(**changes: object) -> lockholder.Holder:
    base = dict(
        lease_id="1f0c7a52-0000-4000-8000-000000000001",
        flow_run_id="run-1",
        flow_run_name="brave-otter",
        host="ci-1",
        boot_id="boot-a",
        pid_ns=4026531836,
        pid=4242,
        started=1000,
    )
    return lockholder.Holder.model_validate({**base, **changes})


def _stat(state: str, started: int, comm: str = "python -m flows.release") -> str:
    # pid (comm) state, then 18 fields, then the start time (field 22)
    return f"4242 ({comm}) {state} " + " ".join(["0"] * 18) + f" {started} 0 0"


def test_a_lock_holder_is_dead_only_when_provably_so():
    """Released early only on proof: the same boot and PID namespace, and its pid gone,
    a zombie, or reused by a process started at another time. Another machine, another
    container or a live process keeps its lease until it expires."""
    h = _holder()
    dead = lockholder.holder_dead
    assert dead(h, "boot-a", 4026531836, None)
    assert dead(h, "boot-a", 4026531836, _stat("Z", 1000))
    assert dead(h, "boot-a", 4026531836, _stat("S", 2000))  # the pid was reused
    assert not dead(h, "boot-a", 4026531836, _stat("S", 1000))
    assert not dead(h, "boot-a", 4026531836, _stat("R", 1000, comm="odd ) name (x"))
    assert not dead(h, "boot-b", 4026531836, None)  # rebooted, or another machine
    assert not dead(h, "boot-a", 4026532001, None)  # another container's PID namespace
    assert lockholder.stat_fields(_stat("S", 77, comm="a) (b")) == ("S", 77)
    assert h.describe() == "flow run 'brave-otter' (run-1), pid 4242 on ci-1"
