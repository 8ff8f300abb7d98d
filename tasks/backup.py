"""PostgreSQL backups: pg_dump in a snapshot whose figures are known, verified by a restore.

The seeds' rollback plan for a database is "restore from backup", which only
works if the backup restores. So a backup here is three things taken from one
snapshot: the custom-format dump, and per table its row count and content sum
(`tasks.core.backup`); `verify_backup` restores it into a scratch database and
compares, and `restore_backup` does the same check inside the restore's own
transaction, so a restore either ends with exactly the backup's content or
changes nothing.

The password reaches the client tools through PGPASSWORD in their environment,
never their command line (visible to every local user in /proc) and never any
text this module emits.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets as _secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tasks.core.backup import (
    FIGURE_SETTINGS,
    TABLE_SUM_SQL,
    USER_SCHEMAS_SQL,
    USER_TABLES_SQL,
    BackupManifest,
    TableFigures,
    backup_id,
    choose,
    figure_mismatches,
    merged,
    restore_prelude,
)
from tasks.core.errors import BackupError, ConfigError
from tasks.core.redact import redact

_TOOLS = ("pg_dump", "pg_restore", "psql")
_DUMPING = re.compile(r'dumping contents of table "(.+)"')


@dataclass(frozen=True)
class Tools:
    """The PostgreSQL client programs a backup and a restore run, and their major version."""

    bin: Path
    major: int

    def __getitem__(self, name: str) -> str:
        return str(self.bin / name)


def client_tools(pg_bin: str | None) -> Tools:
    """pg_dump, pg_restore and psql from `pg_bin`, else from PATH, else the newest
    /usr/lib/postgresql/*/bin (Debian installs them there, off PATH)."""
    if pg_bin:
        candidates = [Path(pg_bin)]
    else:
        found = shutil.which("pg_dump")
        candidates = [Path(found).resolve().parent] if found else []
        debian = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates += debian
    for d in candidates:
        if all((d / t).is_file() and os.access(d / t, os.X_OK) for t in _TOOLS):
            out = subprocess.run(
                [str(d / "pg_dump"), "--version"], capture_output=True, text=True, check=False
            ).stdout
            m = re.search(r"(\d+)(?:\.\d+)?", out)
            if m:
                return Tools(d, int(m.group(1)))
    raise ConfigError(
        "pg_bin",
        f"no directory with {', '.join(_TOOLS)} found"
        + (f" in {pg_bin!r}" if pg_bin else " on PATH or under /usr/lib/postgresql"),
        hint="install the PostgreSQL client (apt-get install postgresql-client) or set pg_bin",
    )


def _client_env(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, the environment that carries it)."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextmanager
def _connect(dsn: str, password: str, what: str, **kw: Any) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, **kw)
    except psycopg.Error as exc:
        raise BackupError(
            f"{what}: cannot connect: {redact(str(exc), [password, dsn])}",
            hint="check the database block's dsn and that the server is up",
        ) from exc
    try:
        yield conn
    finally:
        conn.close()


def _figures(
    conn: psycopg.Connection[Any], tables: Sequence[tuple[str, str]]
) -> list[TableFigures]:
    for s in FIGURE_SETTINGS:
        conn.execute(s)
    out = []
    for schema, table in tables:
        q = sql.SQL(TABLE_SUM_SQL).format(sql.Identifier(schema, table))
        row = conn.execute(q).fetchone()
        assert row is not None
        out.append(TableFigures(schema_name=schema, table=table, rows=row[0], content_sum=row[1]))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: BackupManifest) -> None:
    """Written last, atomically: a dump without a manifest is an unfinished backup."""
    tmp = directory / f".{manifest.backup_id}.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2))
    _fsync(tmp)
    tmp.replace(directory / f"{manifest.backup_id}.json")


def _tail(text: str, secrets: Sequence[str], lines: int = 12) -> str:
    return redact("\n".join(text.strip().splitlines()[-lines:]), secrets)


def take_backup(
    dsn: str,
    password: str,
    directory: Path,
    label: str,
    tools: Tools,
    progress: Callable[[int, int], None] | None = None,
    lock_wait_s: float = 120.0,
) -> BackupManifest:
    """Dump the database in one snapshot and record each table's figures in it.

    A table held exclusively (a migration's ALTER, say) is waited for `lock_wait_s`,
    then the backup fails clearly; pg_dump's own default is to wait forever.

    The snapshot is exported by a read-only repeatable-read transaction that stays
    open until pg_dump ends; the figures are computed in it while pg_dump reads,
    so both describe the same instant, whatever the service writes meanwhile.
    """
    secrets = [password, dsn]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-")
        probe.close()
    except OSError as exc:
        raise BackupError(
            f"cannot write backups to {directory}: {exc.strerror}",
            hint="set the database block's backup_dir to a writable directory",
        ) from exc
    started = time.perf_counter()
    taken_at = datetime.now(UTC)
    with _connect(dsn, password, "backup") as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), current_database(),"
            " current_setting('server_version_num')::int,"
            " (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public')"
        ).fetchone()
        assert row is not None
        snap, database, version, public_owner = row
        lock_ms = max(1, int(lock_wait_s * 1000))
        conn.execute(f"SET LOCAL lock_timeout = {lock_ms}")
        if tools.major < version // 10000:
            raise ConfigError(
                "pg_bin",
                f"pg_dump {tools.major} cannot dump a PostgreSQL {version // 10000} server",
                hint="install a client at least as new as the server, or point pg_bin at one",
            )
        schemas = tuple(r[0] for r in conn.execute(USER_SCHEMAS_SQL))
        tables = [(r[0], r[1]) for r in conn.execute(USER_TABLES_SQL)]
        bid = backup_id(database, taken_at)
        final = directory / f"{bid}.dump"
        partial = directory / f".{bid}.dump.partial"
        conninfo, env = _client_env(dsn)
        proc = subprocess.Popen(
            [
                tools["pg_dump"],
                "--format=custom",
                f"--snapshot={snap}",
                f"--lock-wait-timeout={lock_ms}",
                "--verbose",
                f"--file={partial}",
                f"--dbname={conninfo}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log: list[str] = []

        def read_stderr() -> None:
            done = 0
            assert proc.stderr is not None
            for line in proc.stderr:
                log.append(line)
                if _DUMPING.search(line) and progress is not None:
                    done += 1
                    try:
                        progress(min(done, len(tables)), len(tables))
                    except Exception:  # noqa: BLE001 - progress is best effort; keep draining
                        pass

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        try:
            figures = _figures(conn, tables)
        except psycopg.Error as exc:
            proc.kill()
            proc.wait()
            reader.join()
            partial.unlink(missing_ok=True)
            locked = exc.sqlstate == "55P03"  # lock_not_available
            raise BackupError(
                f"backup: reading the tables' figures failed: {redact(str(exc), secrets)}",
                hint=f"a table was held exclusively for over {lock_wait_s:g} s (a migration?);"
                " run the backup again later"
                if locked
                else "the backup role needs SELECT on every table",
            ) from exc
        code = proc.wait()
        reader.join()
        conn.rollback()
    if code != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(
            f"pg_dump exited {code}: {_tail(''.join(log), secrets)}",
            hint="the backup role needs to read every object; nothing was kept",
        )
    _fsync(partial)
    partial.replace(final)
    manifest = BackupManifest(
        backup_id=bid,
        database=database,
        server_version=version,
        label=label,
        taken_at=taken_at,
        seconds=round(time.perf_counter() - started, 3),
        file=final.name,
        bytes=final.stat().st_size,
        sha256=_sha256(final),
        schemas=schemas,
        public_owner=public_owner,
        tables=tuple(figures),
    )
    write_manifest(directory, manifest)
    return manifest


def list_backups(directory: Path) -> list[BackupManifest]:
    """Finished backups (those with a manifest), oldest first."""
    if not directory.is_dir():
        return []
    out = []
    for p in directory.glob("*.json"):
        try:
            out.append(BackupManifest.model_validate_json(p.read_text()))
        except (OSError, ValueError):
            continue  # not ours, or half-written by a crashed run
    return sorted(out, key=lambda b: b.taken_at)


def current_database(dsn: str, password: str) -> str:
    """The name backups of this database carry (what `current_database()` says)."""
    with _connect(dsn, password, "backup") as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def find_backup(
    directory: Path, which: str, remote: Sequence[BackupManifest] = (), database: str | None = None
) -> BackupManifest:
    """A backup by id, or the newest verified one with "latest", here or off-site; with
    `database`, only that database's (a directory shared by two never mixes them up)."""
    known = merged(list_backups(directory), remote)
    if database is not None:
        known = [m for m in known if m.database == database]
    chosen = choose(known, which)
    if chosen is None:
        where = f"{directory}" + (" or off-site" if remote else "")
        if which == "latest":
            raise ConfigError("backup_id", f"no verified backup in {where}")
        raise ConfigError(
            "backup_id",
            f"no backup {which!r} in {where}",
            hint="the postgres-backups artifact of the last backup run lists them",
        )
    return chosen


def delete_backup(directory: Path, manifest: BackupManifest) -> None:
    """Manifest first: a crash halfway leaves an unlisted dump, never a listed backup
    without its file."""
    (directory / f"{manifest.backup_id}.json").unlink(missing_ok=True)
    (directory / manifest.file).unlink(missing_ok=True)


UNFINISHED_STALE_S = 3600.0  # a dump being written changes every few seconds


def remove_unfinished(
    directory: Path, stale_s: float = UNFINISHED_STALE_S, now: float | None = None
) -> list[str]:
    """Partial dumps and manifests of runs that died (a SIGKILL runs no cleanup): only
    those untouched for `stale_s`, so a backup running beside this one (a release's
    backup_first during the scheduled one, or another database sharing the
    directory) keeps the file it is writing."""
    now = time.time() if now is None else now
    gone = []
    if directory.is_dir():
        listed = {b.file for b in list_backups(directory)}
        for p in directory.iterdir():
            partial = p.name.startswith(".") and p.name.endswith((".partial", ".tmp"))
            orphan = p.suffix == ".dump" and p.name not in listed
            try:
                stale = now - p.stat().st_mtime > stale_s
            except FileNotFoundError:
                continue  # its run finished or removed it meanwhile
            if (partial or orphan) and stale:
                p.unlink(missing_ok=True)
                gone.append(p.name)
    return gone


def _checked_file(directory: Path, manifest: BackupManifest) -> Path:
    path = directory / manifest.file
    if not path.is_file():
        raise BackupError(f"backup {manifest.backup_id}: {path} is missing")
    if _sha256(path) != manifest.sha256:
        raise BackupError(
            f"backup {manifest.backup_id}: {path} does not match its recorded sha256",
            hint="the file was changed or damaged after it was written; use another backup",
        )
    return path


_SCRATCH = "shipyard_verify_"
SCRATCH_STALE_S = 3600  # a verification older than this with no session left was killed


def drop_stale_scratch(admin: psycopg.Connection[Any], now: float | None = None) -> list[str]:
    """Scratch databases of verifications that were killed (SIGKILL runs no `finally`):
    those whose name says they are over an hour old and that no session uses."""
    now = time.time() if now is None else now
    gone = []
    rows = admin.execute(
        "SELECT datname FROM pg_database d WHERE datname LIKE 'shipyard\\_verify\\_%'"
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)"
    ).fetchall()
    for (name,) in rows:
        stamp = name[len(_SCRATCH) :].split("_", 1)[0]
        if stamp.isdigit() and now - int(stamp) > SCRATCH_STALE_S:
            try:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                gone.append(name)
            except psycopg.Error:
                continue  # someone connected meanwhile, or not ours to drop: leave it
    return gone


def verify_backup(
    manifest: BackupManifest, directory: Path, dsn: str, password: str, tools: Tools
) -> BackupManifest:
    """Restore into a scratch database on the same server and compare every table's
    figures with the snapshot's. The scratch database is dropped whatever happens."""
    secrets = [password, dsn]
    path = _checked_file(directory, manifest)
    started = time.perf_counter()
    scratch = f"{_SCRATCH}{int(time.time())}_{_secrets.token_hex(4)}"
    with _connect(dsn, password, "verify", autocommit=True) as admin:
        drop_stale_scratch(admin)
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        except psycopg.Error as exc:
            raise BackupError(
                f"verify: cannot create a scratch database: {redact(str(exc), secrets)}",
                hint="grant CREATEDB to the backup role, or run the backup with verify off",
            ) from exc
        try:
            target = _with_db(dsn, scratch)
            conninfo, env = _client_env(target)
            run = subprocess.run(
                [
                    tools["pg_restore"],
                    "--exit-on-error",
                    "--no-owner",
                    "--no-privileges",
                    f"--dbname={conninfo}",
                    str(path),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if run.returncode != 0:
                raise BackupError(
                    f"verify: pg_restore of {manifest.backup_id} failed:"
                    f" {_tail(run.stderr, secrets)}",
                    hint="the backup does not restore; take a new one before relying on it",
                )
            with _connect(target, password, "verify") as conn:
                found = _figures(conn, [(t.schema_name, t.table) for t in manifest.tables])
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
            )
    bad = figure_mismatches(manifest.tables, found)
    if bad:
        raise BackupError(
            f"verify: the restore of {manifest.backup_id} differs from the backed-up snapshot: "
            + "; ".join(bad[:10]),
            hint="do not rely on this backup",
        )
    verified = manifest.model_copy(
        update={
            "verified_at": datetime.now(UTC),
            "verify_seconds": round(time.perf_counter() - started, 3),
        }
    )
    write_manifest(directory, verified)
    return verified


@dataclass(frozen=True)
class Restored:
    """What a restore put back."""

    backup_id: str
    tables: int
    rows: int
    seconds: float
    # schemas made after the backup: not the backup's to drop, so left as they are
    schemas_left: tuple[str, ...] = ()


def _check_sql(manifest: BackupManifest) -> str:
    """Run last inside the restore's transaction: any table whose figures differ from
    the backup's raises, and the whole restore rolls back."""
    out = [*(s + ";" for s in FIGURE_SETTINGS)]
    tag = f"$s{_secrets.token_hex(8)}$"  # a dollar quote no table name can close
    for t in manifest.tables:
        figures = TABLE_SUM_SQL.format(t.qualified)
        expected = f"{t.rows}:{t.content_sum}"
        out.append(
            f"DO {tag} DECLARE n bigint; s text; BEGIN\n"
            f"  {figures} INTO n, s;\n"
            f"  IF n::text || ':' || s <> {_literal(expected)} THEN\n"
            f"    RAISE EXCEPTION 'shipyard: % restored as %:%, backed up as %',"
            f" {_literal(t.qualified)}, n, s, {_literal(expected)};\n"
            f"  END IF;\nEND {tag};"
        )
    return "\n".join(out) + "\n"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def restore_backup(
    manifest: BackupManifest,
    directory: Path,
    dsn: str,
    password: str,
    tools: Tools,
    lock_timeout_s: float = 10.0,
) -> Restored:
    """Put the database back as the backup was, in one transaction: the backup's
    schemas are dropped, the dump replayed, every table's figures checked, and only
    then is it committed. Any failure (a lock held by the service, a damaged file,
    figures that differ) rolls all of it back."""
    secrets = [password, dsn]
    path = _checked_file(directory, manifest)
    started = time.perf_counter()
    with _connect(dsn, password, "restore") as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    if row is None or row[0] != manifest.database:
        raise ConfigError(
            "backup_id",
            f"backup {manifest.backup_id} is of database {manifest.database!r},"
            f" not {row[0] if row else '?'!r}",
        )
    conninfo, env = _client_env(dsn)
    with tempfile.TemporaryDirectory(prefix="shipyard-restore-") as tmp:
        prelude = Path(tmp) / "prelude.sql"
        prelude.write_text(";\n".join(restore_prelude(manifest, lock_timeout_s)) + ";\n")
        check = Path(tmp) / "check.sql"
        check.write_text(_check_sql(manifest))
        script = subprocess.Popen(
            [tools["pg_restore"], "--file=-", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        psql = subprocess.run(
            [
                tools["psql"],
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={conninfo}",
                f"--file={prelude}",
                "--file=-",
                f"--file={check}",
            ],
            stdin=script.stdout,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert script.stdout is not None
        script.stdout.close()
        script_err = script.stderr.read().decode(errors="replace") if script.stderr else ""
        script.wait()
    if script.returncode != 0 or psql.returncode != 0:
        why = _tail(psql.stderr or script_err, secrets)
        hint = "the database is as it was before the restore"
        if "lock timeout" in why:
            hint += "; the service holds locks on its tables: stop or freeze it, then restore"
        raise BackupError(f"restore of {manifest.backup_id} failed: {why}", hint=hint)
    with _connect(dsn, password, "restore") as conn:
        now = [r[0] for r in conn.execute(USER_SCHEMAS_SQL)]
    return Restored(
        backup_id=manifest.backup_id,
        tables=len(manifest.tables),
        rows=manifest.rows,
        seconds=round(time.perf_counter() - started, 3),
        schemas_left=tuple(x for x in now if x not in manifest.schemas),
    )
