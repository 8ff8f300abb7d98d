"""The migration's pure decisions: reading SQLite DDL, translating expressions, the plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest

from tasks.core.datetext import HeldText, held_text
from tasks.core.migration import (
    ROWID_BUCKET,
    MigrationOptions,
    PlanColumn,
    PlanTable,
    Refusal,
    SourceColumn,
    SourceFK,
    SourceIndex,
    SourceSchema,
    SourceTable,
    SourceTrigger,
    SourceView,
    bucket_digest_sql,
    bucket_total,
    bucket_width,
    bucketed,
    build_plan,
    copy_select,
    create_table_sql,
    index_sql,
    jsonb_text,
    key_walk,
    loose_value,
    pg_bucket_from,
    pg_digest_sql,
    pg_row_hashes_sql,
    plan_markdown,
    post_load_sql,
    rowid_bucket_range,
    rowid_bucket_sql,
    source_line_sql,
    stream_digested,
)
from tasks.core.sqlddl import (
    Untranslatable,
    concat_separators,
    parse_create_index,
    parse_create_table,
    tokenize,
    translate,
)
from tasks.core.sqlmap import ColumnStats, classes_from_extremes
from tasks.core.writeback import (
    back_expr,
    back_insert_sql,
    back_select_sql,
)


def tr(sql: str, names: dict[str, str] | None = None, **kw) -> str:
    names = names or {}
    return translate(tokenize(sql), lambda n: names.get(n.lower()), **kw)


def test_identifiers_are_requoted_with_their_real_spelling_and_never_injected():
    assert tr("Party IN ('D', 'R')", {"party": "party"}) == "\"party\" IN ('D', 'R')"
    assert tr('"x""; DROP TABLE t; --" > 1') == '"x""; DROP TABLE t; --" > 1'
    assert tr("[my col] == `other`") == '"my col" = "other"'


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("ifnull(a, 0)", 'coalesce("a", 0)'),
        ("name LIKE 'a%'", "\"name\" ILIKE 'a%'"),
        ("max(a, b)", 'GREATEST("a", "b")'),
        ("length(body) < 1000", 'length("body") < 1000'),
        ("CAST(x AS INTEGER)", 'CAST("x" AS bigint)'),
        ("sum(position = 'yea')", "sum((\"position\" = 'yea')::int)"),
        ("total(x)", 'coalesce(sum("x"), 0)'),
        ("a IS b", '"a" IS NOT DISTINCT FROM "b"'),
        ("SELECT a FROM t LIMIT 5, 10", 'SELECT "a" FROM "t" LIMIT 10 OFFSET 5'),
        (
            "SELECT (SELECT a FROM t LIMIT 1, 2) LIMIT 3",
            'SELECT(SELECT "a" FROM "t" LIMIT 2 OFFSET 1) LIMIT 3',
        ),
        ("iif(a > 1, 'big', 'small')", "CASE WHEN \"a\" > 1 THEN 'big' ELSE 'small' END"),
        ("iif(qty, 1, 0)", 'CASE WHEN ("qty") <> 0 THEN 1 ELSE 0 END'),
        ("round(price, 2)", 'round(("price")::numeric, 2)'),  # half away from zero
        ("round(price)", 'round(("price")::numeric)'),
        # SQLite divides by zero to NULL: the divisor is NULL where it is 0
        ("a / t.b + 1", '"a" / nullif("t"."b", 0) + 1'),
        ("a / (b - c) / 2", '"a" / nullif(("b" - "c"), 0) / 2'),
        ("sum(a) / count(b)", 'sum("a") / nullif(count("b"), 0)'),
        ("a / CAST(b AS REAL)", '"a" / nullif(CAST("b" AS double precision), 0)'),
        ("a IS NOT 3", '"a" IS DISTINCT FROM 3'),
        ("a IS NOT NULL AND b IS NULL", '"a" IS NOT NULL AND "b" IS NULL'),
        ("substr(code, -3)", 'right("code", 3)'),  # SQLite counts a negative start from the end
        ("substr(code, 2, 3)", 'substr("code", 2, 3)'),
        # a backslash is a literal in SQLite's LIKE, an escape in PostgreSQL's
        ("path LIKE 'C:\\%'", "\"path\" ILIKE 'C:\\%' ESCAPE ''"),
        ("path LIKE 'a!%' ESCAPE '!'", "\"path\" ILIKE 'a!%' ESCAPE '!'"),
        ("total(position = 'yea')", "coalesce(sum((\"position\" = 'yea')::int), 0)"),
        ("CURRENT_TIMESTAMP", "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"),
        ("datetime('now')", "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"),
        ("x'0aff'", "'\\x0aff'::bytea"),
        ("date('now')", "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        ("TIME('NOW')", "to_char(now() AT TIME ZONE 'UTC', 'HH24:MI:SS')"),
        (
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
        ),
        (  # literal text is quoted for to_char: no letter becomes a pattern
            "strftime('at %H o''clock: 100%%', 'now')",
            "to_char(now() AT TIME ZONE 'UTC', '\"at \"HH24\" o''clock: 100%\"')",
        ),
        (
            "strftime('%s', 'now')",
            "floor(extract(epoch FROM now() AT TIME ZONE 'UTC'))::bigint::text",
        ),
    ],
)
def test_translation(sqlite, postgres):
    assert tr(sqlite) == postgres


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("datetime('now')", "date_trunc('second', now() AT TIME ZONE 'UTC')"),
        ("date('now')", "(now() AT TIME ZONE 'UTC')::date"),
        (
            "strftime('%Y-%m-%d %H:%M:%f', 'now')",
            "CAST(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') AS timestamp)",
        ),
    ],
)
def test_now_for_a_timestamp_or_date_column_is_a_timestamp(sqlite, postgres):
    assert tr(sqlite, now_as_text=False) == postgres


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        (
            "row_number() OVER (PARTITION BY a ORDER BY b DESC, c)",
            'row_number() OVER (PARTITION BY "a" ORDER BY "b" DESC NULLS LAST, "c" NULLS FIRST)',
        ),
        (
            "sum(x) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
            'sum("x") OVER (ORDER BY "id" NULLS FIRST ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)',
        ),
        ("count(*) FILTER (WHERE x > 1)", 'count(*) FILTER (WHERE "x" > 1)'),
        (  # the user's own NULLS order stays; frame words elsewhere are columns
            "SELECT rows, current FROM t ORDER BY first NULLS LAST LIMIT 2",
            'SELECT "rows", "current" FROM "t" ORDER BY "first" NULLS LAST LIMIT 2',
        ),
    ],
)
def test_windows_and_null_order_read_as_in_sqlite(sqlite, postgres):
    assert tr(sqlite) == postgres


def test_a_named_window_is_refused():
    with pytest.raises(Untranslatable):
        tr("rank() OVER w")


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("date(at)", "to_char(\"at\", 'YYYY-MM-DD')"),
        ("strftime('%Y-%m', e.at)", 'to_char("e"."at", \'YYYY-MM\')'),
        ("strftime('%s', at)", 'floor(extract(epoch FROM "at"))::bigint::text'),
        ("strftime('%w', at)", 'extract(dow FROM "at")::int::text'),
        ("julianday(at)", '(extract(julian FROM "at") - 0.5)::float8'),
        (
            "datetime(ts, 'unixepoch', '+1 hour')",
            "to_char(((to_timestamp(\"ts\") AT TIME ZONE 'UTC') + interval '1 hour'),"
            " 'YYYY-MM-DD HH24:MI:SS')",
        ),
        (
            "unixepoch(at, '+1 day')",
            "floor(extract(epoch FROM (\"at\" + interval '1 day')))::bigint",
        ),
        (
            "datetime(at, '+1.5 days', 'start of month', '-3 hours')",
            "to_char((date_trunc('month', (\"at\" + interval '1.5 day')) + interval '-3 hour'),"
            " 'YYYY-MM-DD HH24:MI:SS')",
        ),
        (  # compared with the column: a timestamp, as the texts compared in SQLite
            "at > datetime('now', '-7 days')",
            "\"at\" > date_trunc('second', (now() AT TIME ZONE 'UTC' + interval '-7 day'))",
        ),
        (
            "date('now', 'start of month') <= e.at",
            "(date_trunc('month', now() AT TIME ZONE 'UTC'))::date <= \"e\".\"at\"",
        ),
        ("x = date(at)", '"x" = to_char("at", \'YYYY-MM-DD\')'),
    ],
)
def test_date_functions_read_timestamp_columns(sqlite, postgres):
    assert tr(sqlite, column_types={"at": "timestamp", "ts": "bigint"}) == postgres


def test_json_extract_reads_jsonb_columns_as_sqlite_returns_values():
    types = {"payload": "jsonb"}
    node = '("e"."payload" #> \'{"a","0","b c"}\')'
    assert tr("json_extract(e.payload, '$.a[0].\"b c\"')", column_types=types) == (
        f"(CASE jsonb_typeof({node}) WHEN 'boolean' THEN ({node})::boolean::int::text"
        f" ELSE {node} #>> '{{}}' END)"
    )
    assert tr("json_extract(payload, '$.n') > 5", column_types=types).endswith(")::numeric > 5")
    assert tr("-1 <= json_extract(payload, '$.n')", column_types=types).startswith("- 1 <= ((CASE")
    quoted = tr("json_extract(payload, '$.it''s')", column_types=types)
    assert "'{\"it''s\"}'" in quoted  # the quote is doubled inside the SQL literal
    arrow = tr("e.payload ->> 'a.b' = 'x'", column_types=types)
    assert arrow == tr("json_extract(e.payload, '$.\"a.b\"') = 'x'", column_types=types)
    assert "'{\"2\"}'" in tr("payload ->> 2", column_types=types)
    assert tr("payload ->> '$.n' > 1", column_types=types).endswith("::numeric > 1")
    assert tr("payload -> 'a'", column_types=types) == '(("payload" #> \'{"a"}\'))::text'
    for bad in (
        "json_extract(payload, '$.a', '$.b')",
        "json_extract(body, '$.a')",
        "payload -> 'a' -> 'b'",  # chained: the second arrow reads no column
        "body -> 'a'",
        "(payload) ->> 'a'",
    ):
        with pytest.raises(Untranslatable):
            tr(bad, column_types=types)


def test_order_by_collate_nocase_folds_ascii_like_sqlite():
    types = {"name": "text", "handle": "citext", "n": "bigint"}
    assert tr("SELECT name FROM t ORDER BY t.name COLLATE NOCASE DESC", column_types=types) == (
        'SELECT "name" FROM "t" ORDER BY lower("t"."name") DESC NULLS LAST'
    )
    assert tr("SELECT 1 ORDER BY handle COLLATE NOCASE, n", column_types=types) == (
        'SELECT 1 ORDER BY "handle" NULLS FIRST, "n" NULLS FIRST'
    )
    for bad in (  # a comparison would need both sides folded; numbers ignore collations
        "name COLLATE NOCASE = 'Abc'",
        "SELECT 1 ORDER BY n COLLATE NOCASE",
        "SELECT 1 ORDER BY upper(name) COLLATE NOCASE",
    ):
        with pytest.raises(Untranslatable):
            tr(bad, column_types=types)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("code GLOB '[A-Z]*'", "\"code\" ~ '^[A-Z].*$'"),
        ("t.code NOT GLOB 'a?b.c'", '"t"."code" !~ \'^a.b\\.c$\''),
        ("code GLOB '[^0-9]x[]^-]'", "\"code\" ~ '^[^0-9]x[\\]\\^-]$'"),
        ("handle GLOB 'it''s (1)*'", "\"handle\"::text ~ '^it''s \\(1\\).*$'"),
    ],
)
def test_glob_is_an_anchored_case_sensitive_regex(sqlite, postgres):
    types = {"code": "text", "handle": "citext", "n": "bigint"}
    assert tr(sqlite, column_types=types) == postgres


@pytest.mark.parametrize("sql", ["n GLOB '1*'", "code GLOB pat", "code GLOB '[a'"])
def test_glob_without_a_faithful_regex_is_refused(sql):
    with pytest.raises(Untranslatable):
        tr(sql, column_types={"code": "text", "n": "bigint"})


def test_json_array_length_and_type_read_jsonb_columns():
    types = {"payload": "jsonb"}
    node = '("payload" #> \'{"tags"}\')'
    assert tr("json_array_length(payload, '$.tags')", column_types=types) == (
        f"(CASE WHEN {node} IS NULL THEN NULL WHEN jsonb_typeof({node}) = 'array'"
        f" THEN jsonb_array_length({node}) ELSE 0 END)"
    )
    assert "WHEN 'string' THEN 'text'" in tr("json_type(payload)", column_types=types)
    with pytest.raises(Untranslatable):
        tr("json_type(body, '$.a')", column_types=types)


def test_boolean_columns_compare_with_true_false():
    assert tr("active = 1", booleans=frozenset({"active"})) == '"active" = TRUE'


@pytest.mark.parametrize(
    "sql",
    [
        "code GLOB '[A-Z]*'",
        "json_extract(d, '$.a')",
        "d -> 'a'",
        "random()",
        "substr(code, -3, 2)",
        "date('now', '+1.5 months')",  # SQLite adds a month, then half of 30 days
        "date(created)",  # not a timestamp column: its text form depends on the values
        "strftime('%W', 'now')",  # no to_char equivalent (weeks start on Monday)
        "datetime('now', 'localtime')",
        "date(e.at, 'weekday 7')",
        "strftime(fmt, 'now')",
    ],
)
def test_no_faithful_equivalent_is_refused(sql):
    with pytest.raises(Untranslatable):
        tr(sql)


def test_create_table_reading():
    ddl = parse_create_table(
        """CREATE TABLE t (
          id INTEGER PRIMARY KEY,
          "Name" TEXT COLLATE NOCASE CHECK (length("Name") > 0), -- a comment, with a comma
          [total] REAL GENERATED ALWAYS AS (id * 2) STORED,
          CONSTRAINT c CHECK (id > 0), UNIQUE ("Name"))"""
    )
    cols = {c.name: c for c in ddl.columns}
    assert list(cols) == ["id", "Name", "total"]
    assert cols["Name"].collate == "NOCASE" and len(cols["Name"].checks) == 1
    assert cols["total"].generated and len(ddl.checks) == 1


def test_create_index_reading():
    ix = parse_create_index(
        "CREATE UNIQUE INDEX i ON t (lower(name), created DESC, code COLLATE NOCASE) WHERE active = 1"
    )
    assert ix.unique and [t.desc for t in ix.terms] == [False, True, False]
    assert ix.terms[2].collate == "NOCASE" and [x.text for x in ix.where or ()] == [
        "active",
        "=",
        "1",
    ]


@pytest.mark.parametrize(
    "doc",
    [
        '{"b": 1, "a": [1.50, 2e2, "x\\u00e9"], "a": "dup"}',
        "[]",
        '{"aa": null, "b": true, "n": -0.0}',
        '"\\u0001\\n"',
    ],
)
def test_jsonb_text_matches_postgres_rules(doc):
    out = jsonb_text(doc)
    assert json.loads(out) == json.loads(doc) or isinstance(json.loads(doc), dict)
    if doc.startswith('{"b"'):
        assert out == '{"a": "dup", "b": 1}'  # last duplicate wins; keys by length then bytes


def _schema() -> SourceSchema:
    cols = (
        SourceColumn(name="id", declared="INTEGER", notnull=False, default=None, pk=1),
        SourceColumn(name="name", declared="TEXT", notnull=True, default=None, pk=0),
        SourceColumn(name="flag", declared="BOOLEAN", notnull=True, default="1", pk=0),
        SourceColumn(name="at", declared="TEXT", notnull=True, default="CURRENT_TIMESTAMP", pk=0),
    )
    parent = SourceTable(
        name="p",
        sql="CREATE TABLE p (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL COLLATE NOCASE,"
        " flag BOOLEAN NOT NULL DEFAULT 1, at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, CHECK (flag IN (0, 1)))",
        columns=cols,
        indexes=(
            SourceIndex(
                name="p_flag",
                unique=False,
                origin="c",
                partial=True,
                sql="CREATE INDEX p_flag ON p (at DESC) WHERE flag = 1",
                columns=("at",),
            ),
            SourceIndex(
                name="sqlite_autoindex_p_1",
                unique=True,
                origin="u",
                partial=False,
                sql=None,
                columns=("name",),
            ),
        ),
        autoincrement=True,
        rows=3,
        sequence=10,
        max_key=7,
    )
    child = SourceTable(
        name="c",
        sql="CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id) ON DELETE CASCADE)",
        columns=(
            SourceColumn(name="id", declared="INTEGER", notnull=False, default=None, pk=1),
            SourceColumn(name="p_id", declared="INTEGER", notnull=False, default=None, pk=0),
        ),
        fks=(
            SourceFK(
                id=0,
                ref_table="p",
                from_cols=("p_id",),
                to_cols=("id",),
                on_update="NO ACTION",
                on_delete="CASCADE",
            ),
        ),
        rows=2,
        max_key=2,
    )
    return SourceSchema(
        tables=(parent, child),
        views=(SourceView(name="v", sql="CREATE VIEW v AS SELECT name FROM p WHERE flag = 1"),),
        triggers=(SourceTrigger(name="audit", table="p", sql="CREATE TRIGGER audit ..."),),
    )


STATS = {
    ("p", "id"): ColumnStats(integer=3),
    ("p", "name"): ColumnStats(text=3),
    ("p", "flag"): ColumnStats(integer=3, all_bool=True),
    ("p", "at"): ColumnStats(text=3, all_iso_datetime=True),
    ("c", "id"): ColumnStats(integer=2),
    ("c", "p_id"): ColumnStats(integer=2),
}


def test_plan_decides_everything_as_data():
    plan = build_plan(
        _schema(), STATS, options=MigrationOptions(accept=frozenset({"audit:trigger"}))
    )
    p = plan.table("p")
    assert [(c.name, c.pg_type, c.identity) for c in p.columns] == [
        ("id", "bigint", True),
        ("name", "citext", False),
        ("flag", "boolean", False),
        ("at", "text", False),
    ]
    assert p.restart_with == 11  # after sqlite_sequence, not after max(id)
    assert plan.needs_citext and not plan.blocking
    ddl = create_table_sql(p, "stage")
    assert (
        '"flag" boolean NOT NULL DEFAULT true' in ddl and 'CHECK ("flag" IN (FALSE, TRUE))' in ddl
    )
    assert "to_char(now() AT TIME ZONE 'UTC'" in ddl
    post = post_load_sql(p, "stage")
    assert post[0] == 'CREATE UNIQUE INDEX "p_pkey" ON "stage"."p" ("id")'
    assert post[1] == 'CREATE UNIQUE INDEX "p_name_key" ON "stage"."p" ("name")'
    assert post[2] == 'CREATE INDEX "p_flag" ON "stage"."p" ("at" DESC) WHERE "flag" = TRUE'
    assert (
        post[3]
        == 'ALTER TABLE "stage"."p" ADD CONSTRAINT "p_pkey" PRIMARY KEY USING INDEX "p_pkey"'
    )
    assert post[4].endswith('ADD CONSTRAINT "p_name_key" UNIQUE USING INDEX "p_name_key"')
    assert post[-1].endswith("RESTART WITH 11")
    taken = {"t_pkey"}  # a user's index may already hold PostgreSQL's default name
    long = "x" * 60
    assert index_sql(p.model_copy(update={"name": "t"}), "s", taken)[0][0] == "t_pkey1"
    names = [n for n, _ in index_sql(p.model_copy(update={"name": long}), "s", set())]
    assert all(len(n.encode()) <= 63 for n in names) and names[0].endswith("_pkey")
    fk = plan.table("c").fks[0]
    assert "ON DELETE CASCADE DEFERRABLE" in fk.sql and not fk.not_valid
    assert plan.views[0].select_sql == 'SELECT "name" FROM "p" WHERE "flag" = TRUE'
    assert "coalesce(" in copy_select(p) and "'Infinity'" not in copy_select(p)
    assert copy_select(p).startswith("SELECT printf('")
    assert "audit:trigger" in plan_markdown(plan, "x.db")


def test_triggers_and_orphans_block_by_key_until_accepted():
    orphans = Refusal(table="c", column=None, code="fk-orphans-0", count=1, rowids=(2,))
    plan = build_plan(_schema(), STATS, (orphans,))
    assert sorted(f.key for f in plan.blocking) == ["audit:trigger", "c:fk-orphans-0"]
    accepted = build_plan(
        _schema(),
        STATS,
        (orphans,),
        MigrationOptions(accept=frozenset({"audit:trigger", "c:fk-orphans-0"})),
    )
    assert not accepted.blocking and accepted.table("c").fks[0].sql.endswith("NOT VALID")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ((5, "integer", "integer", 0, "INTEGER"), [5, 0, 0, 0]),
        ((5, "integer", "real", 2, "NUMERIC"), [3, 2, 0, 0]),  # numbers only: count the reals
        ((5, None, "text", None, "TEXT"), [0, 0, 5, 0]),  # TEXT stores no numbers
        ((5, None, "blob", None, "TEXT"), None),  # text and blobs: count each
        ((5, None, "real", None, "REAL"), [0, 5, 0, 0]),  # REAL stores no integers
        ((5, "text", "text", 0, "BLOB"), [0, 0, 5, 0]),
        ((5, "integer", "text", 0, "INTEGER"), None),  # numbers and text: count each
        ((0, "null", "null", None, "INTEGER"), [0, 0, 0, 0]),  # every value NULL
    ],
)
def test_storage_classes_from_the_extremes(facts, expected):
    assert classes_from_extremes(*facts) == expected


def test_digests_hash_the_copy_text_only_where_it_is_one_to_one():
    plan = build_plan(_schema(), STATS, ())
    p, c = plan.table("p"), plan.table("c")
    assert stream_digested(p) and stream_digested(c)
    sql = pg_digest_sql(p, "stage", (1, 10))
    assert "string_agg(l, '')" in sql and "|| E'\\n' AS l" in sql and '"id" BETWEEN 1 AND 10' in sql
    assert sql.endswith('ORDER BY "id") lines')  # lines in key order, joined as they come
    assert """replace("name"::text, '"', '""')""" in sql  # citext rendered as the COPY quoted it
    # a double column is rendered in a canonical form instead (its IEEE bytes)
    stats = {**STATS, ("c", "p_id"): ColumnStats(real=2)}
    schema = _schema()
    child = schema.tables[1]
    cols = (child.columns[0], child.columns[1].model_copy(update={"declared": "REAL"}))
    schema = schema.model_copy(
        update={"tables": (schema.tables[0], child.model_copy(update={"columns": cols, "fks": ()}))}
    )
    c2 = build_plan(schema, stats, ()).table("c")
    assert not stream_digested(c2)
    assert "shipyard_double(" in source_line_sql(c2)
    assert "float8send" in pg_digest_sql(c2, "stage", None)


@pytest.mark.parametrize(
    ("cell", "loose"),
    [
        (7, "7"),
        (-(2**53) + 1, str(-(2**53) + 1)),
        (2**53, "9.00719925474e+15"),  # beyond a double's exact integers: 12 digits
        (7.0, "7"),  # SQLite's REAL sum equals PostgreSQL's bigint sum
        (Decimal("2.50000000000001"), "2.5"),
        (True, "1"),
        (None, "\\N"),
        ("yea", "yea"),
        (b"\x00\xff", "00ff"),
    ],
)
def test_view_cells_compare_loosely_across_engines(cell, loose):
    assert loose_value(cell) == loose


@pytest.mark.parametrize(
    ("sqlite_cell", "postgres_cell"),
    [
        ('{"zeta":1,"a":[1,2.50]}', {"a": [1, 2.5], "zeta": 1}),  # jsonb as psycopg parses it
        ('{"zeta":1,"a":[1,2.50]}', '{"a": [1, 2.50], "zeta": 1}'),  # jsonb as text
        ("2024-01-02T03:04:05.123", datetime(2024, 1, 2, 3, 4, 5, 123000)),
        ("2024-01-02 03:04", datetime(2024, 1, 2, 3, 4)),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))),
        ("09:30", time(9, 30)),
        ("18:45:10.5", time(18, 45, 10, 500000)),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", UUID("0f8fad5b-d9cb-469f-a165-70867728950e")),
    ],
)
def test_view_cells_read_text_as_the_value_postgresql_returns(sqlite_cell, postgres_cell):
    assert loose_value(sqlite_cell) == loose_value(postgres_cell)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ('{"a": 1}', {"a": 2}),
        ('{"a": "1"}', {"a": 1}),  # a string is not a number
        ('{"a": true}', {"a": 1}),
        ('{"a": null}', {}),
        ("[1, 2]", [2, 1]),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 6)),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).replace(hour=4)),
        ("09:30", time(9, 31)),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", UUID(int=1)),
        ("{not json", {"not": "json"}),
    ],
)
def test_view_cells_that_differ_still_differ(one, other):
    assert loose_value(one) != loose_value(other)


def test_copy_lines_of_wide_tables_split_printf_and_quote_like_csv():
    """SQLite takes 127 arguments per call: 130 columns need two printf() calls, and
    the line must be what Python's csv module writes (the COPY parser's dialect)."""
    import csv
    import io
    import sqlite3

    n = 130
    names = [f"c{i}" for i in range(n)]
    cols = tuple(
        SourceColumn(name=c, declared="TEXT", notnull=i % 2 == 0, default=None, pk=0)
        for i, c in enumerate(names)
    )
    ddl = (
        "CREATE TABLE w ("
        + ", ".join(f"{c} TEXT{' NOT NULL' * (i % 2 == 0)}" for i, c in enumerate(names))
        + ")"
    )
    table = SourceTable(name="w", sql=ddl, columns=cols, rows=1)
    plan = build_plan(
        SourceSchema(tables=(table,)), {("w", c): ColumnStats(text=1) for c in names}, ()
    )
    sql = copy_select(plan.table("w"))
    assert sql.count("printf('") == 2 and '"%w"' in sql
    values = ['a"b,\nc' if i % 3 else "" for i in range(n)]
    values[1] = None  # a nullable column's NULL is the one empty unquoted field
    conn = sqlite3.connect(":memory:")
    conn.execute(ddl)
    conn.execute(f"INSERT INTO w VALUES ({', '.join('?' * n)})", values)
    line = conn.execute(sql).fetchone()[0]
    assert next(csv.reader(io.StringIO(line))) == [v if v is not None else "" for v in values]
    assert line.split(",", 3)[1] == ""  # NULL: unquoted and empty
    assert line.startswith('"",,')  # the empty string stays quoted


def test_foreign_keys_remember_when_sqlite_checks_them():
    """PRAGMA foreign_key_list does not say whether a key is deferred: the DDL does."""
    ddl = parse_create_table(
        'CREATE TABLE c (a integer REFERENCES "P" (id) ON DELETE SET NULL'
        " DEFERRABLE INITIALLY DEFERRED NOT NULL,"
        " b integer NOT NULL REFERENCES p (id) NOT DEFERRABLE INITIALLY DEFERRED,"
        " d integer REFERENCES p DEFERRABLE,"
        ' CONSTRAINT two FOREIGN KEY (a, "B") REFERENCES q (x, y) DEFERRABLE INITIALLY DEFERRED)'
    )
    assert [(f.columns, f.parent, f.deferred) for f in ddl.foreign_keys] == [
        (("a",), "p", True),
        (("b",), "p", False),
        (("d",), "p", False),
        (("a", "b"), "q", True),
    ]


def _fk(id_: int, column: str) -> SourceFK:
    return SourceFK(
        id=id_,
        ref_table="mom",
        from_cols=(column,),
        to_cols=("id",),
        on_update="NO ACTION",
        on_delete="NO ACTION",
    )


def test_deferred_keys_stay_deferred_in_the_plan():
    sql = (
        "CREATE TABLE kid (id INTEGER PRIMARY KEY, a INTEGER REFERENCES mom (id)"
        " DEFERRABLE INITIALLY DEFERRED, b INTEGER REFERENCES mom (id))"
    )
    kid = SourceTable(
        name="kid",
        sql=sql,
        columns=(
            SourceColumn(name="id", declared="INTEGER", notnull=False, default=None, pk=1),
            SourceColumn(name="a", declared="INTEGER", notnull=False, default=None, pk=0),
            SourceColumn(name="b", declared="INTEGER", notnull=False, default=None, pk=0),
        ),
        indexes=(),
        fks=(_fk(0, "b"), _fk(1, "a")),  # as PRAGMA numbers them: the last declared is 0
        rows=0,
    )
    mom = SourceTable(
        name="mom",
        sql="CREATE TABLE mom (id INTEGER PRIMARY KEY)",
        columns=(SourceColumn(name="id", declared="INTEGER", notnull=False, default=None, pk=1),),
        indexes=(),
        fks=(),
        rows=0,
    )
    plan = build_plan(SourceSchema(tables=(mom, kid), views=(), triggers=()), {})
    keys = {fk.name: fk.sql for t in plan.tables for fk in t.fks}
    assert keys["kid_fk1"].endswith("DEFERRABLE INITIALLY DEFERRED")
    assert keys["kid_fk0"].endswith("DEFERRABLE INITIALLY IMMEDIATE")


def test_a_json_valid_check_makes_a_text_column_json():
    """Django declares a JSONField as `text CHECK (JSON_VALID(x) OR x IS NULL)`."""
    ddl = parse_create_table(
        'CREATE TABLE p (id integer, "data" text NOT NULL CHECK ((JSON_VALID("data") OR "data"'
        " IS NULL)), other text, extra text, CHECK (json_valid(extra)), CHECK (length(other)))"
    )
    assert ddl.json_checked() == {"data", "extra"}
    check = translate(
        tokenize('(JSON_VALID("data") OR "data" IS NULL)'),
        lambda n: n,
        column_types={"data": "jsonb"},
    )
    assert check == '(("data" IS NOT NULL) OR "data" IS NULL)'
    assert translate(
        tokenize("sum(json_valid(p.data))"), lambda n: n, column_types={"data": "jsonb"}
    ) == ('sum((("p"."data" IS NOT NULL))::int)')
    with pytest.raises(Untranslatable, match="json_valid"):
        translate(tokenize("json_valid(other)"), lambda n: n, column_types={"data": "jsonb"})


def test_group_concat_translates_with_distinct_and_names_its_separators():
    select = tokenize(
        "SELECT g, group_concat(name), group_concat(DISTINCT name),"
        " group_concat(name, ' | ') FROM t GROUP BY g"
    )
    assert translate(select, lambda n: n) == (
        'SELECT "g", string_agg(("name")::text, \',\'),'
        " string_agg(DISTINCT (\"name\")::text, ','),"
        ' string_agg(("name")::text, \' | \') FROM "t" GROUP BY "g"'
    )
    assert concat_separators(select) == (",", " | ")
    assert concat_separators(tokenize("SELECT group_concat(a, b) FROM t")) is None
    assert concat_separators(tokenize("SELECT a FROM t")) == ()


def test_unnamed_subqueries_in_from_get_a_name():
    """SQLite lets a FROM subquery go unnamed (the usual way to order group_concat's
    input); PostgreSQL 15 refuses that."""
    sql = translate(
        tokenize(
            "SELECT g FROM (SELECT * FROM t ORDER BY name) GROUP BY g UNION"
            " SELECT x FROM a, (SELECT 1 AS x) s JOIN (SELECT 2 AS y) AS u ON 1"
            " WHERE x IN (SELECT id FROM (SELECT id FROM b))"
        ),
        lambda n: n,
    )
    assert sql.count("shipyard_subquery") == 2
    assert 'FROM (SELECT * FROM "t" ORDER BY "name" NULLS FIRST) AS "shipyard_subquery_1"' in sql
    assert '(SELECT "id" FROM "b") AS "shipyard_subquery_2"' in sql
    assert '(SELECT 1 AS "x") "s"' in sql and '(SELECT 2 AS "y") AS "u"' in sql


def test_random_id_defaults_become_uuid_bytes():
    def t(sql: str) -> str:
        return translate(tokenize(sql), lambda n: n)

    assert (
        t("lower(hex(randomblob(16)))") == "lower(upper(replace(gen_random_uuid()::text, '-', '')))"
    )
    assert t("randomblob(16)") == "uuid_send(gen_random_uuid())"
    for other in ("hex(randomblob(8))", "randomblob(32)", "hex(name)", "hex(1)"):
        with pytest.raises(Untranslatable):
            t(other)


@pytest.mark.parametrize(
    ("sql", "ordered"),
    [
        ("SELECT g, group_concat(n) FROM (SELECT * FROM t ORDER BY n DESC) GROUP BY g", True),
        (
            "SELECT g, group_concat(n) FROM (SELECT g, t.n AS n FROM t ORDER BY g, n) s GROUP BY g",
            True,
        ),
        ("SELECT g, group_concat(n) FROM (SELECT g, n FROM t ORDER BY score) GROUP BY g", False),
        ("SELECT g, group_concat(n) FROM (SELECT g, n FROM t ORDER BY n) s, u GROUP BY g", False),
        ("SELECT g, group_concat(n) FROM (SELECT g, n FROM t ORDER BY lower(n)) GROUP BY g", False),
        ("SELECT g, (SELECT group_concat(x) FROM u) FROM (SELECT g FROM t ORDER BY g)", False),
        ("SELECT g, group_concat(DISTINCT n) FROM (SELECT * FROM t ORDER BY n) GROUP BY g", False),
    ],
)
def test_group_concat_over_an_ordered_subquery_keeps_its_order(sql, ordered):
    """Only where every ORDER BY term is a column the subquery hands on, and it is the
    only FROM item, does string_agg() get that order."""
    assert ("ORDER BY" in translate(tokenize(sql), lambda n: n).split("FROM")[0]) == ordered


def _uuid_table(
    name: str, *cols: tuple[str, str, int], fks: tuple[SourceFK, ...] = ()
) -> SourceTable:
    body = ", ".join(f"{c} {d}" for c, d, _pk in cols)
    return SourceTable(
        name=name,
        sql=f"CREATE TABLE {name} ({body})",
        columns=tuple(
            SourceColumn(name=c, declared=d, notnull=False, default=None, pk=pk)
            for c, d, pk in cols
        ),
        fks=fks,
    )


def _ref(parent: str, column: str, to: str | None = None) -> SourceFK:
    return SourceFK(
        id=0,
        ref_table=parent,
        from_cols=(column,),
        to_cols=(to,),
        on_update="NO ACTION",
        on_delete="NO ACTION",
    )


def test_a_foreign_key_gives_both_ends_one_type_uuid_or_text():
    """owner.id and item.owner_id hold UUID hex: both uuid. tag.id holds something
    else, so tag_link.tag_id stays text, and so does link.parent (CHAR(32) UUIDs,
    tied to tag_link.tag_id through another key): a key between uuid and text could
    not be created. A policy keeps a column text the same way."""
    hexes = ColumnStats(text=2, all_uuid_hex=True)
    schema = SourceSchema(
        tables=(
            _uuid_table("owner", ("id", "CHAR(32)", 1)),
            _uuid_table(
                "item",
                ("id", "INTEGER", 1),
                ("owner_id", "CHAR(32)", 0),
                fks=(_ref("owner", "owner_id", None),),  # implicit: the parent's primary key
            ),
            _uuid_table("tag", ("id", "CHAR(32)", 1)),
            _uuid_table("tag_link", ("tag_id", "CHAR(32)", 1), fks=(_ref("tag", "tag_id", "id"),)),
            _uuid_table(
                "link", ("parent", "CHAR(32)", 0), fks=(_ref("tag_link", "parent", "tag_id"),)
            ),
        )
    )
    stats = {
        ("owner", "id"): hexes,
        ("item", "owner_id"): hexes,
        ("tag", "id"): ColumnStats(text=2),  # upper-case hex, say
        ("tag_link", "tag_id"): hexes,
        ("link", "parent"): hexes,
    }
    plan = build_plan(schema, stats)
    types = {(t.name, c.name): c.pg_type for t in plan.tables for c in t.columns}
    assert types[("owner", "id")] == types[("item", "owner_id")] == "uuid"
    assert types[("tag", "id")] == types[("tag_link", "tag_id")] == "text"
    assert types[("link", "parent")] == "text"
    tied = {f.key: f.message for f in plan.findings if f.code == "uuid-text"}
    assert set(tied) == {"tag_link.tag_id:uuid-text", "link.parent:uuid-text"}
    assert "tag.id" in tied["link.parent:uuid-text"]
    assert not plan.blocking
    by_policy = build_plan(schema, stats, options=MigrationOptions(policies={"owner.id": "text"}))
    types = {(t.name, c.name): c.pg_type for t in by_policy.tables for c in t.columns}
    assert types[("item", "owner_id")] == "text"


def test_uuid_and_interval_columns_copy_and_compare_exactly():
    """uuid reads SQLite's 32 hex digits as they are and renders them back without
    dashes (so a table of them is still digested from its COPY text); an interval
    is copied and compared as whole microseconds, from integers or datetimes."""
    table = _uuid_table(
        "t", ("id", "INTEGER", 1), ("u", "CHAR(32)", 0), ("d", "bigint", 0), ("s", "DATETIME", 0)
    )
    stats = {
        ("t", "u"): ColumnStats(text=1, all_uuid_hex=True),
        ("t", "d"): ColumnStats(integer=1),
        ("t", "s"): ColumnStats(text=1, all_iso_datetime=True),
    }
    plan = build_plan(
        SourceSchema(tables=(table,)),
        stats,
        options=MigrationOptions(policies={"t.d": "interval", "t.s": "interval"}),
    )
    cols = {c.name: c for c in plan.tables[0].columns}
    assert cols["u"].pg_copy == "coalesce(replace(\"u\"::text, '-', ''), '')"
    assert cols["d"].pg_canon == '(extract(epoch FROM "d") * 1000000)::bigint::text'
    assert "' microseconds'" in cols["s"].copy_arg and cols["s"].canon_kind == "timestamp"
    assert not stream_digested(plan.tables[0])  # the interval text is not PostgreSQL's
    empty = build_plan(
        SourceSchema(tables=(table,)),
        {("t", "u"): ColumnStats(text=1, all_uuid_hex=True)},
        options=MigrationOptions(policies={"t.d": "interval", "t.s": "interval"}),
    )
    cols = {c.name: c for c in empty.tables[0].columns}  # no values yet: by the declaration
    assert "strftime" in cols["s"].copy_arg and "strftime" not in cols["d"].copy_arg
    assert '"u" uuid' in create_table_sql(plan.tables[0], "s")
    assert loose_value(UUID(int=255)) == "0" * 30 + "ff"


def test_key_walks_order_keys_as_both_engines_do():
    """A primary key's canonical text sorts as the engines sort the key: numbers as
    numbers ('9' before '10'), the rest byte by byte; keys whose text would not
    (doubles, text under a policy) are not walked."""
    table = _uuid_table("t", ("k", "TEXT", 1), ("n", "INTEGER", 2), ("s", "TEXT", 0))
    plan = build_plan(SourceSchema(tables=(table,)), {("t", "k"): ColumnStats(text=1)})
    walk = key_walk(plan.tables[0])
    assert walk is not None
    assert walk.sqlite_keys == '"k", CAST("n" AS TEXT)'
    keys = [("x", "10"), ("y", "1"), ("x", "9"), ("X", "2")]
    assert sorted(keys, key=walk.sort_key) == [("X", "2"), ("x", "9"), ("x", "10"), ("y", "1")]
    assert "shipyard_key1" in pg_row_hashes_sql(plan.tables[0], "s", walk.pg_keys)
    doubles = _uuid_table("d", ("x", "REAL", 1))
    plan = build_plan(SourceSchema(tables=(doubles,)), {("d", "x"): ColumnStats(real=1)})
    assert key_walk(plan.tables[0]) is None
    mixed = _uuid_table("m", ("x", "TEXT", 1))
    plan = build_plan(
        SourceSchema(tables=(mixed,)),
        {("m", "x"): ColumnStats(text=1, integer=1)},
        options=MigrationOptions(policies={"m.x": "text"}),
    )
    assert key_walk(plan.tables[0]) is None  # 10 sorts before 'a' in SQLite, after as text
    # the catch-up digests key-prefix buckets of at most about a thousand rows (hex keys)
    assert [bucket_width(n) for n in (0, 1_000, 100_000, 1_000_000)] == [1, 1, 2, 3]


def test_tables_keyed_by_text_or_uuid_are_validated_per_key_prefix_bucket():
    """A uuid- or text-keyed table is digested per key-prefix bucket, so a catch-up
    knows from the validation alone which few buckets to walk and check again; a
    uuid key's buckets are ranges found through its index. Rowid tables keep their
    rowid ranges; a key led by a number would not group by its text's prefix."""
    uuids = _uuid_table("u", ("id", "CHAR(32)", 1), ("s", "TEXT", 0))
    texts = _uuid_table("s", ("k", "TEXT", 1), ("n", "INTEGER", 2))
    numbers = _uuid_table("n", ("n", "INTEGER", 1), ("k", "TEXT", 2))
    rowids = _uuid_table("r", ("id", "INTEGER", 1), ("s", "TEXT", 0))
    plan = build_plan(
        SourceSchema(tables=(uuids, texts, numbers, rowids)),
        {("u", "id"): ColumnStats(text=1, all_uuid_hex=True), ("s", "k"): ColumnStats(text=1)},
    )
    u, s, n, r = plan.tables
    assert bucketed(n) is None and bucketed(r) is None
    walk = bucketed(u)
    assert walk is not None and bucketed(s) is not None
    sqlite, pg = bucket_digest_sql(u, walk, 3, only=True)
    assert 'ORDER BY "id") GROUP BY b' in sqlite and "json_each(?)" in sqlite
    assert "rpad(shipyard_p, 32, 'f')::uuid" in pg and 'ORDER BY "id") lines GROUP BY b' in pg
    text_walk = bucketed(s)
    assert text_walk is not None
    assert pg_bucket_from(s, text_walk, 2, "t").endswith("= ANY(%s::text[])")
    # a table's digest is its buckets' in bucket order, however they arrived
    assert bucket_total({"b": "1:x", "a": "2:y"}) == bucket_total({"a": "2:y", "b": "1:x"})
    assert bucket_total({"a": "2:y"}) != bucket_total({"a": "2:z"})


def test_rowid_buckets_cover_every_rowid_once():
    """Integer division truncates towards zero in both engines: bucket 0 holds
    -1023..1023, and every other bucket exactly ROWID_BUCKET rowids."""
    seen: dict[int, int] = {}
    for b in range(-3, 4):
        lo, hi = rowid_bucket_range(b)
        for rowid in range(lo, hi + 1):
            assert int(rowid / ROWID_BUCKET) == b  # SQL's division, not Python's floor
            seen[rowid] = seen.get(rowid, 0) + 1
    assert set(seen.values()) == {1} and min(seen) == -4 * ROWID_BUCKET + 1
    table = _uuid_table("r", ("id", "INTEGER", 1), ("s", "TEXT", 0))
    plan = build_plan(SourceSchema(tables=(table,)), {("r", "s"): ColumnStats(text=1)})
    sqlite, pg = rowid_bucket_sql(plan.tables[0], "stage", (-5, 7))
    assert "rowid BETWEEN -5 AND 7 ORDER BY rowid" in sqlite
    assert '"id" BETWEEN -5 AND 7 ORDER BY "id") lines GROUP BY b' in pg


def test_uuid_columns_read_as_text_read_the_text_sqlite_held():
    """SQLite concatenates, matches and measures the stored hex; PostgreSQL would use
    the dashed form (or have no such function for uuid). Views, triggers and CHECKs
    read the column as SQLite held it: 32 hex digits, or dashes where it had them.
    Comparisons stay on the uuid, so a join by key keeps its index."""
    hexes = ColumnStats(text=2, all_uuid_hex=True)
    dashed = ColumnStats(text=2, all_uuid_dashed=True)
    acct = _uuid_table("acct", ("id", "CHAR(32)", 1), ("label", "TEXT", 0))
    tort = _uuid_table("tort", ("tid", "CHAR(36)", 1), ("acct_id", "CHAR(32)", 0))
    views = {
        "tagged": "SELECT 'a:' || a.id, upper(id), length(id), substr(id, -4) FROM acct a",
        "matched": "SELECT CAST(id AS TEXT), group_concat(id) FROM acct WHERE id NOT LIKE 'ab%'",
        "joined": "SELECT t.tid || '/' || a.id FROM tort t JOIN acct a ON a.id = t.acct_id",
    }
    schema = SourceSchema(
        tables=(acct, tort),
        views=tuple(
            SourceView(name=n, sql=f"CREATE VIEW {n} AS {sql}") for n, sql in views.items()
        ),
        triggers=(
            SourceTrigger(
                name="stamp",
                table="acct",
                sql="CREATE TRIGGER stamp AFTER INSERT ON acct BEGIN"
                " UPDATE acct SET label = NEW.id || '-x' WHERE id = NEW.id; END",
            ),
        ),
    )
    stats = {("acct", "id"): hexes, ("tort", "tid"): dashed, ("tort", "acct_id"): hexes}
    plan = build_plan(schema, stats)
    assert not [f for f in plan.findings if f.severity == "error"]
    sql = {v.name: v.select_sql for v in plan.views}
    hex_id = "replace((\"id\")::text, '-', '')"
    assert sql["tagged"] == (
        "SELECT 'a:' || replace((\"a\".\"id\")::text, '-', ''), upper("
        + hex_id
        + "), length("
        + hex_id
        + "), right("
        + hex_id
        + ', 4) FROM "acct" "a"'
    )
    assert f"SELECT {hex_id}, string_agg(({hex_id})::text" in sql["matched"]
    assert f"WHERE {hex_id} NOT ILIKE 'ab%'" in sql["matched"]
    assert '("t"."tid")::text || ' in sql["joined"] and '"a"."id" = "t"."acct_id"' in sql["joined"]
    body = " ".join(plan.triggers[0].statements)
    assert "SET \"label\" = replace((NEW.\"id\")::text, '-', '') || '-x'" in body
    assert 'WHERE "id" = NEW."id"' in body
    assert "replace((CAST(NULL AS uuid))::text, '-', '') || '-x'" in plan.triggers[0].probes[0]
    # a name that is uuid in one table and bigint in another: which text is unknown
    other = _uuid_table("other", ("id", "INTEGER", 1))
    mixed = build_plan(SourceSchema(tables=(acct, other), views=schema.views[:1]), stats)
    refused = {f.key: f.message for f in mixed.findings if f.severity == "error"}
    assert "acct.id, which became uuid" in refused["tagged:untranslatable"]
    kept = build_plan(schema, stats, options=MigrationOptions(policies={"acct.id": "text"}))
    assert not [f for f in kept.findings if f.severity == "error"]


# ---------------------------------------------------------------- write-back


def _col(name: str, pg_type: str, held: str = "") -> PlanColumn:
    q = f'"{name}"'
    return PlanColumn(
        name=name,
        pg_type=pg_type,
        notnull=False,
        default_sql=None,
        identity=False,
        src_value=q,
        src_canon=q,
        canon_kind="plain",
        pg_canon=q,
        held=held,
    )


def test_held_text_follows_most_values_and_writes_a_fraction_always_only_when_all_had_one():
    assert held_text(10, 6, 10) == HeldText(t_separator=True, fraction_always=True)
    assert held_text(10, 5, 9) == HeldText(t_separator=False, fraction_always=False)
    assert held_text(0, 0, 0) == HeldText()  # an empty column: str(datetime)'s layout


def test_values_go_back_as_the_source_held_them():
    space = HeldText()
    assert back_expr(_col("b", "boolean")) == (
        'CASE WHEN "b" IS NULL THEN NULL WHEN "b" THEN 1 ELSE 0 END'
    )
    assert "THEN 't' ELSE 'f'" in (back_expr(_col("b", "boolean", "text")) or "")
    assert back_expr(_col("u", "uuid", "hex")) == "replace(\"u\"::text, '-', '')"
    assert back_expr(_col("u", "uuid", "dashed")) == '"u"::text'
    assert back_expr(_col("g", "double precision", "generated")) is None
    assert back_expr(_col("n", "numeric(8,2)")) == '"n"::text'
    assert back_expr(_col("d", "interval")) == '(extract(epoch FROM "d") * 1000000)::bigint'
    ts = back_expr(_col("t", "timestamp"), space) or ""
    assert ts.startswith("to_char(\"t\", 'YYYY-MM-DD HH24:MI:SS') || CASE WHEN date_trunc")
    iso = back_expr(_col("t", "timestamp"), HeldText(t_separator=True, fraction_always=True))
    assert iso == 'to_char("t", \'YYYY-MM-DD"T"HH24:MI:SS\') || to_char("t", \'.US\')'
    utc = back_expr(_col("t", "timestamptz"), space) or ""
    assert "(\"t\" AT TIME ZONE 'UTC')" in utc
    since = back_expr(_col("t", "interval", "epoch"), space) or ""
    assert "(timestamp '1970-01-01' + \"t\")" in since


def test_write_back_sql_skips_generated_columns_and_reads_nul_text_back_as_text():
    t = PlanTable(
        name="it em",
        columns=(
            _col("a", "text"),
            _col("g", "bigint", "generated"),
            _col("s", "bytea", "text"),
            _col("at", "time"),
        ),
        checks=(),
        primary_key=(),
        uniques=(),
        indexes=(),
        fks=(),
        rows=0,
        restart_with=None,
        has_rowid=True,
    )
    assert back_insert_sql(t) == (
        'INSERT INTO "it em" ("a", "s", "at") VALUES (?, CAST(? AS TEXT), ?)'
    )
    assert back_select_sql(t, "public").startswith('SELECT "a", "s", to_char("at",')


def test_a_datetime_read_as_text_renders_the_layout_sqlite_held_and_date_functions_do_not():
    from tasks.core.datetext import datetime_text_sql
    from tasks.core.sqlddl import tokenize, translate

    layout = datetime_text_sql(HeldText(t_separator=True, fraction_always=True))

    def pg(sql: str) -> str:
        return translate(
            tokenize(sql),
            lambda n: n,
            column_types={"at": "timestamp"},
            datetime_text={"at": layout},
        )

    text = pg("SELECT substr(at, 1, 7), at || 'x', at LIKE '2024-%' FROM t")
    assert text.count("'YYYY-MM-DD\"T\"HH24:MI:SS'") == 3 and text.count("'.US'") == 3
    assert 'YYYY-MM-DD"T"' not in pg("SELECT strftime('%Y', at), at > '2024' FROM t")


def test_the_text_range_of_a_key_prefix_bucket():
    from tasks.core.migration import prefix_upper

    assert prefix_upper("3f") == "3g"
    assert prefix_upper("é") == "ê"
    assert prefix_upper("a" + chr(0x10FFFF)) == "b"  # nothing sorts above U+10FFFF
    assert prefix_upper(chr(0x10FFFF)) is None
    assert prefix_upper("x" + chr(0xD7FF)) == "x" + chr(0xE000)  # past the surrogates
    keys = ["3e", "3f", "3f0", "3f~", "3f" + chr(0x10FFFF), "3g", "3g0"]
    assert [k for k in keys if "3f" <= k < prefix_upper("3f")] == [
        "3f",
        "3f0",
        "3f~",
        "3f\U0010ffff",
    ]
