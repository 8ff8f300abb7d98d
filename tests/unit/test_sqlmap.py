"""Identifier quoting and SQLite→PostgreSQL type decisions (migration groundwork)."""

from __future__ import annotations

import pytest

from tasks.core.sqlmap import (
    ColumnStats,
    Severity,
    affinity,
    blocking,
    decimal_spec,
    map_column,
    quote_ident,
)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("select", '"select"'),
        ("my col", '"my col"'),
        ('we"ird', '"we""ird"'),
        ("naïve", '"naïve"'),
        ('x"; DROP TABLE t; --', '"x""; DROP TABLE t; --"'),
    ],
)
def test_quote_ident(name, quoted):
    assert quote_ident(name) == quoted


def test_quote_ident_refuses_nul_and_truncation():
    with pytest.raises(ValueError, match="NUL"):
        quote_ident("a\x00b")
    with pytest.raises(ValueError, match="63 bytes"):
        quote_ident("é" * 32)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", "INTEGER"),
        ("BIGINT", "INTEGER"),
        ("VARCHAR(10)", "TEXT"),
        ("BLOB", "BLOB"),
        ("", "BLOB"),
        ("DOUBLE", "REAL"),
        ("FLOAT", "REAL"),
        ("DECIMAL(10,2)", "NUMERIC"),
        ("BOOLEAN", "NUMERIC"),
    ],
)
def test_affinity_follows_sqlite_rules(declared, expected):
    assert affinity(declared) == expected


def test_types_from_declaration_and_values():
    assert map_column("t", "c", "REAL", ColumnStats(real=10)).pg_type == "double precision"
    assert (
        map_column("t", "c", "BOOLEAN", ColumnStats(integer=5, all_bool=True)).pg_type == "boolean"
    )
    assert map_column("t", "c", "INTEGER", ColumnStats(integer=5)).pg_type == "bigint"
    assert map_column("t", "c", "JSON", ColumnStats(text=3, all_json=True)).pg_type == "jsonb"
    assert map_column("t", "c", "BLOB", ColumnStats(blob=2)).pg_type == "bytea"
    dt = map_column("t", "c", "DATETIME", ColumnStats(text=4, all_iso_datetime=True))
    assert dt.pg_type == "timestamp" and dt.findings[0].code == "naive-datetime"
    assert map_column("t", "c", "DATE", ColumnStats(text=4, all_date_only=True)).pg_type == "date"
    assert map_column("t", "c", "TEXT", ColumnStats(text=4)).pg_type == "text"


def test_refused_data_is_an_error_finding_that_blocks_unless_accepted():
    mixed = map_column("votes", "position", "TEXT", ColumnStats(text=3, integer=1))
    big = map_column("t", "n", "INTEGER", ColumnStats(integer=1, real=1, int_min=0, int_max=5))
    nul = map_column("t", "s", "TEXT", ColumnStats(text=2, text_with_nul=1))
    findings = [*mixed.findings, *big.findings, *nul.findings]
    assert {f.code for f in findings} == {"mixed-storage", "int-overflow", "nul-in-text"}
    assert all(f.severity == Severity.ERROR for f in findings)
    assert len(blocking(findings)) == 3
    left = blocking(findings, {"votes.position:mixed-storage": True, "t:nul-in-text": True})
    assert [f.code for f in left] == ["int-overflow"]


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("DATETIME", "timestamp"),
        ("TIMESTAMP", "timestamp"),
        ("DATE", "date"),
        ("BOOLEAN", "boolean"),
        ("JSON", "jsonb"),
        ("DECIMAL(10,2)", "numeric(10,2)"),
        ("INTEGER", "bigint"),
        ("VARCHAR(20)", "text"),
        ("", "bytea"),
    ],
)
def test_an_empty_column_gets_the_type_its_declaration_promises(declared, expected):
    mapped = map_column("t", "c", declared, ColumnStats(null=3), None)
    assert mapped.pg_type == expected
    assert all(f.severity == Severity.INFO for f in mapped.findings)


@pytest.mark.parametrize(
    ("declared", "stats", "pg_type", "severity"),
    [
        ("decimal(10,2)", ColumnStats(integer=2, real=3), "numeric(10,2)", Severity.INFO),
        ("DECIMAL", ColumnStats(real=3), "numeric", Severity.INFO),
        ("NUMERIC(5)", ColumnStats(integer=3), "numeric(5,0)", Severity.INFO),
        ("money", ColumnStats(integer=1), "numeric", Severity.INFO),
        ("NUMERIC(2000, 2)", ColumnStats(real=1), "numeric", Severity.INFO),  # PG's limit
        ("DECIMAL(10,2)", ColumnStats(real=3, not_decimal=1), "double precision", Severity.WARNING),
        ("DECIMAL(10,2)", ColumnStats(integer=3, not_decimal=1), "bigint", Severity.WARNING),
        ("DECIMAL(10,2)", ColumnStats(), "numeric(10,2)", None),  # empty: as declared
    ],
)
def test_decimals_become_numeric_when_every_number_is_an_exact_decimal(
    declared, stats, pg_type, severity
):
    mapped = map_column("t", "c", declared, stats)
    assert mapped.pg_type == pg_type
    found = [f.severity for f in mapped.findings if f.code == "decimal"]
    assert found == ([severity] if severity else [])


def test_only_numeric_affinity_declarations_are_decimals():
    assert decimal_spec("DECIMAL(10, 2)") == (10, 2)
    assert decimal_spec("numeric") == (None, 0)
    for other in ("INTEGER", "DECIMAL TEXT", "REAL", "BOOLEAN", "DATETIME"):
        with pytest.raises(ValueError):
            decimal_spec(other)


@pytest.mark.parametrize(
    ("stats", "pg_type", "code"),
    [
        (
            ColumnStats(integer=3, text=2, all_bool=True, all_bool_text=True),
            "boolean",
            "boolean-text",
        ),
        (ColumnStats(text=2, all_bool_text=True), "boolean", "boolean-text"),
        (
            ColumnStats(integer=3, text=2, all_bool=False, all_bool_text=True),
            "text",
            "mixed-storage",
        ),
        (
            ColumnStats(integer=3, text=2, all_bool=True, all_bool_text=False),
            "text",
            "mixed-storage",
        ),
    ],
)
def test_rails_text_booleans_join_the_integer_ones(stats, pg_type, code):
    """Rails wrote 't'/'f' before 6.0 and 1/0 after: one boolean column, when every
    value is one of those; anything else stays a mixed-storage error."""
    mapped = map_column("users", "admin", "boolean", stats)
    assert code in {f.code for f in mapped.findings}
    if code == "mixed-storage":
        assert any(f.severity == Severity.ERROR for f in mapped.findings)
    else:
        assert mapped.pg_type == pg_type


@pytest.mark.parametrize(
    ("declared", "stats", "policy", "pg_type"),
    [
        ("CHAR(32)", ColumnStats(text=3, all_uuid_hex=True), None, "uuid"),  # SQLAlchemy
        ("char(32)", ColumnStats(text=1, null=2, all_uuid_hex=True), None, "uuid"),  # Django
        ("CHAR(32)", ColumnStats(null=2), None, "uuid"),  # empty: as the ORM declares it
        ("CHAR(32)", ColumnStats(text=3, all_uuid_hex=True), "text", "text"),
        ("CHAR(32)", ColumnStats(text=3), None, "text"),  # upper case, dashes, shorter …
        ("CHAR(32)", ColumnStats(text=3, integer=1), None, "text"),  # mixed: an error
        ("VARCHAR(32)", ColumnStats(text=3, all_uuid_hex=True), None, "text"),  # a CharField
        ("CHAR(36)", ColumnStats(text=3, all_uuid_hex=True), None, "text"),
        ("CHAR(36)", ColumnStats(text=3, all_uuid_dashed=True), None, "uuid"),  # Tortoise
        ("UUID", ColumnStats(text=3, all_uuid_hex=True), None, "uuid"),  # Peewee
        ("uuid", ColumnStats(text=3, all_uuid_dashed=True), None, "uuid"),
        ("UUID", ColumnStats(text=3), None, "text"),  # neither form throughout
        ("CHAR(32)", ColumnStats(text=3, all_uuid_dashed=True), None, "text"),
    ],
)
def test_orm_uuid_columns_become_uuid(declared, stats, policy, pg_type):
    mapped = map_column("t", "c", declared, stats, policy)
    assert mapped.pg_type == pg_type
    if pg_type == "uuid":
        assert [(f.code, f.severity) for f in mapped.findings] == [("uuid", Severity.WARNING)]
        assert map_column("t", "c", declared, stats, policy, uuid=False).pg_type == "text"


@pytest.mark.parametrize(
    ("declared", "stats", "pg_type", "severity"),
    [
        ("bigint", ColumnStats(integer=3, null=1), "interval", Severity.INFO),  # Django
        ("DATETIME", ColumnStats(text=3, all_iso_datetime=True), "interval", Severity.INFO),
        ("DATETIME", ColumnStats(null=3), "interval", Severity.INFO),
        ("DATETIME", ColumnStats(text=3), "text", Severity.ERROR),  # not datetimes
        ("bigint", ColumnStats(text=3, integer=1, all_iso_datetime=True), "text", Severity.ERROR),
        ("REAL", ColumnStats(real=3), "text", Severity.ERROR),
    ],
)
def test_the_interval_policy_reads_durations_or_refuses(declared, stats, pg_type, severity):
    mapped = map_column("t", "c", declared, stats, "interval")
    assert mapped.pg_type == pg_type
    assert [(f.code, f.severity) for f in mapped.findings] == [("interval", severity)]


@pytest.mark.parametrize(
    ("declared", "stats", "pg_type", "code", "severity"),
    [
        (
            "DATETIME",
            ColumnStats(text=2, all_iso_datetime=True),
            "timestamptz",
            "utc-datetime",
            Severity.INFO,
        ),
        ("DATETIME", ColumnStats(null=2), "timestamptz", "utc-datetime", Severity.INFO),
        ("TEXT", ColumnStats(text=2, all_iso_datetime=True), "text", "utc", Severity.ERROR),
        ("DATETIME", ColumnStats(integer=2), "bigint", "utc", Severity.ERROR),
    ],
)
def test_the_utc_policy_makes_one_column_instants(declared, stats, pg_type, code, severity):
    mapped = map_column("t", "c", declared, stats, "utc")
    assert mapped.pg_type == pg_type
    assert (code, severity) in [(f.code, f.severity) for f in mapped.findings]
    assert "naive-datetime" not in [f.code for f in mapped.findings]


@pytest.mark.parametrize(
    ("declared", "stats", "pg_type"),
    [
        ("char(39)", ColumnStats(text=3, null=1, all_ip=True), "inet"),  # GenericIPAddressField
        ("char(15)", ColumnStats(text=3, all_ip=True), "inet"),  # the old IPAddressField
        ("char(39)", ColumnStats(null=3), "inet"),
        ("char(39)", ColumnStats(text=3), "text"),  # something else in it
        ("varchar(39)", ColumnStats(text=3, all_ip=True), "text"),
    ],
)
def test_django_ip_address_columns_become_inet(declared, stats, pg_type):
    mapped = map_column("t", "c", declared, stats)
    assert mapped.pg_type == pg_type
    assert map_column("t", "c", declared, stats, "text").pg_type == "text"
    if pg_type == "inet":
        assert [(f.code, f.severity) for f in mapped.findings] == [("inet", Severity.WARNING)]
