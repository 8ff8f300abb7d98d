"""PostgreSQL's rows written back into the SQLite source, in the form the source held them.

A cutover release thaws writes once the new version passed its smoke checks, so
the write freeze does not span the load test. If the load test then fails, the
old version goes back on its SQLite file, and the writes PostgreSQL took since
the thaw must be in that file first. Each value is rendered by PostgreSQL as
the application wrote it to SQLite (Django's datetime text, 0/1 booleans, hex
uuids …), so the old version reads back what it would have written itself.

The held text layout of datetimes (`T` or space, a fraction always or only when
non-zero) is the one the scan found (`PlanColumn.held_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from tasks.core.datetext import HeldText, datetime_sql, fraction_sql, from_layout
from tasks.core.migration import PlanColumn, PlanTable
from tasks.core.sqlmap import quote_ident

T = TypeVar("T")

# the column's text as the source held it, by PostgreSQL type: {c} is the column
_AS_IS = {"bigint", "double precision", "bytea", "text"}


def back_expr(c: PlanColumn, held: HeldText | None = None) -> str | None:
    """PostgreSQL expression: the stored value as the source held it (the driver's int,
    float, str or bytes gives SQLite the same storage class); None for a generated
    column, which SQLite computes itself."""
    held = held or from_layout(c.held_layout)
    q = quote_ident(c.name)
    kind = c.pg_type
    if c.held == "generated":
        return None
    if kind in _AS_IS:
        return q
    if kind == "citext" or kind == "jsonb" or kind.startswith("numeric"):
        # numeric as text: the column's NUMERIC affinity stores it as SQLite always did
        return f"{q}::text"
    if kind == "boolean":
        t, f = ("'t'", "'f'") if c.held == "text" else ("1", "0")
        return f"CASE WHEN {q} IS NULL THEN NULL WHEN {q} THEN {t} ELSE {f} END"
    if kind == "timestamp":
        return datetime_sql(q, held)
    if kind == "timestamptz":
        return datetime_sql(f"({q} AT TIME ZONE 'UTC')", held)
    if kind == "time":
        return f"to_char({q}, 'HH24:MI:SS') || {fraction_sql(q, held)}"
    if kind == "interval" and c.held == "epoch":
        return datetime_sql(f"(timestamp '1970-01-01' + {q})", held)
    if kind == "interval":
        return f"(extract(epoch FROM {q}) * 1000000)::bigint"
    if kind == "inet":
        return f"host({q})"
    if kind == "uuid":
        return f"{q}::text" if c.held == "dashed" else f"replace({q}::text, '-', '')"
    if kind == "date":
        return f"to_char({q}, 'YYYY-MM-DD')"
    raise ValueError(f"{c.name}: no way back from {kind}")  # every mapped type is above


def written_columns(t: PlanTable) -> list[PlanColumn]:
    return [c for c in t.columns if c.held != "generated"]


def back_select_sql(t: PlanTable, schema: str) -> str:
    """PostgreSQL: the rows of `t` rendered as the source holds them, `written_columns` order."""
    exprs = [back_expr(c) for c in written_columns(t)]
    return (
        f"SELECT {', '.join(e for e in exprs if e is not None)}"
        f" FROM {quote_ident(schema)}.{quote_ident(t.name)}"
    )


def back_insert_sql(t: PlanTable) -> str:
    """SQLite: one row in; a text with NUL bytes that became bytea (policy) is text again."""
    cols = written_columns(t)
    values = ", ".join(
        "CAST(? AS TEXT)" if c.held == "text" and c.pg_type == "bytea" else "?" for c in cols
    )
    names = ", ".join(quote_ident(c.name) for c in cols)
    return f"INSERT INTO {quote_ident(t.name)} ({names}) VALUES ({values})"


def sequence_sql(t: PlanTable, schema: str) -> str | None:
    """PostgreSQL: the identity's last handed-out value, so the source never hands it out again."""
    ident = next((c for c in t.columns if c.identity), None)
    if ident is None:
        return None
    table = f"{quote_ident(schema)}.{quote_ident(t.name)}"
    return (
        f"SELECT pg_sequence_last_value(pg_get_serial_sequence("
        f"{_literal(table)}, {_literal(ident.name)}))"
    )


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def batches(keys: Sequence[T], size: int = 5000) -> list[Sequence[T]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]
