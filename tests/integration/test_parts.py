"""One task or client against one real service: registry, HAProxy, Docker build, the sample app."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import sys
from pathlib import Path

import docker
import pytest
from prefect_docker import DockerRegistryCredentials
from pydantic import SecretStr

from tests.support import services


@pytest.fixture(scope="module")
def tiny_image(docker_client):
    """A small image built from the local base image, tagged for the test registry later."""
    ctx = services.tmpdir("shipyard-tiny-")
    (ctx / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG APP_VERSION\nRUN echo $APP_VERSION > /v\n"
    )
    return ctx


def creds(registry, password=None):
    return DockerRegistryCredentials(
        username=registry.username,
        password=SecretStr(password or registry.password),
        registry_url=registry.address,
    )


def spec(ctx: Path, repository: str):
    import os

    from blocks import ServiceSpec

    return ServiceSpec(
        name="tiny",
        image_repository=repository,
        build_context=str(ctx),
        requirements=None,
        build_args={"BASE_IMAGE": os.environ.get("SHIPYARD_BASE_IMAGE", "shipyard/base:bookworm")},
    )


def test_build_labels_and_push_verified_by_registry_api(tiny_image, registry):
    from tasks.build import build_image
    from tasks.registry import find_released_image, push_image, registry_api

    repo = f"{registry.address}/it/tiny"
    built = build_image(
        spec(tiny_image, repo), "t1", "unix:///var/run/docker.sock", revision="abc123"
    )
    labels = docker.from_env().images.get(built.image_id).labels
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["org.opencontainers.image.version"] == "t1"
    pushed = push_image(built, "unix:///var/run/docker.sock", creds(registry))
    api, name = registry_api(repo, creds(registry))
    assert api.manifest_digest(name, "t1") == pushed.digest
    assert find_released_image(repo, "t1", creds(registry)).digest == pushed.digest
    assert find_released_image(repo, "nope", creds(registry)) is None


def test_push_with_wrong_password_is_a_clear_error_without_the_password(tiny_image, registry):
    from tasks.build import build_image
    from tasks.core.errors import RegistryError
    from tasks.registry import push_image

    wrong = "wrong-" + registry.password[::-1]
    built = build_image(
        spec(tiny_image, f"{registry.address}/it/tiny"), "t2", "unix:///var/run/docker.sock"
    )
    with pytest.raises(RegistryError) as err:
        push_image(built, "unix:///var/run/docker.sock", creds(registry, wrong))
    text = str(err.value)
    assert "push of" in text and "credentials" in text
    assert wrong not in text and registry.password not in text


def test_broken_dockerfile_is_a_build_error_with_the_log_tail(docker_client):
    from tasks.build import build_image
    from tasks.core.errors import BuildError

    ctx = services.tmpdir("shipyard-broken-")
    (ctx / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo about-to-fail && exit 3\n"
    )
    with pytest.raises(BuildError, match="about-to-fail"):
        build_image(spec(ctx, "127.0.0.1:1/it/broken"), "b1", "unix:///var/run/docker.sock")


def test_haproxy_runtime_switches_and_explains_a_missing_backend(proxy):
    from tasks.core.errors import ProxyError
    from tasks.core.haproxy import active_slot, backend_name
    from tasks.deploy.haproxy import HAProxyRuntime

    rt = HAProxyRuntime(proxy.admin)
    be = backend_name("congress", "production")
    before = rt.states(be)
    try:
        assert rt.switch(be, "green", "127.0.0.1", 4567).port == 4567
        assert active_slot(rt.states(be)).slot == "green"
    finally:
        # put the backend back as it was for the e2e tests
        active = active_slot(before)
        if active:
            rt.switch(be, active.slot, active.address, active.port)
        else:
            rt.apply([f"set server {be}/blue state maint", f"set server {be}/green state maint"])
    with pytest.raises(ProxyError, match="no backend") as err:
        rt.states("shipyard_nope_prod")
    assert "blue" in (err.value.hint or "")
    with pytest.raises(ProxyError, match="cannot reach"):
        HAProxyRuntime("127.0.0.1:1").states(be)


def test_sample_service_endpoints_on_sqlite(tmp_path, monkeypatch):
    import importlib
    import sys

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/c.db")
    monkeypatch.setenv("APP_VERSION", "it-1")
    monkeypatch.setenv("SEED_SCALE", "0.05")
    sys.path.insert(0, str(services.ROOT / "examples" / "service"))
    try:
        for mod in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[mod]
        main = importlib.import_module("app.main")
        from fastapi.testclient import TestClient

        with TestClient(main.app) as client:
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["version"] == "it-1"
            assert health.headers["x-app-version"] == "it-1"
            assert health.headers["x-content-type-options"] == "nosniff"
            assert len(client.get("/members?limit=3").json()) == 3
            assert client.get("/bills/1").json()["id"] == 1
            assert client.get("/members/99999").status_code == 404
            assert "bills" in client.get("/search?q=act").json()
            assert client.get("/stats").json()["votes"] > 0
            vote = {"bill_id": 1, "member_id": 2, "position": "yea", "request_id": "req-1"}
            first = client.post("/votes", json=vote).json()
            again = client.post("/votes", json=vote).json()
            assert first["id"] == again["id"]  # idempotent by request_id
            assert client.post("/votes", json={**vote, "position": "maybe"}).status_code == 422
    finally:
        sys.path.remove(str(services.ROOT / "examples" / "service"))
        for mod in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[mod]


def _race_generate(path: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(services.ROOT / "examples" / "service"))
    from app.generate import generate_once

    barrier.wait()
    results.put(generate_once(Path(path), 0.05))


def test_sample_service_workers_racing_to_seed_build_one_database(tmp_path):
    """Each uvicorn worker seeds a missing database; CI once saw two collide
    (UNIQUE constraint failed: members.bioguide_id) and the container never got healthy."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    path = tmp_path / "congress.db"
    procs = [
        ctx.Process(target=_race_generate, args=(str(path), barrier, results)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    created = sorted(results.get(timeout=5) for _ in procs)
    assert created == [False, False, False, True]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM members").fetchone() == (535,)
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["congress.db"]


def test_deterministic_generator(tmp_path):
    import sqlite3
    import sys

    sys.path.insert(0, str(services.ROOT / "examples" / "service"))
    try:
        from app.generate import generate

        a, b = tmp_path / "a.db", tmp_path / "b.db"
        assert generate(a, 0.1) == generate(b, 0.1)
        rows = [
            sqlite3.connect(p).execute("SELECT * FROM bills ORDER BY id").fetchall() for p in (a, b)
        ]
        assert rows[0] == rows[1] and len(rows[0]) == 200
    finally:
        sys.path.remove(str(services.ROOT / "examples" / "service"))
    shutil.rmtree(tmp_path, ignore_errors=True)
