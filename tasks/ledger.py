"""The release ledger: one JSON line per record change, per service and environment.

A file (not a Prefect Variable, capped at 5,000 characters) so history of any
length survives; records are also published as artifacts for the UI.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.core.models import ReleaseRecord


class Ledger:
    def __init__(self, state_dir: str, service: str, environment: str) -> None:
        self.dir = Path(os.path.expanduser(state_dir))
        self.path = self.dir / f"{service}--{environment}.jsonl"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def records(self) -> list[ReleaseRecord]:
        """Latest state of every record, in the order the records were first written."""
        if not self.path.exists():
            return []
        latest: dict[str, ReleaseRecord] = {}
        for line in self.path.read_text().splitlines():
            if line.strip():
                rec = ReleaseRecord.model_validate_json(line)
                latest[rec.release_id] = rec
        return list(latest.values())

    def write(self, record: ReleaseRecord) -> ReleaseRecord:
        with self._locked(), open(self.path, "a") as fh:
            fh.write(record.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record

    def all_environments(self) -> list[ReleaseRecord]:
        """Records of this service in every environment sharing the state directory.

        Images are shared between environments on one host (a version is built
        once and promoted), so retention must consider all of them.
        """
        service = self.path.name.split("--", 1)[0]
        out: list[ReleaseRecord] = []
        for path in sorted(self.dir.glob(f"{service}--*.jsonl")):
            env = path.name.split("--", 1)[1].removesuffix(".jsonl")
            out += Ledger(str(self.dir), service, env).records()
        return out

    def get(self, release_id: str) -> ReleaseRecord | None:
        for rec in self.records():
            if rec.release_id == release_id:
                return rec
        return None
