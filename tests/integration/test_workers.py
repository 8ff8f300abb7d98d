"""The SQLite worker processes of a migration: real processes from the fork server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks import migrate as m


def _main_file() -> str | None:
    return getattr(sys.modules["__main__"], "__file__", None)


def test_every_worker_starts_at_the_first_submit_without_the_parents_main(tmp_path: Path) -> None:
    """A worker that imported the parent's __main__ would re-run the parent's script
    (or spend seconds importing the CLI): all of them start at once, with it hidden."""
    assert _main_file() is not None  # pytest's own entry point: what must not be inherited
    with m.sqlite_processes(3) as pool:
        first = pool.submit(os.getpid).result()
        # three jobs that each wait for the other two can only finish on three processes
        jobs = [pool.submit(m._arrive, str(tmp_path), 3, 20.0) for _ in range(3)]
        pids = {j.result() for j in jobs}
        assert len(pids) == 3 and first in pids and os.getpid() not in pids
        assert {pool.submit(_main_file).result() for _ in range(9)} == {None}
    assert not list(Path("/tmp").glob(f"shipyard-workers-*/{first}"))  # the rendezvous is gone
