"""Real services for tests and benchmarks, started as child processes on 127.0.0.1."""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - polling until ready
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout}s ({last})")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class PrefectServer:
    url: str
    home: Path
    proc: subprocess.Popen[Any]


def start_prefect_server(home: Path) -> PrefectServer:
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    wait_for(lambda: httpx.get(url + "/health", timeout=2).status_code == 200, 90, "prefect server")
    return PrefectServer(url=url, home=home, proc=proc)


@dataclass
class Registry:
    address: str
    username: str
    password: str
    root: Path
    proc: subprocess.Popen[Any]


def start_registry(root: Path) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    user, password = "shipyard-ci", "pw-" + secrets.token_hex(12)
    subprocess.run(
        ["htpasswd", "-Bbc", str(root / "htpasswd"), user, password],
        check=True,
        capture_output=True,
    )
    port = free_port()
    (root / "config.yml").write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: shipyard
    path: {root}/htpasswd
"""
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")],
        stdout=open(root / "registry.log", "w"),
        stderr=subprocess.STDOUT,
    )
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 401,
        30,
        "registry",
    )
    return Registry(
        address=f"127.0.0.1:{port}", username=user, password=password, root=root, proc=proc
    )


@dataclass
class Proxy:
    admin: str
    urls: dict[str, str]
    proc: subprocess.Popen[Any]
    freeze_map: str = ""


def start_haproxy(root: Path, service: str, environments: list[str]) -> Proxy:
    from tasks.core.haproxy import Route, render_config

    root.mkdir(parents=True, exist_ok=True)
    admin = f"127.0.0.1:{free_port()}"
    ports = {env: free_port() for env in environments}
    freeze_map = root / "freeze.map"
    freeze_map.write_text("")
    cfg = render_config(
        [Route(service, env, f"127.0.0.1:{ports[env]}") for env in environments],
        admin,
        freeze_map=str(freeze_map),
    )
    (root / "haproxy.cfg").write_text(cfg)
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(root / "haproxy.cfg")],
        stdout=open(root / "haproxy.log", "w"),
        stderr=subprocess.STDOUT,
    )
    host, port = admin.split(":")

    def accepting() -> bool:
        with socket.create_connection((host, int(port)), timeout=1):
            return True

    wait_for(accepting, 20, "haproxy")
    return Proxy(
        admin=admin,
        urls={e: f"http://127.0.0.1:{p}" for e, p in ports.items()},
        proc=proc,
        freeze_map=str(freeze_map),
    )


@dataclass
class Webhook:
    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def texts(self) -> list[str]:
        return [json.dumps(m) for m in self.messages]

    def close(self) -> None:
        if self.server:
            self.server.shutdown()


def start_webhook() -> Webhook:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            hook.messages.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook.server = server
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    return hook


@dataclass
class Moto:
    url: str
    proc: subprocess.Popen[Any]


def start_moto() -> Moto:
    """moto's server: AWS APIs (S3 here) on 127.0.0.1, for boto3 to talk to for real."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        import httpx

        return httpx.get(url + "/moto-api/", timeout=2).status_code < 500

    wait_for(up, 60, "moto server")
    return Moto(url=url, proc=proc)


def service_copy(dest: Path) -> Path:
    """A private, editable build context (tests inject faults into it)."""
    src = ROOT / "examples" / "service"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return dest


_MADE: list[Path] = []


def tmpdir(prefix: str) -> Path:
    """A scratch directory, removed when the process exits (after fixtures have
    stopped their servers): PostgreSQL data dirs and database copies otherwise
    pile up in /tmp run after run (80 GB filled a machine's disk).
    SHIPYARD_KEEP_TMP=1 keeps them for a post-mortem."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if not _MADE:
        atexit.register(_remove_made)
    _MADE.append(path)
    return path


def _remove_made() -> None:
    if os.environ.get("SHIPYARD_KEEP_TMP") == "1":
        return
    for path in _MADE:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Postgres:
    dsn: str
    root: Path
    proc: subprocess.Popen[Any]


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def start_postgres(root: Path, also_listen: str | None = None) -> Postgres:
    """A throwaway PostgreSQL 15 on 127.0.0.1 (initdb refuses root: run as `postgres` then)."""
    root.mkdir(parents=True, exist_ok=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run(
        [
            *as_user,
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    if also_listen:  # e.g. the Docker bridge gateway, so containers reach it (never 0.0.0.0)
        with open(data / "pg_hba.conf", "a") as hba:
            net = ipaddress.ip_network(f"{also_listen}/16", strict=False)
            hba.write(f"host all all {net} trust\n")
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1,{also_listen}'\n")
    proc = _launch_postgres(root, port, as_user)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _wait_postgres(dsn)
    return Postgres(dsn=dsn, root=root, proc=proc)


def _launch_postgres(root: Path, port: int, as_user: list[str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [
            *as_user,
            str(PG_BIN / "postgres"),
            "-D",
            str(root / "data"),
            "-k",
            str(root),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={_listen(root)}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        stdout=open(root / "postgres.log", "a"),
        stderr=subprocess.STDOUT,
    )


def _listen(root: Path) -> str:
    conf = (root / "data" / "postgresql.auto.conf").read_text()
    for line in conf.splitlines():
        if line.startswith("listen_addresses"):
            return line.split("'")[1]
    return "127.0.0.1"


def _wait_postgres(dsn: str) -> None:
    def ready() -> bool:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    wait_for(ready, 60, "postgres")


def kill9_postgres(pg: Postgres) -> None:
    """A crash, not a shutdown: SIGKILL the postmaster and every backend."""
    pid = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()
    for p in [pid, *map(int, children)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pg.proc.wait(10)


def restart_postgres(pg: Postgres) -> Postgres:
    """Start the same cluster again (crash recovery runs if it was killed)."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = int(pg.dsn.rsplit(":", 1)[1].split("/")[0])
    deadline = time.monotonic() + 30
    while (pg.root / "data" / "postmaster.pid").exists() and time.monotonic() < deadline:
        pid = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    proc = _launch_postgres(pg.root, port, as_user)
    _wait_postgres(pg.dsn)
    return Postgres(dsn=pg.dsn, root=pg.root, proc=proc)


def file_sha(path: Path) -> str:
    """A file's sha256: "the source is left byte for byte" in one comparison."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
