"""The migrate flow against a real PostgreSQL 15 and real SQLite files built here.

Every test checks that the source file is byte-for-byte unchanged, and every
failing case that the target still holds exactly what it held before.
"""

from __future__ import annotations

import datetime
import enum
import io
import itertools
import json
import math
import random
import re
import sqlite3
import struct
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from blocks.postgres import PostgresDatabase
from flows.migrate import ValidationFailed, cutover_migration, migrate
from tasks.core.errors import ConfigError, MigrationError
from tests.support import services

_ids = itertools.count()

RICH = """
CREATE TABLE members (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL UNIQUE COLLATE NOCASE,
    party TEXT NOT NULL CHECK (party IN ('D', 'R', 'I')),
    active BOOLEAN NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    born DATE,
    joined DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    weight REAL,
    prefs JSON,
    avatar BLOB
);
CREATE TABLE "order items" (
    "select" INTEGER NOT NULL,
    "we""ird" TEXT NOT NULL,
    "naïve 名前" TEXT,
    member_id INTEGER REFERENCES members(id) ON DELETE CASCADE,
    PRIMARY KEY ("select", "we""ird")
) WITHOUT ROWID;
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, CHECK (length(body) < 1000));
CREATE INDEX members_recent ON members (joined DESC) WHERE active = 1;
CREATE INDEX members_handle_lower ON members (lower(handle));
CREATE VIEW member_items AS
    SELECT m.handle AS handle, count(o."select") AS items, sum(o."select" > 1) AS big
    FROM members m LEFT JOIN "order items" o ON o.member_id = m.id GROUP BY m.handle;
"""

DOUBLES = [0.1, 1e300, 5e-324, -2.5e-310, 123456789.12345679, math.inf, -math.inf, 2.0 / 3]


def build_rich(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(RICH)
    for i, w in enumerate(DOUBLES, start=1):
        conn.execute(
            "INSERT INTO members (handle, party, active, born, joined, weight, prefs, avatar)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                f"User{i}",
                "DRI"[i % 3],
                i % 2,
                f"19{50 + i}-0{1 + i % 9}-1{i % 9}",
                f"2024-03-0{i}T10:0{i}:00.12345{i}" if i % 2 else f"2024-03-0{i} 10:00:00",
                w,
                '{"b": 1, "a": [1.50, 2e2, "x\\u00e9"], "a": "dup"}' if i == 1 else None,
                bytes([0, 1, 2, i]) if i % 3 else None,
            ),
        )
    conn.execute("INSERT INTO members (handle, party) VALUES ('ghost', 'I')")
    conn.execute("DELETE FROM members WHERE handle = 'ghost'")  # its id must never be reused
    conn.executemany(
        'INSERT INTO "order items" VALUES (?,?,?,?)',
        [(1, 'a"b', "ünï", 1), (2, "it's", None, 1), (3, 'x,\n"y"', "名前", 2)],
    )
    conn.executemany("INSERT INTO notes (body) VALUES (?)", [("first",), (None,), ("",)])
    conn.commit()
    conn.close()
    return path


sha = services.file_sha


def run(db: Path, dsn: str, **kw: Any) -> Any:
    """The flow, and in every test, whatever it does: the source file is left byte for byte."""
    before = sha(db) if db.is_file() else None
    try:
        return migrate(str(db), PostgresDatabase(dsn=SecretStr(dsn)), **kw)
    finally:
        assert (sha(db) if db.is_file() else None) == before, f"{db} was modified"


def fingerprint(dsn: str) -> list[tuple[Any, ...]]:
    """Everything a failed migration must leave as it was: objects and their rows."""
    with psycopg.connect(dsn) as conn:
        objects = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " ORDER BY 1, 2"
        ).fetchall()
        rows = [
            (
                r[0],
                r[1],
                conn.execute(
                    f'SELECT md5(string_agg(t::text, \',\' ORDER BY t::text)) FROM "{r[0]}"."{r[1]}" t'
                ).fetchone(),
            )
            for r in objects
            if r[2] == "r"
        ]
    return [*objects, *rows]


def test_rich_schema_migrates_faithfully(tmp_path, target):
    db = build_rich(tmp_path / "rich.db")
    before = sha(db)
    report = run(db, target)
    assert report.passed and report.swapped
    assert report.validation.passed and [v.name for v in report.validation.views] == [
        "member_items"
    ]
    assert sha(db) == before
    with psycopg.connect(target, autocommit=True) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, udt_name FROM information_schema.columns WHERE table_name = 'members'"
            ).fetchall()
        )
        assert types == {
            "id": "int8",
            "handle": "citext",
            "party": "text",
            "active": "bool",
            "born": "date",
            "joined": "timestamp",
            "weight": "float8",
            "prefs": "jsonb",
            "avatar": "bytea",
        }
        # every double bit for bit, Infinity included
        got = dict(conn.execute("SELECT id, float8send(weight) FROM members").fetchall())
        assert [bytes(got[i]) for i in range(1, len(DOUBLES) + 1)] == [
            struct.pack(">d", d) for d in DOUBLES
        ]
        # naive datetimes are not shifted by any time zone; fractions kept
        assert (
            conn.execute("SELECT joined::text FROM members WHERE id = 1").fetchone()[0]
            == "2024-03-01 10:01:00.123451"
        )
        # AUTOINCREMENT: the deleted ghost's id (9) is never handed out again
        new_id = conn.execute(
            "INSERT INTO members (handle, party) VALUES ('new', 'D') RETURNING id"
        ).fetchone()[0]
        assert new_id == len(DOUBLES) + 2
        # DEFAULT CURRENT_TIMESTAMP is UTC like SQLite's, and DEFAULT 1 on a boolean is true
        row = conn.execute(
            "SELECT joined, active, (now() AT TIME ZONE 'UTC') - joined FROM members WHERE id = %s",
            (new_id,),
        ).fetchone()
        assert row[1] is True and abs(row[2].total_seconds()) < 60
        # NOCASE: uniqueness ignores case like SQLite did
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO members (handle, party) VALUES ('USER1', 'D')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO members (handle, party) VALUES ('z', 'X')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO \"order items\" VALUES (9, 'q', NULL, 999)")
        with pytest.raises(psycopg.errors.UniqueViolation):  # composite primary key
            conn.execute('INSERT INTO "order items" VALUES (1, \'a"b\', NULL, NULL)')
        indexes = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'members'"
            )
        }
        assert (
            "DESC" in indexes["members_recent"]
            and "WHERE (active = 1)" not in indexes["members_recent"]
        )
        assert "WHERE" in indexes["members_recent"] and "lower" in indexes["members_handle_lower"]
        assert conn.execute("SELECT prefs FROM members WHERE id = 1").fetchone()[0] == {
            "a": "dup",
            "b": 1,
        }
        assert conn.execute(
            'SELECT "naïve 名前", "we""ird" FROM "order items" WHERE "select" = 3'
        ).fetchone() == ("名前", 'x,\n"y"')  # CSV quoting of a NOT NULL text column, in C
        assert sorted(
            conn.execute("SELECT handle, items, big FROM member_items WHERE items > 0").fetchall()
        ) == [
            ("User1", 2, 1),
            ("User2", 1, 1),
        ]
        # planner statistics arrive with the tables: the service's first queries after
        # the cutover are planned on real figures, not on an empty table's guesses
        assert conn.execute(
            "SELECT relname, last_analyze IS NOT NULL AND last_autoanalyze IS NULL"
            " FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall() == [("members", True), ("notes", True), ("order items", True)]
        assert conn.execute(
            "SELECT count(*) > 0 FROM pg_stats WHERE tablename = 'members' AND attname = 'party'"
        ).fetchone() == (True,)


def test_dry_run_plans_without_touching_the_target(tmp_path, target):
    db = build_rich(tmp_path / "rich.db")
    before = fingerprint(target)
    report = run(db, target, dry_run=True)
    assert report.dry_run and not report.swapped and report.validation is None
    assert report.tables == {"members": 8, "order items": 3, "notes": 3}
    assert {f.code for f in report.findings} >= {
        "nocase",
        "identity",
        "naive-datetime",
        "without-rowid",
        "infinity",
    }
    assert fingerprint(target) == before


def test_rerun_replaces_an_earlier_migration_and_keeps_it_aside(tmp_path, target):
    db = build_rich(tmp_path / "rich.db")
    run(db, target)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO notes (body) VALUES ('later')")
    conn.commit()
    conn.close()
    assert run(db, target).passed
    with psycopg.connect(target) as pg:
        assert pg.execute("SELECT count(*) FROM public.notes").fetchone()[0] == 4
        assert pg.execute("SELECT count(*) FROM shipyard_previous.notes").fetchone()[0] == 3
        assert pg.execute("SELECT to_regnamespace('shipyard_stage')").fetchone()[0] is None


def _migrated(target: str) -> list[tuple[Any, ...]]:
    return fingerprint(target)


@pytest.fixture
def migrated_target(tmp_path, target) -> str:
    """A target that already holds an earlier migration: failures must leave it intact."""
    run(build_rich(tmp_path / "earlier.db"), target)
    return target


def _source(
    tmp_path: Path, sql: str, rows: list[tuple[Any, ...]] | None = None, name: str = "src.db"
) -> Path:
    path = tmp_path / name
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    if rows:
        cols = len(rows[0])
        table = sql.split("TABLE", 1)[1].split("(", 1)[0].strip()
        conn.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * cols)})", rows)
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    ("sql", "rows", "code", "policy"),
    [
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)",
            [(1, "ok"), (2, "nul\x00byte")],
            "nul-in-text",
            {"t.s": "null"},
        ),
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, s)",
            [(1, "ok"), (2, 7.5)],
            "mixed-storage",
            {"t.s": "text"},
        ),
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)",
            [(1, 5), (2, 1e21)],
            "int-overflow",
            {"t.n": "double"},
        ),
    ],
)
def test_refused_data_blocks_with_rowids_then_a_policy_decides(
    tmp_path, migrated_target, sql, rows, code, policy
):
    db = _source(tmp_path, sql, rows)
    before_src, before = sha(db), fingerprint(migrated_target)
    with pytest.raises(MigrationError, match=code) as info:
        run(db, migrated_target)
    assert f"t.{policy_col(policy)}:{code}" in str(info.value) and "(rowids 2)" in str(info.value)
    assert fingerprint(migrated_target) == before and sha(db) == before_src
    plan = run(db, migrated_target, dry_run=True, policies=policy)
    assert not plan.blocking
    report = run(db, migrated_target, policies=policy)
    assert report.passed
    with psycopg.connect(migrated_target) as pg:
        assert pg.execute("SELECT count(*) FROM t").fetchone()[0] == 2


def policy_col(policy: dict[str, str]) -> str:
    return next(iter(policy)).split(".", 1)[1]


def test_refusal_reports_table_column_rowid_and_count(tmp_path, target):
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)",
        [(1, "a"), (7, "x\x00"), (9, "y\x00")],
    )
    report = run(db, target, dry_run=True, accept=["t.s:nul-in-text"])
    finding = next(f for f in report.findings if f.code == "nul-in-text")
    assert (finding.table, finding.column, finding.count, finding.rowids) == ("t", "s", 2, (7, 9))


def test_fk_orphans_block_and_accepting_keeps_rows_with_a_not_valid_key(tmp_path, migrated_target):
    db = _source(
        tmp_path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id));"
        " INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1), (2, 42);",
    )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError, match=r"c:fk-orphans-0.*1 row\(s\) reference a missing p"):
        run(db, migrated_target)
    assert fingerprint(migrated_target) == before
    report = run(db, migrated_target, accept=["c:fk-orphans-0"])
    assert report.validation.fk_not_valid == ("c_fk0",)
    with psycopg.connect(migrated_target) as pg:
        assert pg.execute("SELECT count(*) FROM c").fetchone()[0] == 2
        assert (
            pg.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'c_fk0'").fetchone()[
                0
            ]
            is False
        )


def test_untranslatable_objects_block_until_accepted(tmp_path, migrated_target):
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, code TEXT CHECK (unicode(code) > 64));"
        " CREATE TRIGGER t_audit AFTER INSERT ON t BEGIN SELECT 1; END;"
        " INSERT INTO t VALUES (1, 'AB');",
    )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError) as info:
        run(db, migrated_target)
    assert "t:untranslatable" in str(info.value) and "t_audit:trigger" in str(info.value)
    assert fingerprint(migrated_target) == before
    assert run(db, migrated_target, accept=["t:untranslatable", "t_audit:trigger"]).passed


def test_invalid_utf8_is_named_and_the_target_unchanged(tmp_path, migrated_target):
    db = _source(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO t VALUES (1, 'fine'), (5, CAST(x'61ff62' AS TEXT))")
    conn.commit()
    conn.close()
    before = fingerprint(migrated_target)
    with pytest.raises(
        MigrationError,
        match=r"not valid UTF-8, which PostgreSQL refuses: t\.s: 1 row\(s\), rowids \[5\]",
    ):
        run(db, migrated_target)
    assert fingerprint(migrated_target) == before


@pytest.mark.parametrize(
    "kind", ["not-a-database", "corrupt", "null-in-not-null", "empty", "missing"]
)
def test_bad_sources_are_clear_typed_errors(tmp_path, migrated_target, kind):
    path = tmp_path / "bad.db"
    if kind == "not-a-database":
        path.write_bytes(b"hello, this is a text file\n" * 400)
    elif kind == "corrupt":
        build_rich(path)
        data = bytearray(path.read_bytes())
        data[4096 + 10 : 4096 + 400] = b"\xde\xad" * 195  # smash page 2
        path.write_bytes(bytes(data))
    elif kind == "null-in-not-null":  # a schema edited around its data: quick_check tells
        build_rich(path)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'body TEXT,', 'body TEXT NOT NULL,')"
            " WHERE name = 'notes'"
        )
        conn.commit()
        conn.close()
    elif kind == "empty":
        sqlite3.connect(path).close()
    before = fingerprint(migrated_target)
    expected = ConfigError if kind == "missing" else MigrationError
    with pytest.raises(expected) as info:
        run(path, migrated_target)
    assert {
        "not-a-database": "not a readable SQLite database",
        "corrupt": "corrupt",
        "null-in-not-null": "NULL value in notes.body",
        "empty": "no tables",
        "missing": "does not exist",
    }[kind] in str(info.value)
    assert fingerprint(migrated_target) == before


def test_locked_source_is_a_clear_error(tmp_path, migrated_target):
    db = build_rich(tmp_path / "locked.db")
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO notes (body) VALUES ('uncommitted')")
    try:
        with pytest.raises(MigrationError, match="lock"):
            run(db, migrated_target)
    finally:
        holder.rollback()
        holder.close()


_U = {s: s * 32 for s in "abc"}  # UUID hex, as SQLAlchemy and Django store it


@pytest.mark.parametrize(
    ("ddl", "rows", "keys"),
    [
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)", [(1, "a"), (2, "b"), (3, "c")], "2, 3"),
        (  # a uuid key: no rowid to compare by, so both sides are walked in key order
            "CREATE TABLE t (id CHAR(32) PRIMARY KEY, s TEXT)",
            [(_U[x], x) for x in "abc"],
            f"{_U['b']}, {_U['c']}",
        ),
        (
            "CREATE TABLE t (k TEXT, n INTEGER, s TEXT, PRIMARY KEY (k, n)) WITHOUT ROWID",
            [("x", 10, "a"), ("x", 9, "b"), ("y", 1, "c")],
            "(x, 9), (y, 1)",
        ),
    ],
)
def test_validation_failure_names_keys_and_leaves_the_target(
    tmp_path, migrated_target, ddl, rows, keys
):
    """A checksum mismatch stops the swap, and the differing primary keys are listed,
    whatever the key: a row that differs, and a row only one side has.

    The mismatch is real: an event trigger (as a DBA might have installed) on every
    table created in the staging schema upper-cases 'b' and drops the row of 'c'.
    """
    db = _source(tmp_path, ddl, rows)
    with psycopg.connect(migrated_target, autocommit=True) as pg:
        pg.execute(
            """
            CREATE FUNCTION meddle() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.s = 'c' THEN RETURN NULL; END IF;
              IF NEW.s = 'b' THEN NEW.s := upper(NEW.s); END IF;
              RETURN NEW;
            END $$;
            CREATE FUNCTION add_meddler() RETURNS event_trigger LANGUAGE plpgsql AS $$
            DECLARE r record;
            BEGIN
              FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE'
                AND schema_name = 'shipyard_stage' LOOP
                EXECUTE format('CREATE TRIGGER meddle BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION public.meddle()', r.object_identity);
              END LOOP;
            END $$;
            CREATE EVENT TRIGGER add_meddler ON ddl_command_end EXECUTE FUNCTION add_meddler();
            """
        )
    before = fingerprint(migrated_target)
    try:
        with pytest.raises(
            ValidationFailed,
            match=rf"validation failed for t \(differing keys: {re.escape(keys)}\)",
        ):
            run(db, migrated_target)
        assert fingerprint(migrated_target) == before
        with psycopg.connect(migrated_target) as pg:
            assert pg.execute("SELECT to_regnamespace('shipyard_stage')").fetchone()[0] is None
    finally:
        with psycopg.connect(migrated_target, autocommit=True) as pg:
            pg.execute("DROP EVENT TRIGGER add_meddler")


def test_the_dsn_password_never_leaks(tmp_path, postgres):
    """Trust auth ignores the password, so it travels everywhere a real one would."""
    import secrets as pysecrets

    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
    )

    secret = "pw-" + pysecrets.token_hex(8)
    base = postgres.dsn.rsplit("/", 1)[0].replace("postgres@", f"postgres:{secret}@")
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE secretive")
    block = PostgresDatabase(dsn=SecretStr(base + "/secretive"))
    db = build_rich(tmp_path / "rich.db")
    haystacks = [repr(block), str(block), str(block.model_dump()), block.model_dump_json()]
    ok = migrate.with_options(name="migrate")(str(db), block, return_state=True)
    dead = PostgresDatabase(dsn=SecretStr(base.rsplit(":", 1)[0] + ":1/secretive"))
    failed = migrate(str(db), dead, return_state=True)
    assert ok.is_completed() and failed.is_failed()
    with pytest.raises(MigrationError) as info:
        failed.result()
    haystacks.append(str(info.value))
    with get_client(sync_client=True) as client:
        ids = [ok.state_details.flow_run_id, failed.state_details.flow_run_id]
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        assert len(runs) == 2
        haystacks += [str(r.parameters) + str(r.state.message if r.state else "") for r in runs]
        for run_id in ids:
            haystacks += [
                entry.message
                for entry in client.read_logs(
                    log_filter=LogFilter(flow_run_id={"any_": [run_id]}), limit=200
                )
            ]
        artifacts = client.read_artifacts(  # these runs' own: the server holds every test's
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        assert artifacts
        haystacks += [str(a.data) + str(a.description) for a in artifacts]
    assert any("cannot connect to PostgreSQL" in h for h in haystacks)
    leaks = [h[:200] for h in haystacks if secret in h]
    assert not leaks, f"the password leaked into: {leaks}"


def test_command_line_json_and_exit_codes(tmp_path, target):
    """`python -m flows.migrate` as a user runs it: one JSON object, exit 0 only if it passed."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    db = build_rich(tmp_path / "rich.db")
    before = sha(db)

    def cli(*args: str) -> tuple[int, dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "flows.migrate", str(db), target, "--json", *args],
            cwd=root,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])

    code, plan = cli("--dry-run")
    assert code == 0 and plan["dry_run"] and plan["validation"] is None
    assert plan["tables"] == {"members": 8, "order items": 3, "notes": 3}
    code, report = cli()
    assert code == 0 and report["passed"] and report["swapped"]
    assert {t["name"] for t in report["validation"]["tables"]} == {
        "members",
        "order items",
        "notes",
    }
    assert set(report["phases"]) == {"plan", "copy", "keys", "validate", "swap"}
    assert sha(db) == before
    conn = sqlite3.connect(db)
    conn.execute("CREATE TRIGGER t AFTER INSERT ON notes BEGIN SELECT 1; END")
    conn.commit()
    conn.close()
    code, failed = cli()
    assert code == 1 and failed["passed"] is False and "t:trigger" in failed["error"]
    code, accepted = cli("--accept", "t:trigger")
    assert code == 0 and accepted["passed"]


TRIGGERS = """
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, item_id INTEGER,
    action TEXT NOT NULL, detail TEXT);
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL,
    qty INTEGER NOT NULL DEFAULT 0, pinned BOOLEAN NOT NULL DEFAULT 0, updated_at DATETIME);
CREATE TRIGGER items_touch AFTER UPDATE ON items
    WHEN NEW.price IS NOT OLD.price OR NEW.qty IS NOT OLD.qty
    BEGIN UPDATE items SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;
CREATE TRIGGER items_log AFTER INSERT ON items FOR EACH ROW
    BEGIN INSERT INTO audit (item_id, action, detail) VALUES (NEW.id, 'insert', NEW.name); END;
CREATE TRIGGER "items price" BEFORE INSERT ON items
    BEGIN SELECT RAISE(ABORT, 'price must be positive') WHERE NEW.price <= 0; END;
CREATE TRIGGER items_restock AFTER UPDATE OF qty ON items WHEN NEW.qty > OLD.qty
    BEGIN INSERT INTO audit (item_id, action, detail) VALUES (NEW.id, 'restock', 'qty ' || NEW.qty); END;
CREATE TRIGGER items_keep BEFORE DELETE ON items WHEN OLD.pinned = 1
    BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER items_gone AFTER DELETE ON items BEGIN
    DELETE FROM audit WHERE item_id = OLD.id AND action = 'insert';
    INSERT INTO audit (item_id, action) VALUES (OLD.id, 'delete');
END;
INSERT INTO items (id, name, price, qty, pinned) VALUES (1, 'kept', 1.5, 3, 1), (2, 'plain', 2.5, 1, 0);
"""

# The same writes in each engine's dialect (PostgreSQL's boolean is TRUE, not 1).
WRITES = [
    ("INSERT INTO items (id, name, price, qty) VALUES (10, 'new', 2.5, 1)",) * 2,
    ("UPDATE items SET qty = 7, price = 3.5 WHERE id = 10",) * 2,
    ("UPDATE items SET qty = 2 WHERE id = 10",) * 2,  # fewer: no restock row
    ("UPDATE items SET pinned = 1 WHERE id = 2", "UPDATE items SET pinned = TRUE WHERE id = 2"),
    ("UPDATE items SET pinned = 0 WHERE id = 2", "UPDATE items SET pinned = FALSE WHERE id = 2"),
    ("DELETE FROM items WHERE id IN (1, 2)",) * 2,  # 1 is pinned: its delete is skipped
]


def _state(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in rows]


def _migrated(db: Path, dsn: str, views: list[str]) -> None:
    """Migrate `db`: validation passed, with exactly `views` compared on both sides."""
    report = run(db, dsn)
    assert report.passed and not report.blocking, report
    assert sorted(v.name for v in report.validation.views) == sorted(views)


def _both(db: Path, dsn: str, query: str, views: list[str]) -> tuple[list[Any], list[Any]]:
    """Migrate `db` (as `_migrated`), then `query`'s rows from PostgreSQL and from
    SQLite, for the test to compare in its own way."""
    _migrated(db, dsn, views)
    with psycopg.connect(dsn) as pg:
        got = pg.execute(query).fetchall()
    return got, sqlite3.connect(db).execute(query).fetchall()


def _compare_behaviour(db: Path, dsn: str) -> None:
    """Apply WRITES to a copy of the source and to PostgreSQL; tables must end the same."""
    copy = db.with_name("behaviour.db")
    copy.write_bytes(db.read_bytes())
    lite = sqlite3.connect(copy)
    with psycopg.connect(dsn, autocommit=True) as pg:
        for sqlite_sql, pg_sql in WRITES:
            lite.execute(sqlite_sql)
            pg.execute(pg_sql)
        with pytest.raises(sqlite3.IntegrityError, match="price must be positive"):
            lite.execute("INSERT INTO items (id, name, price) VALUES (11, 'bad', -1)")
        with pytest.raises(psycopg.errors.RaiseException, match="price must be positive"):
            pg.execute("INSERT INTO items (id, name, price) VALUES (11, 'bad', -1)")
        lite.commit()
        items = "SELECT id, name, price, qty, pinned, updated_at IS NOT NULL FROM items ORDER BY id"
        audit = "SELECT id, item_id, action, detail FROM audit ORDER BY id"
        for q in (items, audit):
            assert _state(pg.execute(q).fetchall()) == _state(lite.execute(q).fetchall()), q
        assert pg.execute("SELECT count(*) FROM audit WHERE action = 'restock'").fetchone() == (1,)
    lite.close()


def test_triggers_are_translated_and_behave_as_in_sqlite(tmp_path, target):
    """Six triggers become PL/pgSQL and, after the swap, turn the same writes into the same
    rows as SQLite: the self-touching AFTER UPDATE runs once (SQLite never recurses),
    UPDATE OF and WHEN filter, RAISE(ABORT) refuses, RAISE(IGNORE) skips the delete.
    A re-run moves the first run's functions aside instead of stacking triggers."""
    db = _source(tmp_path, TRIGGERS)
    report = run(db, target)
    assert report.passed and not report.blocking
    translated = sorted(f.table for f in report.findings if f.code == "trigger-translated")
    assert translated == sorted(
        ["items_touch", "items_log", "items price", "items_restock", "items_keep", "items_gone"]
    )
    with psycopg.connect(target) as pg:  # the load fired nothing: audit holds SQLite's rows
        assert pg.execute("SELECT action FROM audit ORDER BY id").fetchall() == [("insert",)] * 2
    assert run(db, target).passed
    with psycopg.connect(target) as pg:
        where = pg.execute(
            "SELECT n.nspname, count(*) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT g.tgisinternal"
            " AND g.tgenabled = 'O' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert where == [("public", 6), ("shipyard_previous", 6)]
        functions = pg.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.prorettype = 'trigger'::regtype"
        ).fetchone()
        assert functions == (6,)
    _compare_behaviour(db, target)


def test_the_cutover_catch_up_fires_no_trigger(tmp_path, target):
    """Writes the old version accepted during the bulk copy reach staging by the catch-up;
    the triggers already fired for them in SQLite, so staging's stay disabled until the
    swap. Enabled, the catch-up of items (after audit's, in table order) would add and
    remove audit rows, and validation would refuse the cutover."""
    db = _source(tmp_path, TRIGGERS)

    def freeze() -> None:
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO items (id, name, price) VALUES (20, 'late', 4.0)")
        conn.execute("UPDATE items SET qty = 9 WHERE id = 2")
        conn.execute("DELETE FROM items WHERE id = 2")
        conn.commit()
        conn.close()

    cut = cutover_migration(
        str(db), PostgresDatabase(dsn=SecretStr(target)), freeze, lambda: None, drain_s=0
    )
    assert cut.validation.passed and set(cut.rows_caught_up) == {"items", "audit"}
    lite = sqlite3.connect(db)
    with psycopg.connect(target) as pg:
        for q in (
            "SELECT id, name, price, qty, pinned, updated_at IS NOT NULL FROM items ORDER BY id",
            "SELECT id, item_id, action, detail FROM audit ORDER BY id",
        ):
            assert _state(pg.execute(q).fetchall()) == _state(lite.execute(q).fetchall()), q
        enabled = pg.execute("SELECT count(*) FROM pg_trigger WHERE tgenabled = 'O'").fetchone()
        assert enabled == (6,)  # and after the swap, they fire
    lite.close()


def test_untranslatable_trigger_statements_stay_blocking(tmp_path, migrated_target):
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
        " CREATE TRIGGER t_json AFTER INSERT ON t BEGIN"
        "  UPDATE t SET v = json_extract(NEW.v, '$.a') WHERE id = NEW.id; END;",
    )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError, match=r"t_json:trigger.*json_extract"):
        run(db, migrated_target)
    assert fingerprint(migrated_target) == before


def test_a_trigger_postgresql_would_reject_is_caught_before_the_swap(tmp_path, migrated_target):
    """PL/pgSQL checks only syntax when a function is created: the statements are also
    type-checked against staging (EXPLAIN), or the first write after a cutover would fail."""
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, price REAL);"
        " INSERT INTO t VALUES (1, 'a', 1.5);"  # before the trigger: price holds only reals
        " CREATE TRIGGER t_bad AFTER INSERT ON t BEGIN"
        "  UPDATE t SET price = NEW.name WHERE id = NEW.id; END;",
    )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError, match=r"trigger 't_bad' would fail in PostgreSQL") as info:
        run(db, migrated_target)
    assert "double precision" in str(info.value) and "t_bad:trigger" in (info.value.hint or "")
    assert fingerprint(migrated_target) == before
    report = run(db, migrated_target, accept=["t_bad:trigger"])
    assert report.passed
    with psycopg.connect(migrated_target) as pg:
        assert pg.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone() == (
            0,
        )


def test_defaults_of_now_keep_sqlite_text_layouts(tmp_path, target):
    """date/time/strftime of 'now' in DEFAULTs become to_char() of the same UTC instant:
    a row the application inserts after the cutover reads like one SQLite wrote."""
    import re
    import time
    from datetime import UTC, datetime

    db = _source(
        tmp_path,
        "CREATE TABLE stamps (id INTEGER PRIMARY KEY,"
        " iso TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
        " day TEXT DEFAULT (date('now')),"
        " epoch INTEGER DEFAULT (strftime('%s', 'now')),"
        " at DATETIME DEFAULT (datetime('now')), note TEXT);"
        " INSERT INTO stamps (note) VALUES ('sqlite');",
    )
    report = run(db, target)
    assert report.passed and not report.blocking
    with psycopg.connect(target, autocommit=True) as pg:
        pg.execute("INSERT INTO stamps (note) VALUES ('postgres')")
        rows = pg.execute("SELECT iso, day, epoch, at, note FROM stamps ORDER BY id").fetchall()
    lite = sqlite3.connect(db).execute("SELECT iso, day, epoch, at FROM stamps").fetchone()
    assert rows[0][:3] == lite[:3]  # the migrated row is SQLite's, unchanged
    iso, day, epoch, at, note = rows[1]
    assert note == "postgres"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso), iso
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", day) and iso.startswith(day)
    assert isinstance(epoch, int) and abs(epoch - time.time()) < 120
    assert abs((at - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 120
    # one instant, truncated to the second as SQLite does (a cast to timestamp(0) rounds)
    assert at == datetime.fromisoformat(iso[:-1]).replace(microsecond=0)


def test_window_functions_and_sqlite_null_order_in_views(tmp_path, target):
    """Window functions translate as they are, and every ORDER BY sorts NULLs where
    SQLite does (first ascending, last descending: PostgreSQL's defaults are the
    opposite). The view check runs both sides over data with NULLs, so a wrong order
    would change row_number() and lag() and fail the migration."""
    db = _source(
        tmp_path,
        "CREATE TABLE scores (id INTEGER PRIMARY KEY, team TEXT, pts INTEGER);"
        " INSERT INTO scores (team, pts) VALUES ('a', 3), ('a', NULL), ('a', 5), ('b', NULL),"
        " ('b', 1), ('b', 4), (NULL, 2), ('a', 3);"
        " CREATE VIEW ranked AS SELECT id, team,"
        "  row_number() OVER (PARTITION BY team ORDER BY pts DESC, id) AS place,"
        "  lag(pts, 1, -1) OVER (ORDER BY pts, id) AS prev,"
        "  sum(pts) OVER (PARTITION BY team ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)"
        "   AS running,"
        "  count(*) FILTER (WHERE pts > 2) OVER (PARTITION BY team) AS big,"
        "  (SELECT s.id FROM scores s WHERE s.team = scores.team ORDER BY s.pts LIMIT 1) AS low"
        " FROM scores;",
    )
    got, want = _both(db, target, "SELECT * FROM ranked ORDER BY id", ["ranked"])
    assert _state(got) == _state(want)


def test_text_keeps_sqlite_binary_order_in_a_linguistic_database(postgres, tmp_path):
    """Text columns are created COLLATE "C": in a database whose default collation is
    linguistic (en-US, as many managed PostgreSQL instances are), ORDER BY, < and
    min() still compare bytes as SQLite's BINARY did, and the view check agrees."""
    name = f"icu{next(_ids)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        )
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/" + name
    words = ["b", "B", "a", "A", "_x", "Zed", "zed", "éclair", "eclair"]
    db = _source(
        tmp_path,
        "CREATE TABLE w (id INTEGER PRIMARY KEY, word TEXT NOT NULL);"
        " CREATE VIEW w_order AS SELECT word, row_number() OVER (ORDER BY word) AS n,"
        "  (SELECT min(word) FROM w) AS least, word < 'a' AS below FROM w;",
        [(i, x) for i, x in enumerate(words, start=1)],
    )
    assert run(db, dsn).passed
    lite = sqlite3.connect(db)
    with psycopg.connect(dsn) as pg:
        assert pg.execute("SELECT datcollate IS NOT NULL FROM pg_database").fetchone()
        got = pg.execute("SELECT word FROM w ORDER BY word").fetchall()
        assert got == lite.execute("SELECT word FROM w ORDER BY word").fetchall()
        assert pg.execute("SELECT 'B' < 'a'").fetchone() == (False,)  # the database's own order


def test_objects_outside_the_migration_that_hold_its_tables_are_refused(tmp_path, migrated_target):
    """A view or a foreign key created in PostgreSQL on a migrated table binds to that
    table: after a re-migration it would read (or point at) the copy moved aside, and
    the next cleanup would drop it. The re-run names them and changes nothing."""
    with psycopg.connect(migrated_target, autocommit=True) as pg:
        pg.execute("CREATE TABLE extra (id int PRIMARY KEY, member bigint REFERENCES members(id))")
        pg.execute("CREATE VIEW my_notes AS SELECT body FROM notes")
    before = fingerprint(migrated_target)
    again = build_rich(tmp_path / "again.db")
    with pytest.raises(MigrationError) as info:
        run(again, migrated_target)
    assert "2 object(s) outside the migration" in str(info.value)
    assert "foreign key extra_member_fkey on extra" in str(info.value)
    assert "view my_notes" in str(info.value)
    assert fingerprint(migrated_target) == before
    with psycopg.connect(migrated_target, autocommit=True) as pg:
        pg.execute("DROP VIEW my_notes")
        pg.execute("ALTER TABLE extra DROP CONSTRAINT extra_member_fkey")
    assert run(again, migrated_target).passed


def test_views_format_and_shift_stored_datetimes_as_sqlite(tmp_path, target):
    """Reports by month, day or weekday read a DATETIME column through SQLite's date
    functions. The column becomes a timestamp; the functions become to_char() of it,
    shifted by the exact modifiers, and a comparison with the column compares
    instants. Data on both sides of 'now - 30 days' makes the window count."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    stamps = [now - timedelta(days=d, hours=h) for d in (3, 10, 45, 400) for h in (0, 5, 13)]
    db = _source(
        tmp_path,
        "CREATE TABLE events (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, kind TEXT);"
        + "".join(
            f" INSERT INTO events (at, kind) VALUES ('{s:%Y-%m-%d %H:%M:%S}', 'k{i % 3}');"
            for i, s in enumerate(stamps)
        )
        + " INSERT INTO events (at, kind) VALUES ('2024-02-29 23:59:58.250', 'leap');"
        " CREATE VIEW monthly AS SELECT strftime('%Y-%m', at) AS month, count(*) AS n"
        "  FROM events GROUP BY strftime('%Y-%m', at);"
        " CREATE VIEW shaped AS SELECT e.id, date(e.at) AS day, time(e.at) AS t,"
        "  datetime(e.at, '+1 day', 'start of day') AS next_day,"
        "  strftime('%s', e.at) AS epoch, strftime('%w', e.at) AS dow,"
        "  strftime('%H:%M:%f', e.at, '-90 minutes') AS shifted,"
        "  date(e.at, 'start of year') AS new_year"
        "  FROM events e;"
        " CREATE VIEW recent AS SELECT id, kind FROM events"
        "  WHERE at >= datetime('now', '-30 days');",
    )
    _migrated(db, target, ["monthly", "recent", "shaped"])
    lite = sqlite3.connect(db)
    with psycopg.connect(target) as pg:
        assert pg.execute(
            "SELECT data_type FROM information_schema.columns WHERE column_name = 'at'"
        ).fetchone() == ("timestamp without time zone",)
        for view, order in (("monthly", "month"), ("shaped", "id"), ("recent", "id")):
            got = pg.execute(f"SELECT * FROM {view} ORDER BY {order}").fetchall()
            want = lite.execute(f"SELECT * FROM {view} ORDER BY {order}").fetchall()
            assert _state(got) == _state(want), view
        assert len(pg.execute("SELECT * FROM recent").fetchall()) == 6


def test_views_read_json_columns_through_json_extract(tmp_path, target):
    """json_extract() of a column that became jsonb returns what SQLite returns: the
    string, 1/0 for booleans, NULL for null or a missing key, the number (as text,
    numeric when compared with a number). Both sides are queried and compared."""
    from tasks.core.migration import loose_value

    docs = [
        {"kind": "vote", "n": 7, "ok": True, "tags": ["a", "b"], "odd key": "x'y"},
        {"kind": "view", "n": 2.5, "ok": False, "tags": ["c"], "odd key": None},
        {"kind": "vote", "n": 12, "tags": [], "nested": {"deep": [1, {"v": "z"}]}},
        {"kind": "search"},
    ]
    db = _source(
        tmp_path,
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, payload JSON NOT NULL);"
        + "".join(
            " INSERT INTO docs (payload) VALUES ('{}');".format(json.dumps(d).replace("'", "''"))
            for d in docs
        )
        + " CREATE VIEW fields AS SELECT id, json_extract(payload, '$.kind') AS kind,"
        "  json_extract(payload, '$.n') AS n, json_extract(payload, '$.ok') AS ok,"
        "  json_extract(d.payload, '$.tags[1]') AS second_tag,"
        "  json_extract(payload, '$.\"odd key\"') AS odd,"
        "  json_extract(payload, '$.nested.deep[1].v') AS deep,"
        "  payload ->> 'kind' AS kind_again, d.payload ->> '$.tags[0]' AS first_tag"
        "  FROM docs d;"
        " CREATE VIEW big AS SELECT json_extract(payload, '$.kind') AS kind, count(*) AS n"
        "  FROM docs WHERE json_extract(payload, '$.n') > 5 GROUP BY 1;"
        " CREATE VIEW shapes AS SELECT id, json_array_length(payload, '$.tags') AS tags,"
        "  json_array_length(payload) AS top, json_type(payload, '$.n') AS n_type,"
        "  json_type(payload, '$.ok') AS ok_type, json_type(payload, '$.kind') AS kind_type"
        "  FROM docs ORDER BY id LIMIT 1, 2;",
    )
    _migrated(db, target, ["big", "fields", "shapes"])
    lite = sqlite3.connect(db)
    with psycopg.connect(target) as pg:
        for view in ("fields", "big", "shapes"):
            got = pg.execute(f"SELECT * FROM {view} ORDER BY 1").fetchall()
            want = lite.execute(f"SELECT * FROM {view} ORDER BY 1").fetchall()
            assert [tuple(map(loose_value, r)) for r in got] == [
                tuple(map(loose_value, r)) for r in want
            ], view
        assert pg.execute("SELECT * FROM big").fetchall() == [("vote", 2)]
        assert pg.execute("SELECT * FROM shapes ORDER BY id").fetchall() == [
            (2, 1, 0, "real", "false", "text"),
            (3, 0, 0, "integer", None, "text"),
        ]


def test_views_selecting_json_datetime_time_and_uuid_columns_pass_the_check(tmp_path, target):
    """SQLite returns such columns as the text it holds; PostgreSQL returns jsonb (keys
    reordered, spaced, 2.50 kept), timestamps, times and uuids. A view that only
    selects them, or a JSON object out of them, must not fail the migration."""
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, doc JSON NOT NULL, at DATETIME NOT NULL,"
        " opens TIME, ref CHAR(36) NOT NULL, flag BOOLEAN NOT NULL);"
        """ INSERT INTO t VALUES (1, '{"zeta":1,"a":[1,2.50,{"y":null,"b":true}]}',"""
        " '2024-01-02T03:04:05.123', '09:30', '0f8fad5b-d9cb-469f-a165-70867728950e', 1);"
        """ INSERT INTO t VALUES (2, '{"only": "\u00e9t\u00e9", "n": -0}',"""
        " '2024-02-29 23:59:59', '18:45:10.5', 'a2f3e1c4-0000-4000-8000-00000000beef', 0);"
        " CREATE VIEW everything AS SELECT * FROM t;"
        " CREATE VIEW parts AS SELECT id, json_extract(doc, '$.a') AS a,"
        "  json_extract(doc, '$.a[2]') AS inner_obj, date(at) AS day FROM t;",
    )
    report = run(db, target)
    assert report.passed and not report.blocking, report
    assert {v.name: v.ok for v in report.validation.views} == {"everything": True, "parts": True}
    with psycopg.connect(target) as pg:  # the columns did become typed in PostgreSQL
        types = dict(
            pg.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 't'"
            ).fetchall()
        )
    assert types == {
        "id": "bigint",
        "doc": "jsonb",
        "at": "timestamp without time zone",
        "opens": "time without time zone",
        "ref": "uuid",
        "flag": "boolean",
    }


def test_views_reading_a_datetime_as_text_see_the_text_sqlite_held(tmp_path, target):
    """substr(), || and LIKE on DATETIME columns that became timestamps read, in
    PostgreSQL, the text layout each column held in SQLite (learnt by the scan): a
    space and a fraction only when it is not zero (str(datetime), Django), or a 'T'
    and a fraction always. The views match on both sides; policy 'text' still keeps
    such a column text, the view reading it as it is."""
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, iso DATETIME);"
        " INSERT INTO t (at, iso) VALUES ('2024-01-02 03:04:05', '2024-01-02T03:04:05.000000'),"
        " ('2024-03-04 05:06:07.500000', '2024-03-04T05:06:07.500000');"
        " CREATE VIEW days AS SELECT substr(at, 1, 7) AS month, count(*) AS n FROM t GROUP BY 1;"
        " CREATE VIEW texts AS SELECT id, at || '' AS a, 'at ' || iso AS b,"
        " iso LIKE '%T05%' AS t5 FROM t;",
    )
    report = run(db, target)
    assert report.passed, report.validation
    assert [(v.name, v.ok) for v in report.validation.views] == [("days", True), ("texts", True)]
    with psycopg.connect(target) as pg:
        assert pg.execute("SELECT * FROM days ORDER BY 1").fetchall() == [
            ("2024-01", 1),
            ("2024-03", 1),
        ]
        assert pg.execute("SELECT a, b, t5 FROM texts ORDER BY id").fetchall() == [
            ("2024-01-02 03:04:05", "at 2024-01-02T03:04:05.000000", False),
            ("2024-03-04 05:06:07.500000", "at 2024-03-04T05:06:07.500000", True),
        ]
        assert pg.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 't' AND column_name = 'at'"
        ).fetchone() == ("timestamp without time zone",)
    kept = run(db, target, policies={"t.at": "text"})
    assert kept.passed and all(v.ok for v in kept.validation.views)


def test_a_remigration_keeps_the_privileges_roles_had(tmp_path, migrated_target):
    """The application often connects as its own role: the tables that replace the
    old ones get the privileges the old ones gave (table, view and column grants, an
    owner other than the migrating role), and a new table what the schema's default
    privileges give. Row-level security or a trigger the migration did not make
    would be lost: refused with their names, the target unchanged."""
    role = f"app{next(_ids)}"
    with psycopg.connect(migrated_target, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN")
        pg.execute(f"GRANT SELECT, INSERT ON members TO {role}")
        pg.execute(f'ALTER TABLE "order items" OWNER TO {role}')
        pg.execute(f"GRANT SELECT ON member_items TO {role}")
        pg.execute(f"GRANT SELECT (body), UPDATE (body) ON notes TO {role}")
        pg.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}")
    again = build_rich(tmp_path / "again.db")
    with sqlite3.connect(again) as conn:
        conn.execute("CREATE TABLE added (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO added (v) VALUES ('new')")
    conn.close()
    assert run(again, migrated_target).passed
    as_app = migrated_target.replace("//postgres@", f"//{role}@")
    with psycopg.connect(as_app, autocommit=True) as app:
        assert app.execute("SELECT count(*) FROM members").fetchone() == (len(DOUBLES),)
        app.execute("INSERT INTO members (handle, party) VALUES ('after', 'D')")
        assert app.execute("SELECT count(*) FROM member_items").fetchone()[0] > 0
        assert app.execute("SELECT v FROM added").fetchall() == [("new",)]
        app.execute("UPDATE notes SET body = upper(body)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT id FROM notes")  # only body was granted
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM members")
        app.execute('DELETE FROM "order items"')  # it owned the old table
    with psycopg.connect(migrated_target, autocommit=True) as pg:
        pg.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
        pg.execute(
            "CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'"
        )
        pg.execute(
            "CREATE TRIGGER audit BEFORE INSERT ON members FOR EACH ROW EXECUTE FUNCTION audit_fn()"
        )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError) as info:
        run(again, migrated_target)
    assert "row-level security on notes" in str(info.value)
    assert "trigger audit on members" in str(info.value)
    assert fingerprint(migrated_target) == before


def test_triggers_compute_dates_from_new_rows_as_sqlite(tmp_path, target):
    """A trigger that derives dates from the row (NEW.starts + 8 hours, its day) does
    the same in PostgreSQL, where those columns became timestamps; its WHEN compares
    instants. The same inserts in both engines leave the same rows."""
    from tasks.core.migration import loose_value

    db = _source(
        tmp_path,
        "CREATE TABLE shifts (id INTEGER PRIMARY KEY, starts DATETIME NOT NULL, ends DATETIME,"
        " day TEXT, late INTEGER NOT NULL DEFAULT 0);"
        " CREATE TRIGGER shifts_fill AFTER INSERT ON shifts BEGIN"
        "  UPDATE shifts SET ends = datetime(NEW.starts, '+8 hours'),"
        "   day = strftime('%Y-%m-%d', NEW.starts) WHERE id = NEW.id; END;"
        " CREATE TRIGGER shifts_late AFTER INSERT ON shifts"
        "  WHEN NEW.starts > datetime(NEW.starts, 'start of day', '+20 hours') BEGIN"
        "  UPDATE shifts SET late = 1 WHERE id = NEW.id; END;"
        " INSERT INTO shifts (starts) VALUES ('2024-02-29 18:30:00');",
    )
    report = run(db, target)
    assert report.passed and not report.blocking
    copy = db.with_name("behaviour.db")
    copy.write_bytes(db.read_bytes())
    lite = sqlite3.connect(copy)
    inserts = ["2024-12-31 22:15:00", "2025-03-01 06:00:00"]
    with psycopg.connect(target, autocommit=True) as pg:
        for at in inserts:
            lite.execute("INSERT INTO shifts (starts) VALUES (?)", (at,))
            pg.execute("INSERT INTO shifts (starts) VALUES (%s)", (at,))
        lite.commit()
        q = "SELECT id, starts, ends, day, late FROM shifts ORDER BY id"
        got = [tuple(map(loose_value, r)) for r in pg.execute(q).fetchall()]
    want = [tuple(map(loose_value, r)) for r in lite.execute(q).fetchall()]
    assert got == want
    assert [r[3:] for r in want] == [
        ("2024-02-29", "0"),
        ("2024-12-31", "1"),
        ("2025-03-01", "0"),
    ]
    assert want[1][2] == "2025-01-01 06:15:00.000000"  # SQLite's text, read as a timestamp


def test_order_by_collate_nocase_sorts_as_sqlite(tmp_path, target):
    """ORDER BY col COLLATE NOCASE folds ASCII letters only (É and é stay apart, '_'
    sorts before 'a'), in SQLite and, through lower() on a "C" column, in PostgreSQL;
    row_number() makes the order part of the view's result, which both sides compare."""
    db = _source(
        tmp_path,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        " INSERT INTO people (name) VALUES ('b'), ('B2'), ('a'), ('É'), ('é'), ('_x'), ('A1'),"
        " ('Z'), ('z0');"
        " CREATE VIEW ranked AS SELECT name,"
        "  row_number() OVER (ORDER BY name COLLATE NOCASE DESC, id) AS place FROM people;",
    )
    got, want = _both(db, target, "SELECT name FROM ranked ORDER BY place", ["ranked"])
    assert got == want
    assert [r[0] for r in want][:3] == ["é", "É", "z0"]


def test_glob_checks_and_views_match_as_in_sqlite(tmp_path, target):
    """GLOB becomes an anchored regex, case-sensitive even on a NOCASE column: the
    CHECK refuses what SQLite refused, and views select the same rows. total() is
    sum() that gives 0 over no rows."""
    db = _source(
        tmp_path,
        "CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT NOT NULL"
        "  CHECK (code GLOB '[A-Z]*' AND code NOT GLOB '*[^A-Z0-9]*'),"
        "  label TEXT COLLATE NOCASE, note TEXT);"
        " INSERT INTO codes (code, label, note) VALUES ('AB1', 'Alpha', 'a.c (x)'),"
        "  ('Z', 'alpha', 'zzz'), ('Q9', 'ALPHA*', 'a?c'), ('X', NULL, 'line\nbreak');"
        " CREATE VIEW picked AS SELECT id FROM codes WHERE label GLOB 'A*'"
        "  OR note GLOB '*a?c*' OR note GLOB '*\n*';"
        " CREATE VIEW not_picked AS SELECT id FROM codes WHERE note NOT GLOB 'a[.?]c*';"
        " CREATE VIEW totals AS SELECT total(id) AS none, total(id > 1) AS big FROM codes"
        "  WHERE id < 0 UNION ALL SELECT total(id), total(id > 1) FROM codes;",
    )
    report = run(db, target)
    assert report.passed and not report.blocking, report
    lite = sqlite3.connect(db)
    with psycopg.connect(target, autocommit=True) as pg:
        for view in ("picked", "not_picked"):
            q = f"SELECT id FROM {view} ORDER BY id"
            assert pg.execute(q).fetchall() == lite.execute(q).fetchall(), view
        for bad in ("ab", "A-B", "1A"):
            with pytest.raises(sqlite3.IntegrityError):
                lite.execute("INSERT INTO codes (code) VALUES (?)", (bad,))
            with pytest.raises(psycopg.errors.CheckViolation):
                pg.execute("INSERT INTO codes (code) VALUES (%s)", (bad,))
        pg.execute("INSERT INTO codes (code) VALUES ('OK2')")
    assert [r[0] for r in lite.execute("SELECT id FROM picked ORDER BY id")] == [1, 3, 4]
    with psycopg.connect(target) as pg:  # total() is 0, not NULL, over no rows
        assert pg.execute("SELECT * FROM totals").fetchall()[0] == (0, 0)


def test_like_backslashes_and_negative_substr_as_in_sqlite(tmp_path, target):
    """A backslash in a LIKE pattern is a plain character to SQLite (PostgreSQL's
    default escape), and substr() with a negative start counts from the end."""
    db = _source(
        tmp_path,
        "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL);"
        " INSERT INTO files (path) VALUES ('C:\\tmp\\a.txt'), ('C:%b.txt'), ('/home/c.md');"
        " CREATE VIEW windows AS SELECT id, substr(path, -3) AS ext FROM files"
        "  WHERE path LIKE 'c:\\%';",
    )
    got, want = _both(db, target, "SELECT * FROM windows ORDER BY id", ["windows"])
    assert got == want
    assert want == [(1, "txt")]


def test_division_by_zero_is_null_as_in_sqlite(tmp_path, target):
    """SQLite divides by zero to NULL where PostgreSQL raises: a view over rows with
    zero divisors gives the same NULLs on both sides instead of failing."""
    db = _source(
        tmp_path,
        "CREATE TABLE nums (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b INTEGER NOT NULL);"
        " INSERT INTO nums (a, b) VALUES (7, 2), (5, 0), (-9, 4), (3, 0);"
        " CREATE VIEW ratios AS SELECT id, a / b AS q, a * 1.0 / b AS r,"
        "  sum(a) OVER () / (SELECT count(*) FROM nums WHERE b > 9) AS none FROM nums;",
    )
    got, want = _both(db, target, "SELECT * FROM ratios ORDER BY id", ["ratios"])
    assert [(i, q, None if r is None else float(r), n) for i, q, r, n in got] == want
    assert want[1] == (2, None, None, None) and want[2][1] == -2  # truncated, both sides


def test_a_view_that_fails_in_postgresql_is_a_clear_error(tmp_path, migrated_target):
    """SQLite turns 'abc' into 0 in arithmetic; PostgreSQL refuses the cast. The view
    translates, but querying it over the rows fails: a MigrationError naming the view,
    and the target as it was."""
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT);"
        " INSERT INTO t (s) VALUES ('12'), ('abc');"
        " CREATE VIEW nums AS SELECT id, CAST(s AS INTEGER) + 1 AS n FROM t;",
    )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError, match="view 'nums' fails in PostgreSQL") as info:
        run(db, migrated_target)
    assert "invalid input syntax" in str(info.value)
    assert fingerprint(migrated_target) == before


def test_a_cutover_whose_bulk_copy_fails_validation_never_freezes_writes(tmp_path, migrated_target):
    """The bulk copy is validated while the old version still takes writes: a copy that
    cannot pass (here a view PostgreSQL cannot run over the rows) fails the release
    before any write is refused, and the target stays as it was."""
    db = _source(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT);"
        " INSERT INTO t (s) VALUES ('12'), ('abc');"
        " CREATE VIEW nums AS SELECT id, CAST(s AS INTEGER) + 1 AS n FROM t;",
    )
    before = fingerprint(migrated_target)
    calls: list[str] = []
    with pytest.raises(MigrationError, match="view 'nums' fails in PostgreSQL"):
        cutover_migration(
            str(db),
            PostgresDatabase(dsn=SecretStr(migrated_target)),
            lambda: calls.append("freeze"),
            lambda: calls.append("thaw"),
            drain_s=0,
        )
    assert calls == []
    assert fingerprint(migrated_target) == before


def test_iif_round_julianday_in_views_as_in_sqlite(tmp_path, target):
    """iif() is a CASE; round() rounds halves away from zero as SQLite does (float8's
    round() would go to even); julianday() counts from noon as SQLite does; an
    integer column read with 'unixepoch' is seconds since 1970 in UTC."""
    from tasks.core.migration import loose_value

    db = _source(
        tmp_path,
        "CREATE TABLE m (id INTEGER PRIMARY KEY, price REAL NOT NULL, qty INTEGER NOT NULL,"
        " at DATETIME NOT NULL, ts INTEGER);"
        " INSERT INTO m (price, qty, at, ts) VALUES (2.5, 0, '2024-02-29 18:00:00', 0),"
        " (-2.5, 3, '2000-01-01 12:00:00', 1709229600), (1.005, 1, '2024-03-01', NULL),"
        " (0.125, 2, '1999-12-31 23:59:59.500', -86401);"
        " CREATE VIEW shown AS SELECT id, iif(qty, 'some', 'none') AS stock,"
        "  iif(price > 0, round(price), round(price, 1)) AS r, round(price, 2) AS r2,"
        "  julianday(at) AS jd, julianday(at) - julianday(at, 'start of day') AS frac,"
        "  unixepoch(at) AS epoch, datetime(ts, 'unixepoch') AS stamp,"
        "  date(ts, 'unixepoch', 'start of month', '+1 day') AS month FROM m;",
    )
    got, want = _both(db, target, "SELECT * FROM shown ORDER BY id", ["shown"])
    assert [tuple(map(loose_value, r)) for r in got] == [tuple(map(loose_value, r)) for r in want]
    assert want[0][1:3] == ("none", 3.0) and want[1][2] == -2.5 and want[1][4] == 2451545.0
    assert want[3][-2:] == ("1969-12-30 23:59:59", "1969-12-02")


DJANGO = """
CREATE TABLE "auth_user" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "username" varchar(150) NOT NULL UNIQUE, "is_staff" bool NOT NULL,
  "date_joined" datetime NOT NULL);
CREATE TABLE "shop_product" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "data" text NOT NULL CHECK ((JSON_VALID("data") OR "data" IS NULL)),
  "owner_id" integer NULL REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED,
  "maker_id" integer NULL REFERENCES "auth_user" ("id"));
CREATE INDEX "shop_product_owner_id_1a2b3c4d" ON "shop_product" ("owner_id");
INSERT INTO auth_user (username, is_staff, date_joined) VALUES
  ('ann', 1, '2024-01-01 10:00:00.123456'), ('bob', 0, '2024-02-01 00:00:00');
INSERT INTO shop_product (data, owner_id, maker_id) VALUES
  ('{"color": "red", "tags": ["a"]}', 1, 2), ('[1, 2.5, null]', 2, NULL), ('{}', NULL, 1);
CREATE VIEW products_json AS SELECT id, json_valid(data) AS ok, data ->> 'color' AS color
  FROM shop_product;
"""


def test_a_django_schema_keeps_json_fields_and_deferred_keys(tmp_path, target):
    """Django's SQLite schema: a JSONField is text held to JSON by a CHECK (it becomes
    jsonb, as Django has it on PostgreSQL, and the CHECK translates), and its foreign
    keys are DEFERRABLE INITIALLY DEFERRED (checked at commit: PRAGMA
    foreign_key_list does not say so; the DDL does)."""
    db = _source(tmp_path, DJANGO)
    digest = sha(db)
    got, want = _both(db, target, "SELECT * FROM products_json ORDER BY id", ["products_json"])
    assert got == [(1, True, "red"), (2, True, None), (3, True, None)]
    assert want == [(1, 1, "red"), (2, 1, None), (3, 1, None)]
    assert sha(db) == digest
    with psycopg.connect(target) as pg:
        types = dict(
            pg.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'shop_product'"
            ).fetchall()
        )
        assert types["data"] == "jsonb"
        deferred = dict(
            pg.execute(
                "SELECT a.attname, c.condeferred FROM pg_constraint c JOIN pg_attribute a"
                " ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
                " WHERE c.contype = 'f' AND c.conrelid = 'shop_product'::regclass"
            ).fetchall()
        )
        assert deferred == {"owner_id": True, "maker_id": False}
        # a product may name its owner before the owner exists, within a transaction
        pg.execute("INSERT INTO shop_product (data, owner_id) VALUES ('{}', 3)")
        pg.execute(
            "INSERT INTO auth_user (id, username, is_staff, date_joined)"
            " VALUES (3, 'cy', false, now())"
        )
        pg.commit()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            pg.execute("INSERT INTO shop_product (data, maker_id) VALUES ('{}', 9)")
        pg.rollback()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            pg.execute("INSERT INTO shop_product (data) VALUES ('not json')")
        pg.rollback()


def test_decimals_become_numeric_exactly_as_sqlite_shows_them(tmp_path, target):
    """SQLite stores DECIMAL as REAL or INTEGER; where every number is the exact
    decimal SQLite shows (15 digits) and fits the declaration, the column is numeric
    (money stays money). Checked on both sides in one canonical form: a key ordered
    table and a keyless one, whose rows are hashed one by one."""
    db = _source(
        tmp_path,
        "CREATE TABLE price (id INTEGER PRIMARY KEY, amount DECIMAL(10,2) NOT NULL,"
        " rate NUMERIC, big DECIMAL, odd DECIMAL(10,2), tiny DECIMAL(5,2));"
        " INSERT INTO price (amount, rate, big, odd, tiny) VALUES"
        " ('19.99', '0.00001', 9007199254740993, '0.5', 1.5),"
        " ('0', '1e20', -5, 0.1 + 0.2, 2.25), (10.5, -0.0, NULL, NULL, 3.125);"
        " CREATE TABLE ledger (amount DECIMAL(12,3), note TEXT);"
        " INSERT INTO ledger VALUES ('1.125', 'a'), (-7, 'b'), (NULL, 'c');"
        " CREATE VIEW totals AS SELECT sum(amount) AS s, max(rate) AS r FROM price;",
    )
    digest = sha(db)
    report = run(db, target)
    assert report.passed and [v.name for v in report.validation.views] == ["totals"]
    warned = {f.column for f in report.findings if f.code == "decimal" and f.severity == "warning"}
    assert warned == {"odd", "tiny"}  # 0.1 + 0.2 has 17 digits; 3.125 three decimals
    assert sha(db) == digest
    with psycopg.connect(target) as pg:
        types = dict(
            pg.execute(
                "SELECT table_name || '.' || column_name, format_type(atttypid, atttypmod)"
                " FROM information_schema.columns JOIN pg_attribute ON attrelid ="
                " (table_schema || '.' || table_name)::regclass AND attname = column_name"
                " WHERE table_name IN ('price', 'ledger') AND table_schema = 'public'"
            ).fetchall()
        )
        assert types == {
            "price.id": "bigint",
            "price.amount": "numeric(10,2)",
            "price.rate": "numeric",
            "price.big": "numeric",
            "price.odd": "double precision",
            "price.tiny": "double precision",
            "ledger.amount": "numeric(12,3)",
            "ledger.note": "text",
        }
        rows = pg.execute("SELECT amount, rate, big FROM price ORDER BY id").fetchall()
        assert rows == [
            (Decimal("19.99"), Decimal("0.000010"), 9007199254740993),
            (Decimal("0.00"), Decimal("100000000000000000000"), -5),
            (Decimal("10.50"), Decimal("0"), None),
        ]
        assert pg.execute("SELECT sum(amount) FROM ledger").fetchone() == (Decimal("-5.875"),)


def test_rails_text_booleans_become_booleans_with_the_integer_ones(tmp_path, target):
    """An app that started on Rails 5 ('t'/'f') and moved on to 6 (1/0) has both in
    one boolean column: one boolean column in PostgreSQL, validated on both sides
    (a keyed table digested from the COPY stream, a keyless one row by row)."""
    db = _source(
        tmp_path,
        "CREATE TABLE users (id integer PRIMARY KEY AUTOINCREMENT NOT NULL,"
        " admin boolean DEFAULT 'f', legacy boolean);"
        " INSERT INTO users (admin, legacy) VALUES (1, 't'), (0, 'f'), ('t', NULL),"
        " ('f', 'true'), (1, 'false');"
        " CREATE TABLE flags (on_ boolean NOT NULL);"
        " INSERT INTO flags VALUES ('t'), (0), ('f'), (1);"
        " CREATE VIEW admins AS SELECT id FROM users WHERE admin = 1 OR admin = 't';",
    )
    digest = sha(db)
    got, want = _both(db, target, "SELECT * FROM admins ORDER BY id", ["admins"])
    assert got == want == [(1,), (3,), (5,)]
    assert sha(db) == digest
    with psycopg.connect(target) as pg:
        assert pg.execute("SELECT admin, legacy FROM users ORDER BY id").fetchall() == [
            (True, True),
            (False, False),
            (True, None),
            (False, True),
            (True, False),
        ]
        assert pg.execute("SELECT count(*) FILTER (WHERE on_) FROM flags").fetchone() == (2,)
        pg.execute("INSERT INTO users DEFAULT VALUES")
        assert pg.execute("SELECT admin FROM users ORDER BY id DESC LIMIT 1").fetchone() == (False,)


def test_command_line_runs_without_a_prefect_server(tmp_path, target):
    """Nothing configured: the flow runs on Prefect's temporary local server from a
    fresh PREFECT_HOME (whose database migrations can outlast Prefect's 20 s start-up
    wait on a slow machine), and the run prints no traceback."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    db = build_rich(tmp_path / "rich.db")
    out = subprocess.run(
        [sys.executable, "-m", "flows.migrate", str(db), target, "--dry-run", "--json"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "temporary server" in out.stderr and "Traceback" not in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["tables"]["members"] == 8


def test_group_concat_views_compare_their_values_in_any_order(tmp_path, target):
    """The SQLite idiom for an ordered group_concat() feeds it an ordered, unnamed
    subquery: string_agg() gets the same ORDER BY. Neither engine promises an order
    otherwise (PostgreSQL's DISTINCT sorts), so the view check compares the values
    between the separators in any order, and still tells a different value."""
    sql = (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, g INTEGER NOT NULL, name TEXT NOT NULL);"
        " INSERT INTO t (g, name) VALUES (1, 'b'), (2, 'x'), (1, 'a'), (1, 'c'), (2, 'y'),"
        " (2, 'w'), (2, 'x');"
        " CREATE VIEW names AS SELECT g, group_concat(name) AS names,"
        " group_concat(DISTINCT name) AS d, group_concat(name, ' | ') AS piped"
        " FROM (SELECT * FROM t ORDER BY name DESC) GROUP BY g;"
    )
    db = _source(tmp_path, sql)
    got, want = _both(db, target, "SELECT * FROM names ORDER BY g", ["names"])
    assert want == [(1, "c,b,a", "c,b,a", "c | b | a"), (2, "y,x,x,w", "y,x,w", "y | x | x | w")]
    # string_agg gets the subquery's ORDER BY, so the orders match; DISTINCT's does not
    assert [(r[0], r[1], r[3]) for r in got] == [(r[0], r[1], r[3]) for r in want]
    assert [r[2] for r in got] == ["a,b,c", "w,x,y"]  # PostgreSQL's DISTINCT sorts
    assert [[sorted(v.split(",")) for v in r[1:3]] for r in got] == [
        [sorted(v.split(",")) for v in r[1:3]] for r in want
    ]
    # a value that differs is still a difference: 'x' once where SQLite has it twice
    from tasks.migrate import _view_digest

    wrong = [(2, "y,x,w", "y,x,w", "y | x | w")]
    assert _view_digest(wrong, (",", " | ")) != _view_digest(want[1:], (",", " | "))
    assert _view_digest([(2, "w,x,x,y", "w,x,y", "x | y | w | x")], (",", " | ")) == (
        _view_digest(want[1:], (",", " | "))
    )


FTS_APP = """
CREATE TABLE notes (id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
  title TEXT NOT NULL, body TEXT);
CREATE VIRTUAL TABLE notes_fts USING fts5(title, body, content='notes');
CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN
  INSERT INTO notes_fts (rowid, title, body) VALUES (new.rowid, new.title, new.body);
END;
CREATE VIEW hits AS SELECT rowid, title FROM notes_fts WHERE notes_fts MATCH 'hello';
CREATE TABLE kv (k TEXT PRIMARY KEY, v ANY) STRICT;
CREATE TABLE pts (x INT NOT NULL PRIMARY KEY, y REAL) WITHOUT ROWID, STRICT;
INSERT INTO notes (title, body) VALUES ('a', 'hello world'), ('b', 'bye');
INSERT INTO kv VALUES ('a', 1), ('b', 'text');
INSERT INTO pts VALUES (1, 2.5);
"""


def test_full_text_search_tables_are_findings_and_stay_behind(tmp_path, target):
    """An FTS5 table (and its shadow tables) has no PostgreSQL module: an error
    finding, with the view and trigger that use it; accepted, the rest migrates
    and the FTS storage stays behind. STRICT tables read as any other, and the
    usual random id default keeps making 32 hex digits."""
    db = _source(tmp_path, FTS_APP)
    with pytest.raises(MigrationError) as info:
        run(db, target, policies={"kv.v": "text"})
    message = str(info.value)
    for key in ("notes_fts:virtual-table", "notes_ai:trigger", "hits:untranslatable"):
        assert key in message
    assert "virtual table 'notes_fts', which is not migrated" in message
    assert "notes_fts_data" not in message
    report = run(
        db,
        target,
        policies={"kv.v": "text"},
        accept=["notes_fts:virtual-table", "notes_ai:trigger", "hits:untranslatable"],
    )
    assert report.passed and set(report.tables) == {"notes", "kv", "pts"}
    assert "notes.id:random-id" in {f.key for f in report.findings}
    with psycopg.connect(target) as pg:
        names = {
            r[0]
            for r in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        assert names == {"notes", "kv", "pts"}
        (new_id,) = pg.execute("INSERT INTO notes (title) VALUES ('c') RETURNING id").fetchone()
        assert len(new_id) == 32 and new_id == new_id.lower() and int(new_id, 16) >= 0
        assert pg.execute("SELECT v FROM kv ORDER BY k").fetchall() == [("1",), ("text",)]
        assert pg.execute("SELECT x, y FROM pts").fetchall() == [(1, 2.5)]


def test_times_of_day_become_time_and_current_date_time_stay_utc(tmp_path, target):
    """Django's TimeField is `time` text in SQLite ('09:00:00', '17:30:00.25'):
    PostgreSQL `time` (an empty TIME column too). CURRENT_DATE / CURRENT_TIME
    defaults are UTC in SQLite and follow the session's zone in PostgreSQL:
    translated to the UTC value, as text where the column is text."""
    db = _source(
        tmp_path,
        'CREATE TABLE "shop_hours" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,'
        ' "opens" time NOT NULL, "closes" time NULL, "later" time NULL,'
        " stamp TEXT NOT NULL DEFAULT CURRENT_TIME, day DATE NOT NULL DEFAULT CURRENT_DATE,"
        " at TIME NOT NULL DEFAULT CURRENT_TIME);"
        " INSERT INTO shop_hours (opens, closes) VALUES ('09:00:00', '17:30:00.250000'),"
        " ('08:15', NULL), ('23:59:59.999999', '00:00:00');"
        " CREATE TABLE wall (t TIME); INSERT INTO wall VALUES ('12:00:01.5'), (NULL);",
    )
    report = run(db, target)
    assert report.passed
    with psycopg.connect(target) as pg:
        types = dict(
            pg.execute(
                "SELECT table_name || '.' || column_name, data_type FROM"
                " information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
        )
        for column in ("opens", "closes", "later", "at"):
            assert types[f"shop_hours.{column}"] == "time without time zone", column
        assert types["wall.t"] == "time without time zone"
        rows = pg.execute("SELECT opens::text, closes::text FROM shop_hours ORDER BY id")
        assert rows.fetchall() == [
            ("09:00:00", "17:30:00.25"),
            ("08:15:00", None),
            ("23:59:59.999999", "00:00:00"),
        ]
        pg.execute("SET TIME ZONE 'Asia/Tokyo'")
        new = pg.execute(
            "INSERT INTO shop_hours (opens) VALUES ('10:00') RETURNING stamp, day, at,"
            " to_char(now() AT TIME ZONE 'UTC', 'HH24:MI:SS'), (now() AT TIME ZONE 'UTC')::date,"
            " date_trunc('second', now() AT TIME ZONE 'UTC')::time"
        ).fetchone()
        assert new is not None and new[:3] == new[3:]


def test_month_and_weekday_modifiers_shift_dates_as_sqlite(tmp_path, target):
    """SQLite shifts whole months by the month number and lets the day overflow
    (31 January + 1 month = 2 March in a leap year); 'start of month', '+1 month',
    '-1 day' is the usual last-day-of-month idiom; 'weekday N' moves forward to
    the next such day. Compared on both sides, and against SQLite's own answers."""
    db = _source(
        tmp_path,
        "CREATE TABLE d (id INTEGER PRIMARY KEY, at DATETIME NOT NULL);"
        " INSERT INTO d (at) VALUES ('2024-01-31 10:30:00'), ('2024-03-31 00:00:00'),"
        " ('2024-02-29 23:59:59'), ('2023-01-31 12:00:00'), ('2024-11-30 08:00:00'),"
        " ('2024-12-01 08:00:00');"
        " CREATE VIEW shifted AS SELECT id, datetime(at, '+1 month') AS next_month,"
        "  date(at, '-1 month') AS last_month, date(at, '+1 year') AS next_year,"
        "  date(at, '-14 months') AS back, date(at, 'start of month', '+1 month', '-1 day')"
        "  AS month_end, date(at, 'weekday 0') AS sunday, datetime(at, 'weekday 3') AS wed"
        "  FROM d;",
    )
    got, want = _both(db, target, "SELECT * FROM shifted ORDER BY id", ["shifted"])
    assert _state(got) == _state(want)
    assert want[0][1:] == (
        "2024-03-02 10:30:00",
        "2023-12-31",
        "2025-01-31",
        "2022-12-01",
        "2024-01-31",
        "2024-02-04",
        "2024-01-31 10:30:00",
    )
    assert want[2][3] == "2025-03-01" and want[1][2] == "2024-03-02"
    assert [r[6] for r in want[4:]] == ["2024-12-01", "2024-12-01"]


def test_hex_of_blob_text_and_integer_columns_as_in_sqlite(tmp_path, target):
    """hex() shows blob ids in views: upper-case hex of the bytes (of UTF-8 text, of
    an integer's digits), '' for NULL, exactly as SQLite prints it."""
    db = _source(
        tmp_path,
        "CREATE TABLE things (id INTEGER PRIMARY KEY, uid BLOB, name TEXT, n INTEGER);"
        " INSERT INTO things (uid, name, n) VALUES (x'00ff10a0', 'héllo', 255),"
        " (NULL, NULL, NULL), (x'', '', -7);"
        " CREATE VIEW shown AS SELECT id, hex(uid) AS uid, lower(hex(name)) AS name,"
        "  hex(n) AS n FROM things;",
    )
    got, want = _both(db, target, "SELECT * FROM shown ORDER BY id", ["shown"])
    assert (
        got
        == want
        == [
            (1, "00FF10A0", "68c3a96c6c6f", "323535"),
            (2, "", "", ""),
            (3, "", "", "2D37"),
        ]
    )


def test_datetimes_utc_makes_instants_whatever_the_session_zone(tmp_path, target):
    """Django with USE_TZ stores UTC wall-clock text and wants timestamptz: with
    datetimes_utc the text is read as UTC (the target database's zone is Tokyo here,
    so a value read in the session's zone would be off by nine hours), defaults of
    CURRENT_TIMESTAMP are the instant, a plain index stays, and what would compare
    such a column with a zone-less literal becomes a finding."""
    db = _source(
        tmp_path,
        'CREATE TABLE "app_event" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,'
        ' "created" datetime NOT NULL DEFAULT CURRENT_TIMESTAMP, "seen" datetime NULL,'
        ' "name" varchar(20) NOT NULL);'
        ' CREATE INDEX "app_event_created" ON "app_event" ("created");'
        " CREATE INDEX recent ON app_event (created) WHERE created > '2024-01-01';"
        " CREATE VIEW late AS SELECT id FROM app_event WHERE created > '2024-06-01';"
        " INSERT INTO app_event (created, seen, name) VALUES"
        " ('2024-01-01 10:00:00.123456', NULL, 'a'), ('2024-07-01', '2024-07-02T23:30', 'b');"
        " CREATE TABLE keyless (at datetime);"
        " INSERT INTO keyless VALUES ('2024-03-01 12:00:00'), (NULL);",
    )
    with psycopg.connect(target, autocommit=True) as pg:
        pg.execute(f"ALTER DATABASE {target.rsplit('/', 1)[1]} SET timezone = 'Asia/Tokyo'")
    block = PostgresDatabase(dsn=SecretStr(target), datetimes_utc=True)
    with pytest.raises(MigrationError) as info:
        migrate(str(db), block)
    assert "recent:untranslatable" in str(info.value) and "late:untranslatable" in str(info.value)
    assert "app_event_created" not in str(info.value)
    report = migrate(str(db), block, accept=["recent:untranslatable", "late:untranslatable"])
    assert report.passed
    with psycopg.connect(target) as pg:
        kinds = pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type LIKE 'timestamp%' ORDER BY 1"
        ).fetchall()
        assert kinds == [("at", "timestamp with time zone")] + [
            (c, "timestamp with time zone") for c in ("created", "seen")
        ]
        utc = pg.execute(
            "SELECT to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),"
            " to_char(seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM app_event ORDER BY id"
        ).fetchall()
        assert utc == [
            ("2024-01-01 10:00:00.123456", None),
            ("2024-07-01 00:00:00.000000", "2024-07-02 23:30"),
        ]
        (at,) = pg.execute(
            "SELECT at AT TIME ZONE 'UTC' FROM keyless WHERE at IS NOT NULL"
        ).fetchone()
        assert str(at) == "2024-03-01 12:00:00"
        (drift,) = pg.execute(
            "INSERT INTO app_event (name) VALUES ('c') RETURNING abs(extract(epoch FROM now() - created))"
        ).fetchone()
        assert drift < 2  # the instant of the insert, not nine hours off
        assert pg.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'app_event_created'"
        ).fetchone() == (1,)


def test_json_arrow_reads_scalars_as_sqlite_writes_them(tmp_path, target):
    """`col -> 'key'` is the node as JSON text: a string keeps its quotes, a number
    its digits, true/null their words, a missing key NULL. (A string written with
    escapes comes back as jsonb normalised it, unescaped: the view check tells.)"""
    db = _source(
        tmp_path,
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, body JSON NOT NULL);"
        ' INSERT INTO docs (body) VALUES (\'{"s": "x", "n": 1.50, "t": true, "z": null}\'),'
        ' (\'{"s": "yé", "a": [1, 2]}\');'
        " CREATE VIEW nodes AS SELECT id, body -> 's' AS s, body -> '$.n' AS n,"
        "  body -> 't' AS t, body -> 'z' AS z, body -> '$.a[1]' AS second FROM docs;",
    )
    got, want = _both(db, target, "SELECT * FROM nodes ORDER BY id", ["nodes"])
    assert (
        got
        == want
        == [
            (1, '"x"', "1.50", "true", "null", None),
            (2, '"yé"', None, None, None, "2"),
        ]
    )


# An application as FastAPI users write it: SQLAlchemy 2 models, created and filled
# through the ORM on SQLite. After the migration the same models must work on
# PostgreSQL: SQLAlchemy's PostgreSQL dialect declares and binds uuid and interval.


class _Base(DeclarativeBase):
    pass


class _Kind(enum.Enum):
    small = "small"
    large = "large"


class _Owner(_Base):
    __tablename__ = "owner"
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(80), unique=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created: Mapped[datetime.datetime] = mapped_column(sa.DateTime, server_default=sa.func.now())
    seen: Mapped[datetime.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    items: Mapped[list[_Item]] = relationship(back_populates="owner", order_by="_Item.id")


class _Item(_Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("owner.id"))
    kind: Mapped[_Kind] = mapped_column(sa.Enum(_Kind))
    price: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2))
    weight: Mapped[float] = mapped_column(sa.Float)
    meta: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    blob: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    day: Mapped[datetime.date] = mapped_column(sa.Date)
    at: Mapped[datetime.time] = mapped_column(sa.Time)
    span: Mapped[datetime.timedelta | None] = mapped_column(sa.Interval)
    big: Mapped[int] = mapped_column(sa.BigInteger)
    note: Mapped[str | None] = mapped_column(sa.Text)
    owner: Mapped[_Owner] = relationship(back_populates="items")


def _orm_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as s:
        return [
            (
                o.id,
                o.name,
                o.active,
                o.created,
                # SQLite hands back the UTC wall clock it stored; PostgreSQL the instant
                o.seen.astimezone(datetime.UTC).replace(tzinfo=None)
                if o.seen is not None and o.seen.tzinfo is not None
                else o.seen,
                [
                    (i.id, i.kind, i.price, i.weight, i.meta, i.blob, i.day, i.at, i.span, i.big)
                    for i in o.items
                ],
            )
            for o in s.scalars(sa.select(_Owner).order_by(_Owner.name))
        ]


def test_a_sqlalchemy_application_works_unchanged_on_the_migrated_database(tmp_path, target):
    """CHAR(32) UUIDs become uuid (a key and its referencing column together); the
    Interval column, a DATETIME since 1970-01-01 in SQLite, becomes interval by an
    explicit policy, and so does a Django DurationField (bigint microseconds); a
    DateTime(timezone=True), naive UTC text in SQLite, becomes timestamptz by
    policy 'utc' (the database's zone is Asia/Tokyo: the instants stay). The
    ORM then reads exactly what it read from SQLite, finds rows by UUID, and inserts
    with a new identity. Without the uuid type, every query by key fails with
    `operator does not exist: uuid = text`."""
    db = tmp_path / "orm.db"
    lite = sa.create_engine(f"sqlite:///{db}")
    _Base.metadata.create_all(lite)
    with Session(lite) as s:
        noon = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)
        owners = [
            _Owner(
                name=f"o{i}",
                active=i % 2 == 0,
                seen=noon + datetime.timedelta(hours=i, microseconds=i) if i else None,
            )
            for i in range(4)
        ]
        s.add_all(owners)
        for i in range(30):
            s.add(
                _Item(
                    owner=owners[i % 4],
                    kind=_Kind.small if i % 3 else _Kind.large,
                    price=Decimal(f"{i * 37}.{i % 100:02d}"),
                    weight=i / 7,
                    meta={"i": i, "tags": ["a", "é"]},
                    blob=bytes([i, 0]) if i % 2 else None,
                    day=datetime.date(2024, 1, 1) + datetime.timedelta(days=i),
                    at=datetime.time(i % 24, i % 60, 0, 1000 * i),
                    span=datetime.timedelta(days=i - 3, microseconds=i * 12345) if i % 4 else None,
                    big=2**40 + i,
                    note=None if i % 7 else f"n{i}",
                )
            )
        s.commit()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE django_took (id integer NOT NULL PRIMARY KEY, took bigint)")
        conn.executemany(
            "INSERT INTO django_took (took) VALUES (?)", [(86_400_000_001,), (-5,), (None,)]
        )
    want = _orm_rows(lite)
    lite.dispose()

    with psycopg.connect(target, autocommit=True) as conn:  # instants, whatever the zone
        conn.execute(f"ALTER DATABASE {target.rsplit('/', 1)[1]} SET timezone = 'Asia/Tokyo'")
    policies = {"item.span": "interval", "django_took.took": "interval", "owner.seen": "utc"}
    report = run(db, target, policies=policies)
    assert report.passed and not report.blocking, report
    keys = {f.key for f in report.findings}
    assert {"owner.id:uuid", "item.owner_id:uuid", "item.span:interval"} <= keys

    pg = sa.create_engine(target.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert _orm_rows(pg) == want
        with Session(pg) as s:
            first = s.get(_Owner, want[0][0])
            assert first is not None and first.name == "o0"
            new = _Owner(name="new")
            s.add(new)
            s.flush()
            s.add(
                _Item(
                    owner=new,
                    kind=_Kind.large,
                    price=Decimal("9.99"),
                    weight=1.5,
                    meta={},
                    day=datetime.date(2025, 1, 1),
                    at=datetime.time(1, 2),
                    span=datetime.timedelta(seconds=5),
                    big=1,
                )
            )
            s.commit()
            assert [i.id for i in new.items] == [31]  # the identity goes on after the last
        with pg.connect() as conn:
            took = conn.exec_driver_sql("SELECT took FROM django_took ORDER BY id").scalars()
            assert list(took) == [
                datetime.timedelta(days=1, microseconds=1),
                datetime.timedelta(microseconds=-5),
                None,
            ]
            types = dict(
                conn.exec_driver_sql(
                    "SELECT table_name || '.' || column_name, data_type"
                    " FROM information_schema.columns WHERE table_schema = 'public'"
                ).all()
            )
    finally:
        pg.dispose()
    assert types["owner.id"] == types["item.owner_id"] == "uuid"
    assert types["item.span"] == types["django_took.took"] == "interval"
    assert types["owner.seen"] == "timestamp with time zone"
    assert types["owner.created"] == "timestamp without time zone"


def test_sql_postgresql_refuses_stops_before_the_copy(tmp_path, migrated_target):
    """lower() of a uuid column translates, but PostgreSQL has no lower(uuid): the
    plan's keys, views and triggers are rehearsed on the empty staging tables first,
    so the migration stops before copying a row and names the object and the way
    out. With the policy that keeps the column text, the same source migrates."""
    u = "0123456789abcdef0123456789abcdef"
    db = _source(
        tmp_path,
        "CREATE TABLE acct (id CHAR(32) PRIMARY KEY, name TEXT);"
        "CREATE TABLE big (id INTEGER PRIMARY KEY, acct CHAR(32) REFERENCES acct (id));"
        "CREATE VIEW short_ids AS SELECT lower(id) AS lid, name FROM acct;"
        f"INSERT INTO acct VALUES ('{u}', 'a');"
        f"INSERT INTO big (acct) SELECT '{u}' FROM (SELECT 1 UNION SELECT 2);",
    )
    before = fingerprint(migrated_target)
    with pytest.raises(MigrationError, match="view 'short_ids' would fail in PostgreSQL") as info:
        run(db, migrated_target)
    assert "lower(uuid)" in str(info.value) and "policy 'text'" in str(info.value)
    assert fingerprint(migrated_target) == before
    report = run(db, migrated_target, policies={"acct.id": "text"})
    assert report.passed
    assert "big.acct:uuid-text" in {f.key for f in report.findings}


def _django(db: Path, dsn: str) -> Any:
    """Django configured once for this process: the SQLite file as `default`, the
    migration's target as `pg`, USE_TZ as Django has it by default."""
    import django
    from django.conf import settings

    pg = psycopg.conninfo.conninfo_to_dict(dsn)
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)},
            "pg": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": pg["dbname"],
                "USER": pg.get("user", ""),
                "HOST": pg.get("host", ""),
                "PORT": pg.get("port", ""),
            },
        },
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "tests.support.djangoapp",
        ],
        USE_TZ=True,
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    django.setup()
    return django


def test_a_django_application_works_unchanged_on_the_migrated_database(tmp_path, target):
    """Django's own schema (contenttypes, auth, an app's models) made by `migrate`
    on SQLite and filled through the ORM; migrated with `datetimes_utc` (USE_TZ) and
    the DurationField under policy 'interval'; then the same models on PostgreSQL
    read the same objects, look up by UUID and JSON key, and insert with fresh
    identities — UUIDField is uuid there, as Django's PostgreSQL backend binds it."""
    db = tmp_path / "django.db"
    _django(db, target)
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from tests.support.djangoapp.models import Maker, Product

    call_command("migrate", database="default", run_syncdb=True, verbosity=0)
    ann = User.objects.create_user("ann", password="pw")
    bob = User.objects.create_user("bob", password="pw", is_staff=True)
    acme = Maker.objects.create(name="acme")
    for i in range(12):
        Product.objects.create(
            owner=ann if i % 2 else bob,
            maker=acme if i % 3 else None,
            data={"color": "red" if i % 4 == 0 else "blue", "n": i},
            price=Decimal(f"{i * 13}.{i:02d}"),
            took=datetime.timedelta(days=i - 2, seconds=i, microseconds=i) if i % 5 else None,
            opens=datetime.time(8, i, 30, 250000) if i % 2 else None,
            day=datetime.date(2024, 2, 1 + i),
            active=i % 3 != 0,
            ip=f"10.0.0.{i}" if i % 2 else (f"2001:db8::{i:x}", "::ffff:10.9.8.7", None)[i % 3],
            blob=bytes([i, 255]) if i % 3 == 1 else None,
            stock=i * 7,
        )

    def objects(alias: str) -> list[tuple[Any, ...]]:
        return [
            (
                p.id,
                p.owner.username,
                p.maker.name if p.maker else None,
                p.data,
                p.price,
                p.took,
                p.added,
                p.opens,
                p.day,
                p.active,
                p.ip,
                None if p.blob is None else bytes(p.blob),
                p.stock,
            )
            for p in Product.objects.using(alias).select_related("owner", "maker").order_by("id")
        ]

    want = objects("default")
    red = Product.objects.filter(data__color="red").count()
    from django.db import connections

    connections.close_all()  # Django keeps SQLite open; the migration reads a snapshot anyway

    with psycopg.connect(target, autocommit=True) as conn:  # instants, whatever the zone
        conn.execute(f"ALTER DATABASE {target.rsplit('/', 1)[1]} SET timezone = 'Asia/Tokyo'")
    before = sha(db)
    report = migrate(
        str(db),
        PostgresDatabase(dsn=SecretStr(target), datetimes_utc=True),
        policies={"shop_product.took": "interval"},
    )
    assert sha(db) == before
    assert report.passed and not report.blocking, report
    found = {f.key for f in report.findings}
    assert {"shop_product.id:uuid", "shop_product.took:interval", "shop_product.ip:inet"} <= found

    assert objects("pg") == want
    first = Product.objects.using("pg").get(pk=want[0][0])
    assert first.owner.username == want[0][1]
    assert Product.objects.using("pg").filter(data__color="red").count() == red > 0
    assert Product.objects.using("pg").filter(owner__is_staff=True).count() == 6
    assert Product.objects.using("pg").filter(ip="10.0.0.3").count() == 1
    assert Product.objects.using("pg").filter(ip="::ffff:10.9.8.7").count() == 2
    assert Product.objects.using("pg").filter(ip__startswith="10.0.0.1").count() == 2
    cy = User.objects.db_manager("pg").create_user("cy", password="pw")
    assert cy.pk == 3  # the identity goes on after SQLite's last id
    made = Product.objects.using("pg").create(
        owner=cy, price=Decimal("1.50"), took=datetime.timedelta(minutes=3)
    )
    made.refresh_from_db(using="pg")
    with psycopg.connect(target) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'shop_product'"
            ).fetchall()
        )
    assert (types["id"], types["ip"], types["took"]) == ("uuid", "inet", "interval")
    assert types["added"] == "timestamp with time zone" and types["data"] == "jsonb"
    assert made.took == datetime.timedelta(minutes=3) and made.added.tzinfo is not None
    assert User.objects.using("pg").get(username="ann").check_password("pw")
    out = io.StringIO()  # Django's migration history moved too: nothing left to apply
    call_command("migrate", database="pg", stdout=out)
    assert "No migrations to apply" in out.getvalue()
    connections.close_all()


def _same_rows(db: Path, target: str, *queries: tuple[str, str]) -> None:
    """Each (PostgreSQL, SQLite) query pair returns the same rows."""
    lite = sqlite3.connect(db)
    try:
        with psycopg.connect(target) as pg:
            for on_pg, on_sqlite in queries:
                assert pg.execute(on_pg).fetchall() == lite.execute(on_sqlite).fetchall(), on_pg
    finally:
        lite.close()


def test_the_cutover_catches_up_uuid_and_composite_keys_row_by_row(tmp_path, target):
    """Tables keyed by a UUID (Django's and SQLAlchemy's usual key) or by several
    columns have no rowid to compare by: the catch-up walks both sides in key order
    and replaces only the rows that changed while the old version served (2 of
    2000, not the whole table), so the write freeze does not grow with the table."""
    rows = [(f"{i:032x}", f"n{i}") for i in range(2000)]
    db = _source(tmp_path, "CREATE TABLE acct (id CHAR(32) PRIMARY KEY, name TEXT NOT NULL)", rows)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE pair (k TEXT, n INTEGER, v TEXT, PRIMARY KEY (k, n)) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO pair VALUES (?, ?, ?)", [(f"k{i % 7}", i, "v") for i in range(700)]
        )

    def freeze() -> None:  # what the old version wrote during the bulk copy
        with sqlite3.connect(db) as conn:
            conn.execute(f"INSERT INTO acct VALUES ('{'f' * 32}', 'new')")
            conn.execute(f"UPDATE acct SET name = 'renamed' WHERE id = '{5:032x}'")
            conn.execute(f"DELETE FROM acct WHERE id = '{7:032x}'")
            conn.execute("INSERT INTO pair VALUES ('k0', 9999, 'new')")
            conn.execute("UPDATE pair SET v = 'changed' WHERE k = 'k3' AND n = 10")
            conn.execute("DELETE FROM pair WHERE k = 'k1' AND n = 8")

    cut = cutover_migration(
        str(db), PostgresDatabase(dsn=SecretStr(target)), freeze, lambda: None, drain_s=0
    )
    assert cut.validation.passed
    assert cut.rows_caught_up == {"acct": 2, "pair": 2}
    # found by comparing the snapshots' pages: only pair (WITHOUT ROWID) was digested
    assert cut.caught_up_by == "pages"
    _same_rows(
        db,
        target,
        (
            "SELECT replace(id::text, '-', ''), name FROM acct ORDER BY id",
            "SELECT id, name FROM acct ORDER BY id",
        ),
        ("SELECT k, n, v FROM pair ORDER BY k, n", "SELECT k, n, v FROM pair ORDER BY k, n"),
    )


def test_the_cutover_catch_up_finds_changes_by_bucket_on_both_sides_of_zero(tmp_path, target):
    """The catch-up narrows what differs to buckets before comparing rows: rowid
    buckets of 1024 (negative rowids, bucket 0 spanning -1023..1023, changes on
    bucket edges, rows beyond either end) and key-prefix buckets of a text key (a key
    shorter than a prefix, non-ASCII keys, a new bucket). Every change arrives, the
    untouched rows stay, and the final validation passes."""
    rows = [(i, f"r{i}") for i in range(-3000, 3001)]
    db = _source(tmp_path, "CREATE TABLE log (id INTEGER PRIMARY KEY, s TEXT NOT NULL)", rows)
    keys = ["a", "ab", "é", "éa", "z" * 40, *(f"k{i:05d}" for i in range(3000))]
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE sess (key VARCHAR(40) PRIMARY KEY, data TEXT NOT NULL)")
        conn.executemany("INSERT INTO sess VALUES (?, 'd')", [(k,) for k in keys])

    def freeze() -> None:
        with sqlite3.connect(db) as conn:
            for rowid in (-3000, -2048, -1024, -1023, -1, 0, 1023, 1024, 2047, 3000):
                conn.execute("UPDATE log SET s = 'changed' WHERE id = ?", (rowid,))
            conn.execute("DELETE FROM log WHERE id IN (-1500, 5)")
            conn.execute("INSERT INTO log VALUES (-9000, 'low'), (9000, 'high')")
            conn.execute("UPDATE sess SET data = 'changed' WHERE key IN ('a', 'é', 'k02999')")
            conn.execute("DELETE FROM sess WHERE key = 'éa'")
            conn.execute("INSERT INTO sess VALUES ('~new', 'd'), ('b', 'd')")

    cut = cutover_migration(
        str(db), PostgresDatabase(dsn=SecretStr(target)), freeze, lambda: None, drain_s=0
    )
    assert cut.validation.passed
    assert cut.rows_caught_up == {"log": 12, "sess": 5}
    assert cut.caught_up_by == "pages"
    lite = sqlite3.connect(db)
    with psycopg.connect(target) as pg:
        for sql in ("SELECT id, s FROM log ORDER BY id", "SELECT key, data FROM sess ORDER BY key"):
            got = pg.execute(sql.replace("BY key", 'BY key COLLATE "C"')).fetchall()
            assert got == lite.execute(sql).fetchall()
    lite.close()


def _random_writes(db: Path, rng: random.Random, n: int) -> None:
    """Writes of every shape the old version could take during the bulk copy."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA secure_delete = OFF")  # freed pages keep their old bytes
    for _ in range(n):
        op, i = rng.randrange(6), rng.randrange(1, 2200)
        if op == 0:
            body = rng.randbytes(rng.choice([10, 6000]))
            conn.execute("INSERT OR REPLACE INTO item VALUES (?, ?, ?)", (i, f"n{i}", body))
        elif op == 1:  # the same head, another tail: only an overflow page changes
            row = conn.execute("SELECT body FROM item WHERE id = ?", (i,)).fetchone()
            if row:
                body = row[0][:3000] + rng.randbytes(max(0, len(row[0]) - 3000))
                conn.execute("UPDATE item SET body = ? WHERE id = ?", (body, i))
        elif op == 2:  # frees whole leaves, which later writes reuse
            conn.execute("DELETE FROM item WHERE id BETWEEN ? AND ?", (i, i + 30))
        elif op == 3:
            conn.execute("INSERT INTO doc VALUES (?, 'late')", (f"{rng.getrandbits(128):032x}",))
        elif op == 4:
            conn.execute(
                "UPDATE doc SET body = 'changed' WHERE id = (SELECT id FROM doc LIMIT 1 OFFSET ?)",
                (i,),
            )
        else:
            conn.execute("UPDATE pair SET v = 'w' WHERE a = ?", (i,))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_cutover_finds_random_writes_from_pages_and_loses_none(tmp_path, target, seed):
    """The catch-up compares the bulk copy's snapshot with the frozen one page by page
    and replaces only the rows that changed: a missed row would be a lost write. After
    random writes (overflowing rows, freed and reused pages, a uuid-keyed table, a
    WITHOUT ROWID table), PostgreSQL holds exactly what SQLite holds."""
    rng = random.Random(seed)
    db = _source(
        tmp_path,
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, body BLOB);"
        "CREATE TABLE doc (id CHAR(32) PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE pair (a INTEGER, b TEXT, v TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;",
    )
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO item VALUES (?, ?, ?)",
            ((i, f"n{i}", rng.randbytes(rng.choice([10, 300, 6000]))) for i in range(1, 2001)),
        )
        conn.executemany(
            "INSERT INTO doc VALUES (?, 'd')",
            ((f"{rng.getrandbits(128):032x}",) for _ in range(3000)),
        )
        conn.executemany("INSERT INTO pair VALUES (?, 'b', 'v')", ((i,) for i in range(2000)))
    conn.close()

    cut = cutover_migration(
        str(db),
        PostgresDatabase(dsn=SecretStr(target)),
        lambda: _random_writes(db, rng, 80),
        lambda: None,
        drain_s=0,
    )
    assert cut.validation.passed and cut.caught_up_by == "pages"
    assert 0 < sum(cut.rows_caught_up.values()) < 1000  # the rows written, not the tables
    _same_rows(
        db,
        target,
        (
            "SELECT id, name, body FROM item ORDER BY id",
            "SELECT id, name, body FROM item ORDER BY id",
        ),
        (
            "SELECT replace(id::text, '-', ''), body FROM doc ORDER BY 1",
            "SELECT id, body FROM doc ORDER BY id",
        ),
        ("SELECT a, b, v FROM pair ORDER BY a", "SELECT a, b, v FROM pair ORDER BY a"),
    )


def test_a_schema_change_during_the_bulk_copy_is_caught_up_by_digests(tmp_path, target):
    """Pages are judged only under one schema: an index created while the old version
    served makes the catch-up digest every table instead, and nothing is lost."""
    db = _source(
        tmp_path,
        "CREATE TABLE log (id INTEGER PRIMARY KEY, s TEXT NOT NULL)",
        [(i, "x") for i in range(1, 500)],
    )

    def freeze() -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE INDEX log_s ON log (s)")
            conn.execute("UPDATE log SET s = 'changed' WHERE id = 7")

    cut = cutover_migration(
        str(db), PostgresDatabase(dsn=SecretStr(target)), freeze, lambda: None, drain_s=0
    )
    assert cut.validation.passed and cut.caught_up_by == "digests"
    assert cut.rows_caught_up == {"log": 1}
    with psycopg.connect(target) as pg:
        assert pg.execute("SELECT s FROM log WHERE id = 7").fetchone() == ("changed",)


def test_the_blocks_policies_and_accepts_decide_a_releases_cutover(tmp_path, target):
    """A release migrates through `cutover_migration`, which takes no options of its
    own: the Postgres block carries them, so a DurationField becomes interval and an
    accepted orphan keeps its row with a NOT VALID key, as `migrate` would do them.
    A policy the block names wrongly is a ConfigError naming the key, before anything."""
    db = _source(
        tmp_path,
        "CREATE TABLE mom (id INTEGER PRIMARY KEY);"
        "CREATE TABLE kid (id INTEGER PRIMARY KEY, mom INTEGER REFERENCES mom (id), took bigint);"
        "INSERT INTO mom VALUES (1);"
        "INSERT INTO kid (mom, took) VALUES (1, 1500000), (2, 60000000);",
    )
    block = PostgresDatabase(
        dsn=SecretStr(target), policies={"kid.took": "interval"}, accept=["kid:fk-orphans-0"]
    )
    cut = cutover_migration(str(db), block, lambda: None, lambda: None, drain_s=0)
    assert cut.validation.passed and cut.validation.fk_not_valid == ("kid_fk0",)
    with psycopg.connect(target) as pg:
        took = [r[0] for r in pg.execute("SELECT took FROM kid ORDER BY id")]
    assert took == [datetime.timedelta(seconds=1.5), datetime.timedelta(minutes=1)]
    wrong = PostgresDatabase(dsn=SecretStr(target), policies={"kid.took": "duration"})
    with pytest.raises(ConfigError, match=r"policies\['kid.took'\].*unknown policy 'duration'"):
        cutover_migration(str(db), wrong, lambda: None, lambda: None, drain_s=0)


def test_dashed_and_declared_uuids_become_uuid_too(tmp_path, target):
    """Tortoise (a FastAPI favourite) stores a UUIDField as CHAR(36) dashed text, Peewee
    declares UUID and writes hex: both become uuid, the form each column had is what
    validation and the catch-up compare, and the driver's uuid parameters find rows."""
    rng = random.Random(4)  # random as uuid4's: a UUID column has NUMERIC affinity, and
    # hex that reads as a number ('12e45…') would be stored as one (a mixed-storage error)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(400)]
    db = _source(
        tmp_path,
        "CREATE TABLE event (id CHAR(36) NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL);"
        "CREATE TABLE ticket (id INTEGER PRIMARY KEY,"
        " event_id CHAR(36) NOT NULL REFERENCES event (id), code UUID NOT NULL);",
    )
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO event VALUES (?, ?)", [(str(u), f"e{u.int}") for u in ids])
        conn.executemany(
            "INSERT INTO ticket (event_id, code) VALUES (?, ?)",
            [(str(u), uuid.UUID(int=u.int ^ 1).hex) for u in ids],
        )

    def freeze() -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE event SET name = 'moved' WHERE id = ?", (str(ids[3]),))
            conn.execute("INSERT INTO event VALUES (?, 'late')", (str(uuid.uuid4()),))

    cut = cutover_migration(
        str(db), PostgresDatabase(dsn=SecretStr(target)), freeze, lambda: None, drain_s=0
    )
    assert cut.validation.passed and cut.rows_caught_up == {"event": 2}
    with psycopg.connect(target) as pg:
        row = pg.execute(
            "SELECT e.name, t.code FROM event e JOIN ticket t ON t.event_id = e.id WHERE e.id = %s",
            (ids[3],),
        ).fetchone()
        assert row == ("moved", uuid.UUID(int=ids[3].int ^ 1))
        types = dict(
            pg.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type = 'uuid'"
            ).fetchall()
        )
    assert set(types) == {"event.id", "ticket.event_id", "ticket.code"}


def test_views_and_triggers_read_uuid_columns_as_the_text_sqlite_held(tmp_path, target):
    """A view that concatenates, cuts, measures or matches a uuid column, and a trigger
    that writes one into a text column, give on PostgreSQL what they gave on SQLite:
    32 hex digits where SQLite held them, dashes where it held those. The views are
    checked by querying both sides; the trigger by a row inserted on PostgreSQL."""
    rng = random.Random(9)
    hexes = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(50)]
    db = _source(
        tmp_path,
        "CREATE TABLE acct (id CHAR(32) PRIMARY KEY, label TEXT NOT NULL);"
        "CREATE TABLE ev (eid CHAR(36) PRIMARY KEY, acct_id CHAR(32) REFERENCES acct (id));"
        "CREATE TABLE audit (n INTEGER PRIMARY KEY, what TEXT NOT NULL);"
        "CREATE VIEW tagged AS SELECT 'acct:' || a.id AS tag, upper(a.id) AS up,"
        " length(id) AS n, substr(id, 1, 8) AS head, substr(id, -4) AS tail,"
        " CAST(id AS TEXT) AS t, instr(id, 'a') AS at FROM acct a;"
        "CREATE VIEW hits AS SELECT e.eid || '/' || e.acct_id AS path FROM ev e"
        " JOIN acct a ON a.id = e.acct_id WHERE e.acct_id LIKE '0%' OR e.eid NOT LIKE '1%';"
        "CREATE VIEW ids AS SELECT count(*) AS n, length(group_concat(id)) AS len FROM acct;"
        "CREATE TRIGGER stamp AFTER INSERT ON ev BEGIN"
        " INSERT INTO audit (what) VALUES (NEW.eid || ' for ' || upper(NEW.acct_id)); END;",
    )
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO acct VALUES (?, ?)", [(u.hex, "x") for u in hexes])
        conn.executemany(
            "INSERT INTO ev VALUES (?, ?)",
            [(str(uuid.UUID(int=u.int ^ 7, version=4)), u.hex) for u in hexes],
        )
    report = run(db, target)
    assert report.passed, report
    assert all(v.ok and v.rows_source == v.rows_target for v in report.validation.views)
    assert {v.name for v in report.validation.views} == {"tagged", "hits", "ids"}
    new = uuid.UUID(int=rng.getrandbits(128), version=4)
    with psycopg.connect(target) as pg:
        head = pg.execute("SELECT tag, head FROM tagged ORDER BY tag LIMIT 1").fetchone()
        first = min(u.hex for u in hexes)
        assert head == (f"acct:{first}", first[:8])
        pg.execute("INSERT INTO ev VALUES (%s, %s)", (new, hexes[0]))
        what = pg.execute("SELECT what FROM audit ORDER BY n DESC LIMIT 1").fetchone()
    assert what == (f"{new} for {hexes[0].hex.upper()}",)


def _bulk_copied(tmp_path: Path, db: Path, target: str, pool: Any) -> tuple[Path, Any]:
    """A cutover's steps up to the freeze: the bulk copy's snapshot, its plan, staging
    loaded with keys built (`tmp_path / "final"` is left for the frozen snapshot)."""
    from tasks import migrate as m
    from tasks.core.migration import MigrationOptions

    (tmp_path / "bulk").mkdir()
    (tmp_path / "final").mkdir()
    snap = m.snapshot(db, tmp_path / "bulk")
    plan = m.make_plan(snap, MigrationOptions(), pool)
    m.prepare_stage(target, "", plan, "public")
    m.copy_all(snap, target, "", plan, pool)
    m.build_keys(target, "", plan)
    return snap, plan


def test_the_final_validation_queries_again_only_views_over_changed_tables(tmp_path, target):
    """After a catch-up from pages, a view reading only unchanged tables cannot have a
    different result: its pre-freeze report stands (marked here to tell), while a view
    over the changed table, even through another view, is queried on both sides again."""
    import dataclasses

    from tasks import migrate as m

    db = _source(
        tmp_path,
        "CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER NOT NULL);"
        "CREATE TABLE b (id INTEGER PRIMARY KEY, y INTEGER NOT NULL);"
        "INSERT INTO a (x) VALUES (1), (2); INSERT INTO b (y) VALUES (5);"
        "CREATE VIEW over_a AS SELECT sum(x) AS s FROM a;"
        "CREATE VIEW over_over_a AS SELECT s * 2 AS d FROM over_a;"
        "CREATE VIEW over_b AS SELECT sum(y) AS s FROM b;",
    )
    assert m.view_reads(db, "over_over_a") >= {"a"} and "b" not in m.view_reads(db, "over_over_a")
    with m.sqlite_processes(2) as pool:
        snap, plan = _bulk_copied(tmp_path, db, target, pool)
        kept: dict[Any, Any] = {}
        verified = m.validate(snap, target, "", plan, pool, keep=kept)
        assert verified.passed
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO a (x) VALUES (40)")
        snap2 = m.snapshot(db, tmp_path / "final")
        caught = m.catch_up_from_pages(snap, snap2, target, "", plan, pool, verified, kept)
        assert caught is not None and caught.rows == {"a": 1}
        assert caught.views is not None
        marked = tuple(r.model_copy(update={"rows_source": 99}) for r in caught.views)
        final = m.validate_caught_up(
            snap2, target, "", plan, pool, dataclasses.replace(caught, views=marked)
        )
    by_name = {r.name: r for r in final.views}
    assert by_name["over_b"].rows_source == 99  # not queried again
    assert by_name["over_a"].rows_source == 1 and by_name["over_over_a"].rows_source == 1
    assert by_name["over_a"].ok and by_name["over_over_a"].ok
    assert [r.name for r in final.views] == [v.name for v in plan.views]


def test_the_final_validation_reads_again_only_the_rowid_ranges_that_changed(tmp_path, target):
    """After a catch-up, rowid ranges whose digests were equal were not touched and the
    source is a frozen snapshot: the final validation takes their digests as known and
    reads only the range that changed. A table of three ranges, one row changed."""
    from tasks import migrate as m

    n = 2 * m.CHUNK_ROWS + 50_000
    db = _source(tmp_path, "CREATE TABLE log (id INTEGER PRIMARY KEY, s TEXT NOT NULL)")
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO log VALUES (?, 'x')", ((i,) for i in range(1, n + 1)))
    with m.sqlite_processes(2) as pool:
        _snap, plan = _bulk_copied(tmp_path, db, target, pool)
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE log SET s = 'changed' WHERE id = 7")
        snap2 = m.snapshot(db, tmp_path / "final")
        ranges = [r for _t, r in m.digest_parts(snap2, plan)]
        caught = m.catch_up(snap2, target, "", plan, pool)
        assert caught.rows == {"log": 1} and len(ranges) == 3
        assert sorted(r for _name, r in caught.parts) == ranges[1:]  # not the first
        final = m.validate(
            snap2, target, "", plan, pool, known=caught.known, known_parts=caught.parts
        )
    assert final.passed and final.tables[0].rows_target == n
    with psycopg.connect(target) as pg:
        got = pg.execute("SELECT s FROM shipyard_stage.log WHERE id = 7").fetchone()
    assert got == ("changed",)
