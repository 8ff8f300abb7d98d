"""kill -9 mid-copy, of the migrating process and of PostgreSQL: the target stays as it was
and a re-run succeeds. The migration runs as a user runs it: `python -m flows.migrate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_migrate import fingerprint, run, sha
from tests.support import services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    """About 330 k rows: long enough to be killed in the middle of the copy."""
    sys.path.insert(0, str(ROOT / "examples" / "service"))
    from app.generate import generate

    path = tmp_path_factory.mktemp("kill") / "big.db"
    generate(path, scale=15)
    return path


def _earlier(tmp_path: Path) -> Path:
    """The previous release's database: the same application, smaller."""
    from app.generate import generate

    path = tmp_path / "earlier.db"
    generate(path, scale=0.5)
    return path


def _start(db: Path, dsn: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.migrate", str(db), dsn, "--json"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _wait_for_copy(dsn: str, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    """Block until PostgreSQL reports rows arriving through COPY; returns how many."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the migration ended before it could be killed"
            row = conn.execute(
                "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy"
            ).fetchone()
            if row and row[0] > 0:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("no COPY seen")


def _fresh(pg: services.Postgres, name: str) -> str:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


def test_kill_9_of_the_migrating_process_then_rerun(tmp_path, big_source):
    pg = services.start_postgres(services.tmpdir("shipyard-pg-kill-"))
    try:
        dsn = _fresh(pg, "target")
        run(_earlier(tmp_path), dsn)
        before, src = fingerprint(dsn), sha(big_source)
        proc = _start(big_source, dsn)
        copied = _wait_for_copy(dsn, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert copied > 0 and proc.returncode == -signal.SIGKILL
        assert fingerprint_without_stage(dsn) == before
        left = [
            d
            for d in Path(tempfile.gettempdir()).glob("shipyard-migrate-*")
            if _owner(d) == proc.pid
        ]
        assert len(left) == 1 and (left[0] / "snapshot.db").is_file()  # no hook ran
        report = run(big_source, dsn)  # the dead run's advisory lock went with its connections
        assert report.passed and report.rows > 300_000
        assert sha(big_source) == src
        assert not left[0].exists()  # the re-run removed the dead run's snapshot
    finally:
        services.stop(pg.proc)


def _owner(d: Path) -> int | None:
    try:
        return int((d / "pid").read_text())
    except (OSError, ValueError):
        return None


def fingerprint_without_stage(dsn: str) -> list[object]:
    """The target as a user sees it; a killed run may leave its staging schema behind."""
    return [x for x in fingerprint(dsn) if "shipyard_stage" not in str(x)]


def test_kill_9_of_postgres_mid_copy_then_rerun(tmp_path, big_source):
    pg = services.start_postgres(services.tmpdir("shipyard-pg-crash-"))
    try:
        dsn = _fresh(pg, "target")
        run(_earlier(tmp_path), dsn)
        before = fingerprint(dsn)
        proc = _start(big_source, dsn)
        _wait_for_copy(dsn, proc)
        services.kill9_postgres(pg)
        out, _ = proc.communicate(timeout=60)
        report = json.loads(out.strip().splitlines()[-1])
        assert proc.returncode == 1 and report["passed"] is False
        assert "MigrationError" in report["error"]
        pg = services.restart_postgres(pg)
        assert fingerprint_without_stage(dsn) == before
        assert run(big_source, dsn).passed
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM votes").fetchone()[0] == 300_000
    finally:
        services.stop(pg.proc)
