"""Whether the run holding an environment's lock is provably dead.

A release killed with SIGKILL runs no code: its lock lease stays on the Prefect
server until it expires (60 s), and every recovery waited that long. The holder
leaves a note beside the lease (which process holds it, and the lease id); a
later run that can prove the process gone releases that lease at once. Only
proof counts: a holder on another machine or in another container (another boot
or PID namespace) is never judged, its lease simply expires.
"""

from __future__ import annotations

from tasks.core.models import Frozen


class Holder(Frozen):
    """Who holds an environment's lock, as the holder itself wrote it down."""

    lease_id: str
    flow_run_id: str
    flow_run_name: str | None = None
    host: str  # for people reading the note: the machine's name
    boot_id: str  # /proc/sys/kernel/random/boot_id: this boot of this machine
    pid_ns: int  # inode of /proc/self/ns/pid: the PID namespace the pid is in
    pid: int
    started: int  # field 22 of /proc/PID/stat: clock ticks after boot the process began

    def describe(self) -> str:
        run = (
            f"{self.flow_run_name!r} ({self.flow_run_id})"
            if self.flow_run_name
            else self.flow_run_id
        )
        return f"flow run {run}, pid {self.pid} on {self.host}"


def stat_fields(stat: str) -> tuple[str, int]:
    """(state, start time) from the text of /proc/PID/stat. The command name, in
    parentheses, may itself hold spaces and parentheses: fields are counted after
    the last ')'."""
    rest = stat[stat.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def holder_dead(holder: Holder, boot_id: str, pid_ns: int, stat: str | None) -> bool:
    """True only when provable from here: the holder ran in this boot and PID namespace,
    and its pid is gone (`stat` None), a zombie, or another process (started at
    another time: pids are reused). Anything else may still be alive."""
    if holder.boot_id != boot_id or holder.pid_ns != pid_ns:
        return False
    if stat is None:
        return True
    state, started = stat_fields(stat)
    return state in ("Z", "X", "x") or started != holder.started
