"""quote_ident against a real PostgreSQL: hostile names work and never inject SQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import services


@pytest.fixture(scope="module")
def postgres() -> Iterator[services.Postgres]:
    pg = services.start_postgres(services.tmpdir("shipyard-pg-"))
    yield pg
    services.stop(pg.proc)


def test_hostile_identifiers_roundtrip(postgres):
    import psycopg

    from tasks.core.sqlmap import quote_ident

    names = ["select", "my col", 'we"ird', "naïve 名前", 'x"; DROP TABLE victim; --']
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE victim (id int)")
        table = quote_ident('order "items"; --')
        cols = ", ".join(f"{quote_ident(n)} text" for n in names)
        conn.execute(f"CREATE TABLE {table} ({cols})")
        conn.execute(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * len(names))})", names)
        row = conn.execute(
            f"SELECT {', '.join(quote_ident(n) for n in names)} FROM {table}"
        ).fetchone()
        assert list(row) == names
        got = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                ['order "items"; --'],
            )
        ]
        assert got == names
        assert conn.execute("SELECT to_regclass('victim')").fetchone()[0] == "victim"
