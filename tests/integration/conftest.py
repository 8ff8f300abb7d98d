"""A real PostgreSQL per test module, and a fresh database in it per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

from tests.support import services

_ids = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[services.Postgres]:
    pg = services.start_postgres(services.tmpdir("shipyard-pg-it-"))
    yield pg
    services.stop(pg.proc)


@pytest.fixture
def target(postgres: services.Postgres) -> str:
    name = f"t{next(_ids)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.dsn.rsplit("/", 1)[0] + "/" + name
