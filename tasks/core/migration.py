"""The migration plan: every SQLite object mapped to PostgreSQL, as data, before any write.

The plan is pure: it is built from what introspection and the scan found and
rendered into SQL here, so a dry run, the Prefect artifact, the tests and the
executor all see the same decisions. Anything lossy or uncertain is a finding;
errors stop the migration unless accepted by name (`Finding.key`).

Two details carry most of the correctness:
- the COPY (CSV) line of each row is produced *by SQLite* (C speed): one
  printf() over one argument per column (`copy_field` and `copy_arg`: the
  column's CSV expression, or `"%w"` of NOT NULL text); reals go through
  ``printf('%!.17g')``, 17 significant digits, so no bit of a double is lost;
- validation hashes one canonical text per value on both sides (`canon_*`):
  SQLite/Python from the source values, PostgreSQL from the typed values it
  stored. A lossy conversion therefore changes the checksum.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.datetext import datetime_text_sql, from_layout, held_text, layout
from tasks.core.sqlddl import (
    DDLError,
    TableDDL,
    Tok,
    Untranslatable,
    concat_separators,
    parse_create_index,
    parse_create_table,
    tokenize,
    translate,
    view_select,
)
from tasks.core.sqlmap import (
    ColumnStats,
    Finding,
    Severity,
    blocking,
    map_column,
    quote_ident,
    uuid_form,
    uuid_forms,
)
from tasks.core.triggers import LEAVE, PlanTrigger, translate_trigger

_F = ConfigDict(frozen=True)


# ---------------------------------------------------------------- what the source holds


class SourceColumn(BaseModel):
    model_config = _F
    name: str
    declared: str
    notnull: bool
    default: str | None
    pk: int  # position in the primary key, 0 if not part of it
    hidden: int = 0  # 2/3: generated column


class SourceIndex(BaseModel):
    model_config = _F
    name: str
    unique: bool
    origin: str  # c: CREATE INDEX, u: UNIQUE constraint, pk: primary key
    partial: bool
    sql: str | None
    columns: tuple[str | None, ...]  # None for an expression term


class SourceFK(BaseModel):
    model_config = _F
    id: int
    ref_table: str
    from_cols: tuple[str, ...]
    to_cols: tuple[str | None, ...]
    on_update: str
    on_delete: str


class SourceTable(BaseModel):
    model_config = _F
    name: str
    sql: str
    columns: tuple[SourceColumn, ...]
    indexes: tuple[SourceIndex, ...] = ()
    fks: tuple[SourceFK, ...] = ()
    without_rowid: bool = False
    autoincrement: bool = False
    rows: int = 0
    sequence: int | None = None  # sqlite_sequence.seq (AUTOINCREMENT)
    max_key: int | None = None  # max of an INTEGER PRIMARY KEY


class SourceView(BaseModel):
    model_config = _F
    name: str
    sql: str


class SourceTrigger(BaseModel):
    model_config = _F
    name: str
    table: str
    sql: str


class SourceVirtual(BaseModel):
    """A virtual table (FTS5, R*Tree …): its module's storage, in shadow tables, means
    nothing to PostgreSQL."""

    model_config = _F
    name: str
    module: str


class SourceSchema(BaseModel):
    model_config = _F
    tables: tuple[SourceTable, ...]
    views: tuple[SourceView, ...] = ()
    triggers: tuple[SourceTrigger, ...] = ()
    virtual: tuple[SourceVirtual, ...] = ()


class Refusal(BaseModel):
    """Rows a scan found PostgreSQL would refuse or SQLite never enforced (FK orphans)."""

    model_config = _F
    table: str
    column: str | None
    code: str
    count: int
    rowids: tuple[int, ...]
    detail: str = ""


class MigrationOptions(BaseModel):
    """What the user decided: accepted findings by key, and per-column data policies."""

    model_config = _F
    accept: frozenset[str] = frozenset()
    policies: Mapping[str, str] = Field(default_factory=dict)  # "table.column" -> policy
    target_schema: str = "public"
    datetimes_utc: bool = False  # naive datetimes are UTC instants: timestamptz


# ---------------------------------------------------------------- the plan


class PlanColumn(BaseModel):
    model_config = _F
    name: str
    pg_type: str
    notnull: bool
    default_sql: str | None
    identity: bool
    src_value: str  # SQLite expression: the value itself, for the NULL test of the canonical form
    src_canon: str  # SQLite expression: canonical text, or the raw value for `canon_kind`
    canon_kind: str  # plain | double | numeric | json | timestamp | date: who finishes it
    pg_canon: str  # PostgreSQL expression: the same canonical text from the stored value
    pg_copy: str | None = None  # PostgreSQL expression: the stored value as the COPY rendered it
    copy_field: str = "%s"  # printf() conversion: copy_arg as one CSV field for COPY
    copy_arg: str = ""  # SQLite expression handed to copy_field
    # how the source held values where the type does not say: a uuid's 'hex' or
    # 'dashed' text, an interval's 'epoch' datetime, a boolean's 't'/'f' or a bytea's
    # NUL-holding 'text'; 'generated' for a generated column (SQLite computes it)
    held: str = ""
    # the text layout of a datetime or time in SQLite (from the scan): "T" or "space",
    # then "always" or "nonzero" (its fraction of a second); "space,nonzero": str(datetime)
    held_layout: str = ""


class PlanIndex(BaseModel):
    model_config = _F
    name: str
    sql: str  # CREATE INDEX ... with the table left as {table}


class PlanFK(BaseModel):
    model_config = _F
    name: str
    sql: str  # ALTER TABLE {table} ADD CONSTRAINT ...
    not_valid: bool
    parent: str = ""  # the referenced table: its key must exist first


class PlanTable(BaseModel):
    model_config = _F
    name: str
    columns: tuple[PlanColumn, ...]
    checks: tuple[str, ...]
    primary_key: tuple[str, ...]
    uniques: tuple[tuple[str, ...], ...]
    indexes: tuple[PlanIndex, ...]
    fks: tuple[PlanFK, ...]
    rows: int
    restart_with: int | None  # identity's next value: never reuse an id SQLite handed out
    has_rowid: bool


class PlanView(BaseModel):
    model_config = _F
    name: str
    select_sql: str
    # group_concat() separators: the view check compares concatenated values in any order
    concat_separators: tuple[str, ...] = ()


class Since(BaseModel):
    """What PostgreSQL held when a cutover swapped its tables in: the SQLite snapshot it
    was validated equal to, and the oldest transaction id running just before (rows
    written since carry that id or a later one)."""

    model_config = _F
    horizon: int  # txid_snapshot_xmin, with its epoch
    snapshot: str  # the snapshot file, kept until the release ends


class Plan(BaseModel):
    model_config = _F
    tables: tuple[PlanTable, ...]
    views: tuple[PlanView, ...]
    triggers: tuple[PlanTrigger, ...] = ()  # created after the copy, enabled by the swap
    findings: tuple[Finding, ...]
    blocking: tuple[Finding, ...]
    needs_citext: bool

    def table(self, name: str) -> PlanTable:
        return next(t for t in self.tables if t.name == name)

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)


def _csv(x: str) -> str:
    """SQLite expression quoting a text value as a CSV field for COPY (FORMAT csv).

    CSV needs one replace() per value where COPY's text format needs four
    (backslash, tab, newline, return): measured 2.1 s against 3.0 s for 0.9 M rows.
    """
    return f"('\"' || replace({x}, '\"', '\"\"') || '\"')"


_REAL_TEXT = "printf('%!.17g', {c})"
_DOUBLE_COPY = (  # printf() turns NULL into '0.0': test NULL first
    "CASE WHEN {c} IS NULL THEN NULL WHEN {c} > 1.7976931348623157e308 THEN 'Infinity'"
    " WHEN {c} < -1.7976931348623157e308 THEN '-Infinity' ELSE printf('%!.17g', {c}) END"
)


def _source_value(c: str, policy: str | None) -> str:
    """The value a column contributes, after its policy: what NULL tests look at."""
    if policy == "null":
        return f"CASE WHEN typeof({c}) = 'text' AND instr(CAST({c} AS BLOB), x'00') > 0 THEN NULL ELSE {c} END"
    return c


_QUOTED = "coalesce('\"' || replace({c}::text, '\"', '\"\"') || '\"', '')"


def _column_exprs(
    c: str, pg_type: str, policy: str | None, form: str = ""
) -> tuple[str, str, str, str, str | None]:
    """(copy_expr, src_canon, canon_kind, pg_canon, pg_copy) for one column, `c` already
    quoted; `form`: how the source writes a value of the type — an interval's
    'epoch' (datetimes since 1970-01-01) or a uuid's 'hex' or 'dashed' text. `pg_copy` renders the stored value in PostgreSQL exactly as `copy_expr`
    rendered the source value, where that rendering is one-to-one (NULL is the only
    empty field, text is always quoted); None where it is not (doubles, JSON,
    timestamps, policies)."""
    value = _source_value(c, policy)
    plain = value == c and policy is None
    if pg_type == "bigint":
        copy = "coalesce({c}::text, '')" if plain else None
        return f"CAST({value} AS TEXT)", f"CAST({value} AS TEXT)", "plain", "{c}::text", copy
    if pg_type.startswith("numeric"):  # the text SQLite shows; numeric reads it exactly
        text = f"CAST({value} AS TEXT)"
        return text, text, "numeric", "trim_scale({c})::text", None
    if pg_type == "boolean":
        # 1 or Rails' 't' is true; the scan admitted only 0/1 and 't'/'f'/'true'/'false'
        b = f"CASE WHEN {value} IS NULL THEN NULL WHEN {value} IN (1, 't', 'true') THEN 't' ELSE 'f' END"
        copy = "CASE WHEN {c} IS NULL THEN '' WHEN {c} THEN 't' ELSE 'f' END" if plain else None
        return b, b, "plain", "CASE WHEN {c} THEN 't' ELSE 'f' END", copy
    if pg_type == "double precision":
        return _DOUBLE_COPY.format(c=value), value, "double", "encode(float8send({c}), 'hex')", None
    if pg_type == "bytea":
        hexed = f"lower(hex({value}))"  # hex(NULL) is '': test NULL first
        copy_expr = f"CASE WHEN {value} IS NULL THEN NULL ELSE '\\x' || {hexed} END"
        copy = "coalesce('\\x' || encode({c}, 'hex'), '')" if plain else None
        return copy_expr, hexed, "plain", "encode({c}, 'hex')", copy
    if pg_type == "jsonb":
        return _csv(value), value, "json", "{c}::text", None
    if pg_type == "timestamp":  # ISO text by the scan: no comma, quote or newline to quote
        return value, value, "timestamp", "to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')", None
    if pg_type == "timestamptz":  # the ISO text, read as UTC whatever the session's zone
        canon = "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        return f"{value} || 'Z'", value, "timestamp", canon, None
    if pg_type == "time":  # HH:MM[:SS[.ffffff]] by the scan: nothing to quote
        return value, value, "time", "{c}::text", None
    if pg_type == "interval" and form != "epoch":  # Django's integer microseconds
        text = f"CAST({value} AS TEXT)"
        canon = "(extract(epoch FROM {c}) * 1000000)::bigint::text"
        return f"{text} || ' microseconds'", text, "plain", canon, None
    if pg_type == "interval":  # SQLAlchemy's datetime since 1970-01-01, sent as microseconds
        us = (
            f"CAST(strftime('%s', {value}) AS INTEGER) * 1000000"
            f" + CAST(substr(substr({value}, 21) || '000000', 1, 6) AS INTEGER)"
        )
        # compared as that datetime again: PostgreSQL adds the interval to the epoch
        canon = "to_char(timestamp '1970-01-01' + {c}, 'YYYY-MM-DD HH24:MI:SS.US')"
        return f"CAST(({us}) AS TEXT) || ' microseconds'", value, "timestamp", canon, None
    if pg_type == "inet":  # digits, dots, colons, hex: nothing to quote
        copy = "coalesce(host({c}), '')" if plain else None
        return value, value, "plain", "host({c})", copy
    if pg_type == "uuid":  # uuid reads hex digits, dashed or not, as they are (the scan saw
        # nothing else), and renders them back in the source's form
        text = "{c}::text" if form == "dashed" else "replace({c}::text, '-', '')"
        copy = f"coalesce({text}, '')" if plain else None
        return value, value, "plain", text, copy
    if pg_type == "date":
        copy = "coalesce(to_char({c}, 'YYYY-MM-DD'), '')" if plain else None
        return value, value, "date", "to_char({c}, 'YYYY-MM-DD')", copy
    if policy != "text":  # only text values here (else the plan has a mixed-storage error)
        return _csv(value), value, "plain", "{c}::text", _QUOTED if plain else None
    as_text = (
        f"CASE typeof({value}) WHEN 'real' THEN {_REAL_TEXT.format(c=value)}"
        f" ELSE CAST({value} AS TEXT) END"
    )
    return _csv(as_text), as_text, "plain", "{c}::text", None


def _not_using(sql: str | Sequence[Tok], names: Mapping[str, str], why: str) -> None:
    """Refuse SQL that names any of `names` (lower-case name -> what it is): a virtual
    table that is not migrated, a column that became timestamptz."""
    toks = tokenize(sql) if isinstance(sql, str) else sql
    used = {t.text.lower() for t in toks if t.kind in ("word", "ident")} & names.keys()
    if used:
        raise Untranslatable(why.format(names[min(used)]))


_TEXT_LAYOUT = ("timestamp", "timestamptz", "time")  # and an interval held as a datetime


def _layout(st: ColumnStats) -> str:
    return layout(held_text(st.text, st.iso_t, st.iso_fraction))


def _datetime_texts(tables: Sequence[PlanTable], column_types: Mapping[str, str]) -> dict[str, str]:
    """Per column name, the template rendering the datetime text SQLite held, where every
    column by that name is a timestamp (or every one a date) held in one layout."""
    found: dict[str, set[str]] = {}
    for t in tables:
        for c in t.columns:
            if c.pg_type == "timestamp" and c.held_layout:
                found.setdefault(c.name.lower(), set()).add(c.held_layout)
            elif c.pg_type == "date":
                found.setdefault(c.name.lower(), set()).add("date")
            elif column_types.get(c.name.lower()) == "timestamp":
                found.setdefault(c.name.lower(), set()).add("other")
    out = {}
    for name, layouts in found.items():
        if len(layouts) != 1 or column_types.get(name) != "timestamp":
            continue
        held = next(iter(layouts))
        if held == "date":
            out[name] = "to_char({0}, 'YYYY-MM-DD')"
        elif held != "other":
            out[name] = datetime_text_sql(from_layout(held))
    return out


def uuid_text_form(c: PlanColumn) -> str:
    """The text a uuid column held in SQLite: "hex" (32 digits) or "dashed"."""
    return "hex" if c.pg_canon.startswith("replace(") else "dashed"


def _not_concatenating(sql: str | Sequence[Tok], names: Mapping[str, str]) -> None:
    """Refuse `||` beside a column of `names`: columns that became uuid under a name
    that other tables use for another type or form, so SQL cannot be told which text
    to read. PostgreSQL would concatenate the dashed form, and in a trigger nothing
    would tell. Other text functions on such a uuid fail in PostgreSQL, which the
    rehearsal reports before the copy."""
    toks = tokenize(sql) if isinstance(sql, str) else sql
    for i, t in enumerate(toks):
        if t.kind != "op" or t.text != "||":
            continue
        right = i + 1
        while right + 2 < len(toks) and toks[right + 1].text == ".":  # a qualified name
            right += 2
        for side in (toks[i - 1] if i else None, toks[right] if right < len(toks) else None):
            if side is not None and side.kind in ("word", "ident") and side.text.lower() in names:
                raise Untranslatable(
                    f"it concatenates {names[side.text.lower()]}, which became uuid, with ||:"
                    " PostgreSQL would join its dashed form; policy 'text' keeps the column text"
                )


_VIRTUAL = "it uses virtual table {!r}, which is not migrated"
_UTC = (
    "it reads {}, which became timestamptz (datetimes_utc or policy 'utc'): date functions, literals and"
    " comparisons there would follow the session's time zone, so it is not translated"
)


def _deferred(ddl: TableDDL, fks: Sequence[SourceFK]) -> dict[int, bool]:
    """Which keys (by PRAGMA id) SQLite checks at commit. PRAGMA foreign_key_list
    numbers the last declared key 0; keys are matched by columns and parent."""
    pending = list(reversed(ddl.foreign_keys))
    out = {}
    for fk in sorted(fks, key=lambda f: f.id):
        key = (tuple(c.lower() for c in fk.from_cols), fk.ref_table.lower())
        hit = next((d for d in pending if (d.columns, d.parent) == key), None)
        if hit is not None:
            pending.remove(hit)
            out[fk.id] = hit.deferred
    return out


def _nocase(pg_type: str) -> str:
    return "citext" if pg_type == "text" else pg_type


def _resolver(names: Mapping[str, str]) -> Callable[[str], str | None]:
    return lambda n: names.get(n.lower())


def _default_sql(raw: str | None, pg_type: str, resolve: Callable[[str], str | None]) -> str | None:
    if raw is None:
        return None
    from tasks.core.sqlddl import tokenize

    toks = tokenize(raw)
    if pg_type == "boolean" and [t.text for t in toks] in (["0"], ["1"]):
        return "false" if toks[0].text == "0" else "true"
    sql = translate(toks, resolve, now_as_text=pg_type in ("text", "citext"))
    if pg_type == "uuid":  # 32 hex digits (a literal or the randomblob idiom) read as uuid
        return f"({sql})::uuid"
    if pg_type == "interval":
        if [t.kind for t in toks if t.text not in ("(", ")", "-", "+")] != ["num"]:
            raise Untranslatable("a default of an interval column other than microseconds")
        return f"(({sql}) * interval '1 microsecond')"
    # a UTC wall-clock value (CURRENT_TIMESTAMP included), as an instant
    return f"(({sql})::timestamp AT TIME ZONE 'UTC')" if pg_type == "timestamptz" else sql


def _uuid_columns(
    schema: SourceSchema,
    stats: Mapping[tuple[str, str], ColumnStats],
    options: MigrationOptions,
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """The (table, column)s that become uuid, and those that could but stay text
    because a foreign key ties them (through any chain of keys) to a column that
    stays text, with that column's name. A key between uuid and text could not be
    created; an ORM reading a uuid child of a text parent would mix the two."""
    tables = {t.name.lower(): t for t in schema.tables}

    def json_checked(t: SourceTable) -> frozenset[str]:
        try:
            return parse_create_table(t.sql).json_checked()
        except DDLError:
            return frozenset()

    could: set[tuple[str, str]] = set()
    for t in schema.tables:
        json = json_checked(t)
        for c in t.columns:
            policy = options.policies.get(f"{t.name}.{c.name}")
            st = stats.get((t.name, c.name), ColumnStats())
            if uuid_forms(c.declared):
                m = map_column(t.name, c.name, c.declared, st, policy, c.name.lower() in json)
                if m.pg_type == "uuid":
                    could.add((t.name, c.name))
    pairs: list[tuple[tuple[str, str], tuple[str, str]]] = []
    for t in schema.tables:
        for fk in t.fks:
            parent = tables.get(fk.ref_table.lower())
            if parent is None:
                continue
            pk = [c.name for c in sorted((c for c in parent.columns if c.pk), key=lambda c: c.pk)]
            names = {c.name.lower(): c.name for c in parent.columns}
            for i, child in enumerate(fk.from_cols):
                to = fk.to_cols[i] if i < len(fk.to_cols) else None
                ref = names.get(to.lower()) if to is not None else (pk[i] if i < len(pk) else None)
                if ref is not None:
                    pairs.append(((t.name, child), (parent.name, ref)))
    keep = set(could)
    tied: dict[tuple[str, str], str] = {}
    changed = True
    while changed:  # a text column spreads along the keys until none ties text to uuid
        changed = False
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                if x in keep and y not in keep:
                    keep.discard(x)
                    tied[x] = f"{y[0]}.{y[1]}" if y not in tied else tied[y]
                    changed = True
    return keep, tied


def build_plan(
    schema: SourceSchema,
    stats: Mapping[tuple[str, str], ColumnStats],
    refusals: tuple[Refusal, ...] = (),
    options: MigrationOptions | None = None,
) -> Plan:
    """Decide everything; raise nothing for bad data, report it as findings instead."""
    options = options or MigrationOptions()
    findings: list[Finding] = []

    def find(sev: Severity, code: str, obj: str, msg: str, column: str | None = None) -> None:
        findings.append(Finding(severity=sev, code=code, table=obj, column=column, message=msg))

    all_names: dict[str, str] = {}
    for t in schema.tables:
        all_names[t.name.lower()] = t.name
        for c in t.columns:
            all_names.setdefault(c.name.lower(), c.name)
    for v in schema.views:
        all_names[v.name.lower()] = v.name
    resolve_any = _resolver(all_names)

    refused_by: dict[tuple[str, str | None, str], Refusal] = {
        (r.table, r.column, r.code): r for r in refusals
    }
    accepted = {k: True for k in options.accept}
    uuids, tied = _uuid_columns(schema, stats, options)
    for (tname, cname), other in tied.items():
        find(
            Severity.WARNING,
            "uuid-text",
            tname,
            f"stays text: a foreign key ties it to {other}, whose values are no UUIDs (or"
            " under a policy), and both ends of a key need one type",
            cname,
        )
    tables: list[PlanTable] = []
    needs_citext = False
    all_booleans: frozenset[str] = frozenset()
    for t in schema.tables:
        try:
            ddl = parse_create_table(t.sql)
        except DDLError as exc:
            find(Severity.ERROR, "unreadable-ddl", t.name, str(exc))
            continue
        col_ddl = {c.name.lower(): c for c in ddl.columns}
        json = ddl.json_checked()
        names = {c.name.lower(): c.name for c in t.columns}
        resolve = _resolver({**all_names, **names})
        pk_cols = tuple(c.name for c in sorted((c for c in t.columns if c.pk), key=lambda c: c.pk))
        rowid_alias = (
            not t.without_rowid
            and len(pk_cols) == 1
            and next(c for c in t.columns if c.name == pk_cols[0]).declared.upper() == "INTEGER"
        )
        cols: list[PlanColumn] = []
        for c in t.columns:
            if c.hidden in (2, 3):
                find(
                    Severity.ERROR,
                    "generated-column",
                    t.name,
                    "generated column: accepting copies its values as a plain column",
                    c.name,
                )
            policy = options.policies.get(f"{t.name}.{c.name}")
            st = stats.get((t.name, c.name), ColumnStats())
            mapped = map_column(
                t.name,
                c.name,
                c.declared,
                st,
                policy,
                c.name.lower() in json,
                uuid=(t.name, c.name) in uuids,
            )
            for fd in mapped.findings:
                ref = refused_by.get((t.name, c.name, fd.code))
                findings.append(
                    fd.model_copy(update={"rowids": ref.rowids}) if ref is not None else fd
                )
            pg_type = mapped.pg_type
            if pg_type == "timestamp" and options.datetimes_utc:
                pg_type = "timestamptz"
                find(
                    Severity.INFO,
                    "utc-datetime",
                    t.name,
                    "datetimes without zone are read as UTC: timestamptz (datetimes_utc)",
                    c.name,
                )
            identity = rowid_alias and c.name == pk_cols[0]
            cd = col_ddl.get(c.name.lower())
            if cd is not None and cd.collate == "NOCASE":
                if pg_type == "text":
                    needs_citext = True
                    find(
                        Severity.INFO,
                        "nocase",
                        t.name,
                        "COLLATE NOCASE becomes citext: comparisons, UNIQUE and IN ignore case"
                        " (for all of Unicode, where SQLite folds ASCII only)",
                        c.name,
                    )
                else:
                    find(
                        Severity.WARNING,
                        "nocase",
                        t.name,
                        f"COLLATE NOCASE on a {pg_type} column has no effect",
                        c.name,
                    )
            elif cd is not None and cd.collate not in (None, "BINARY"):
                find(
                    Severity.ERROR,
                    "collation",
                    t.name,
                    f"collation {cd.collate} has no PostgreSQL equivalent",
                    c.name,
                )
            q = quote_ident(c.name)
            form = (
                uuid_form(c.declared, st)
                if pg_type == "uuid"
                # an empty column: SQLAlchemy's Interval is declared DATETIME
                else (
                    "epoch"
                    if pg_type == "interval" and (st.text or "DATE" in c.declared.upper())
                    else ""
                )
            )
            copy_expr, src_canon, kind, pg_canon, pg_copy = _column_exprs(
                q, pg_type, policy, form=form
            )
            held = form
            if c.hidden in (2, 3):
                held = "generated"
            elif pg_type == "boolean" and st.text and not st.integer:
                held = "text"
            elif pg_type == "bytea" and policy == "bytea":
                held = "text"
            fast_text = c.notnull and pg_type == "text" and policy is None
            if "RANDOMBLOB" in (c.default or "").upper():
                find(
                    Severity.INFO,
                    "random-id",
                    t.name,
                    "randomblob(16) in the default becomes gen_random_uuid()'s 16 bytes"
                    " (122 random bits: a version-4 UUID)",
                    c.name,
                )
            try:
                default = _default_sql(c.default, pg_type, resolve)
            except (Untranslatable, DDLError) as exc:
                find(Severity.ERROR, "untranslatable", t.name, f"DEFAULT: {exc}", c.name)
                default = None
            cols.append(
                PlanColumn(
                    name=c.name,
                    pg_type=_nocase(pg_type)
                    if cd is not None and cd.collate == "NOCASE"
                    else pg_type,
                    notnull=c.notnull,
                    default_sql=default,
                    identity=identity,
                    # SQLite enforces NOT NULL (quick_check reports a schema edited around
                    # it), so the column needs no NULL test: printf quotes it in C.
                    copy_field='"%w"' if fast_text else "%s",
                    copy_arg=q if fast_text else f"coalesce({copy_expr}, '')",
                    src_value=_source_value(q, policy),
                    src_canon=src_canon,
                    canon_kind=kind,
                    pg_canon=pg_canon.format(c=q),
                    pg_copy=None if pg_copy is None else pg_copy.format(c=q),
                    held=held,
                    held_layout=_layout(st) if pg_type in _TEXT_LAYOUT or held == "epoch" else "",
                )
            )
        booleans = frozenset(c.name.lower() for c in cols if c.pg_type == "boolean")
        all_booleans |= booleans
        checks: list[str] = []
        own = {c.name.lower(): c.pg_type for c in cols}
        own_utc = {c.name.lower(): repr(c.name) for c in cols if c.pg_type == "timestamptz"}
        own_uuid = {c.name.lower(): uuid_text_form(c) for c in cols if c.pg_type == "uuid"}
        for toks in [*(x for cd in ddl.columns for x in cd.checks), *ddl.checks]:
            try:
                _not_using(toks, own_utc, _UTC)
                checks.append(
                    translate(
                        toks, resolve, booleans=booleans, column_types=own, uuid_text=own_uuid
                    )
                )
            except (Untranslatable, DDLError) as exc:
                find(Severity.ERROR, "untranslatable", t.name, f"CHECK: {exc}")
        uniques = tuple(tuple(str(x) for x in ix.columns) for ix in t.indexes if ix.origin == "u")
        indexes: list[PlanIndex] = []
        for ix in t.indexes:
            if ix.origin != "c" or ix.sql is None:
                continue
            try:
                parsed = parse_create_index(ix.sql)
                for term in parsed.terms:  # a plain column orders instants as SQLite did
                    if len(term.tokens) > 1:
                        _not_using(term.tokens, own_utc, _UTC)
                _not_using(parsed.where or (), own_utc, _UTC)
                indexes.append(
                    PlanIndex(name=ix.name, sql=_index_sql(ix, t.name, resolve, booleans))
                )
            except (Untranslatable, DDLError) as exc:
                find(Severity.ERROR, "untranslatable", ix.name, f"index on {t.name}: {exc}")
        fks: list[PlanFK] = []
        deferred = _deferred(ddl, t.fks)
        for fk in t.fks:
            name = f"{t.name}_fk{fk.id}"
            orphans = refused_by.get((t.name, None, f"fk-orphans-{fk.id}"))
            not_valid = False
            if orphans is not None and orphans.count:
                fd = Finding(
                    severity=Severity.ERROR,
                    code=f"fk-orphans-{fk.id}",
                    table=t.name,
                    column=None,
                    message=f"{orphans.count} row(s) reference a missing {fk.ref_table} row"
                    f" ({', '.join(fk.from_cols)}); accepting keeps them and creates the"
                    " foreign key NOT VALID (enforced for new rows only)",
                    count=orphans.count,
                    rowids=orphans.rowids,
                )
                findings.append(fd)
                not_valid = True
            ref_cols = (
                ""
                if any(x is None for x in fk.to_cols)
                else " (" + ", ".join(quote_ident(str(x)) for x in fk.to_cols) + ")"
            )
            actions = "".join(
                f" ON {kind} {act}"
                for kind, act in (("UPDATE", fk.on_update), ("DELETE", fk.on_delete))
                if act.upper() not in ("NO ACTION", "")
            )
            sql = (
                f"ALTER TABLE {{table}} ADD CONSTRAINT {quote_ident(name[:63])} FOREIGN KEY ("
                + ", ".join(quote_ident(x) for x in fk.from_cols)
                + f") REFERENCES {{schema}}.{quote_ident(all_names.get(fk.ref_table.lower(), fk.ref_table))}"
                + ref_cols
                + actions
                + " DEFERRABLE INITIALLY "
                + ("DEFERRED" if deferred.get(fk.id) else "IMMEDIATE")
                + (" NOT VALID" if not_valid else "")
            )
            parent = all_names.get(fk.ref_table.lower(), fk.ref_table)
            fks.append(PlanFK(name=name, sql=sql, not_valid=not_valid, parent=parent))
        if t.autoincrement:
            find(
                Severity.INFO,
                "identity",
                t.name,
                "AUTOINCREMENT becomes an identity that restarts after sqlite_sequence: ids are never reused",
                pk_cols[0] if pk_cols else None,
            )
        restart = None
        if rowid_alias:
            restart = max(t.max_key or 0, t.sequence or 0) + 1
        if t.without_rowid:
            find(
                Severity.INFO,
                "without-rowid",
                t.name,
                "WITHOUT ROWID table: a plain table keyed by its primary key",
            )
        tables.append(
            PlanTable(
                name=t.name,
                columns=tuple(cols),
                checks=tuple(checks),
                primary_key=pk_cols,
                uniques=uniques,
                indexes=tuple(indexes),
                fks=tuple(fks),
                rows=t.rows,
                restart_with=restart,
                has_rowid=not t.without_rowid,
            )
        )
    kinds: dict[str, set[str]] = {}
    for pt in tables:
        for pc in pt.columns:
            kinds.setdefault(pc.name.lower(), set()).add(pc.pg_type)
    # date and JSON functions in views may read a column that has the type they need
    # in every table with one by its name (a name alone does not say which table it is)
    column_types = {
        n: "timestamp" if k <= {"timestamp", "date"} else next(iter(k))
        for n, k in kinds.items()
        if len(k) == 1 or k <= {"timestamp", "date"}
    }
    for vt in schema.virtual:
        find(
            Severity.ERROR,
            "virtual-table",
            vt.name,
            f"{vt.module} virtual table: PostgreSQL has no {vt.module} module; accepting"
            " migrates without it and its shadow tables (full-text search in PostgreSQL"
            " is a tsvector column with a GIN index, which the application queries its own way)",
        )
    virtual = {vt.name.lower(): vt.name for vt in schema.virtual}
    utc = {
        c.name.lower(): f"{t.name}.{c.name}"
        for t in tables
        for c in t.columns
        if c.pg_type == "timestamptz"
    }
    forms: dict[str, set[str]] = {}
    for pt in tables:
        for pc in pt.columns:
            if pc.pg_type == "uuid":
                forms.setdefault(pc.name.lower(), set()).add(uuid_text_form(pc))
    # views and triggers read a uuid column as the text SQLite held where its name has one
    # type and one form in every table; elsewhere concatenating the name is refused
    uuid_text = {
        n: next(iter(f)) for n, f in forms.items() if len(f) == 1 and column_types.get(n) == "uuid"
    }
    uuid_names = {
        c.name.lower(): f"{t.name}.{c.name}"
        for t in tables
        for c in t.columns
        if c.pg_type == "uuid" and c.name.lower() not in uuid_text
    }
    datetime_text = _datetime_texts(tables, column_types)
    views: list[PlanView] = []
    for v in schema.views:
        try:
            _not_using(v.sql, virtual, _VIRTUAL)
            _not_using(v.sql, utc, _UTC)
            _not_concatenating(v.sql, uuid_names)
            select = view_select(v.sql)
            separators = concat_separators(select)
            views.append(
                PlanView(
                    name=v.name,
                    select_sql=translate(
                        select,
                        resolve_any,
                        booleans=all_booleans,
                        column_types=column_types,
                        uuid_text=uuid_text,
                        datetime_text=datetime_text,
                    ),
                    concat_separators=separators or (),
                )
            )
        except (Untranslatable, DDLError, ValueError) as exc:
            find(Severity.ERROR, "untranslatable", v.name, f"view: {exc}")
            continue
        if separators:
            find(
                Severity.INFO,
                "group-concat",
                v.name,
                "group_concat() promises no order in either engine: the view check"
                " compares the concatenated values in any order",
            )
    columns = {t.name: {c.name: c.pg_type for c in t.columns} for t in tables}
    fn_names: set[str] = set()
    triggers: list[PlanTrigger] = []
    for tr in schema.triggers:
        if accepted.get(f"{tr.name}:trigger"):
            find(Severity.WARNING, "trigger", tr.name, f"trigger on {tr.table} left out (accepted)")
            continue
        try:
            _not_using(tr.sql, virtual, _VIRTUAL)
            _not_using(tr.sql, utc, _UTC)
            _not_concatenating(tr.sql, uuid_names)
            triggers.append(
                translate_trigger(
                    tr.sql,
                    resolve_any,
                    columns,
                    all_booleans,
                    function=lambda n: _name(n, "fn", taken=fn_names),
                    column_types=column_types,
                    uuid_text=uuid_text,
                    datetime_text=datetime_text,
                )
            )
        except (Untranslatable, DDLError, ValueError) as exc:
            find(
                Severity.ERROR,
                "trigger",
                tr.name,
                f"trigger on {tr.table} is not translated to PL/pgSQL ({exc});"
                " accepting migrates without it",
            )
            continue
        find(
            Severity.WARNING,
            "trigger-translated",
            tr.name,
            f"trigger on {tr.table} becomes PL/pgSQL function {triggers[-1].function}():"
            " it runs like SQLite's (never recursively); review it before relying on it",
        )
    stops = blocking(findings, accepted)
    return Plan(
        tables=tuple(tables),
        views=tuple(views),
        triggers=tuple(triggers),
        findings=tuple(findings),
        blocking=tuple(stops),
        needs_citext=needs_citext,
    )


def _index_sql(
    ix: SourceIndex,
    table: str,
    resolve: Callable[[str], str | None],
    booleans: frozenset[str] = frozenset(),
) -> str:
    assert ix.sql is not None
    ddl = parse_create_index(ix.sql)
    terms = []
    for term in ddl.terms:
        if term.collate == "NOCASE":
            raise Untranslatable("COLLATE NOCASE on an index term")
        expr = translate(term.tokens, resolve, booleans=booleans)
        if len(term.tokens) > 1:
            expr = f"({expr})"
        terms.append(expr + (" DESC" if term.desc else ""))
    sql = (
        f"CREATE {'UNIQUE ' if ddl.unique else ''}INDEX {quote_ident(ix.name)} ON {{table}} ("
        + ", ".join(terms)
        + ")"
    )
    if ddl.where:
        sql += " WHERE " + translate(ddl.where, resolve, booleans=booleans)
    return sql


# ---------------------------------------------------------------- SQL the executor runs


def create_table_sql(t: PlanTable, schema: str) -> str:
    parts = []
    for c in t.columns:
        s = f"{quote_ident(c.name)} {c.pg_type}"
        if c.pg_type in ("text", "citext"):  # SQLite's BINARY order, whatever the locale
            s += ' COLLATE "C"'
        if c.identity:
            s += " GENERATED BY DEFAULT AS IDENTITY"
        if c.notnull:
            s += " NOT NULL"
        if c.default_sql is not None and not c.identity:
            s += f" DEFAULT {c.default_sql}"
        parts.append(s)
    parts += [f"CHECK ({x})" for x in t.checks]
    return (
        f"CREATE TABLE {quote_ident(schema)}.{quote_ident(t.name)} (\n  "
        + ",\n  ".join(parts)
        + "\n) WITH (autovacuum_enabled = false)"  # no vacuum racing the load; reset at the swap
    )


def _name(*parts: str, taken: set[str]) -> str:
    """A name in PostgreSQL's default style (`t_pkey`, `t_a_b_key`) within its 63 bytes,
    made unique among `taken`."""
    base, suffix = "_".join(parts[:-1]), "_" + parts[-1]
    n = 0
    while True:
        tail = suffix if n == 0 else f"{suffix}{n}"
        room = 63 - len(tail.encode())
        head = base.encode()[:room].decode(errors="ignore")
        if (name := head + tail) not in taken:
            taken.add(name)
            return name
        n += 1


def index_sql(t: PlanTable, schema: str, taken: set[str]) -> list[tuple[str, str]]:
    """(index name, CREATE INDEX) for every key and index of a table: independent
    statements that PostgreSQL builds in parallel (CREATE INDEX locks out writes, not
    other index builds; ALTER TABLE .. ADD PRIMARY KEY would lock out everything)."""
    qt = f"{quote_ident(schema)}.{quote_ident(t.name)}"
    out = []
    if t.primary_key:
        name = _name(t.name, "pkey", taken=taken)
        cols = ", ".join(quote_ident(c) for c in t.primary_key)
        out.append((name, f"CREATE UNIQUE INDEX {quote_ident(name)} ON {qt} ({cols})"))
    for u in t.uniques:
        name = _name(t.name, *u, "key", taken=taken)
        cols = ", ".join(quote_ident(c) for c in u)
        out.append((name, f"CREATE UNIQUE INDEX {quote_ident(name)} ON {qt} ({cols})"))
    out += [(ix.name, ix.sql.format(table=qt)) for ix in t.indexes]
    return out


def constraint_sql(t: PlanTable, schema: str, indexes: list[tuple[str, str]]) -> list[str]:
    """Once its indexes exist: the table's primary key and unique constraints on them
    (instant), and the identity's next value."""
    qt = f"{quote_ident(schema)}.{quote_ident(t.name)}"
    out = []
    names = [n for n, _sql in indexes]
    if t.primary_key:
        pk = quote_ident(names[0])
        out.append(f"ALTER TABLE {qt} ADD CONSTRAINT {pk} PRIMARY KEY USING INDEX {pk}")
    for name in names[1 if t.primary_key else 0 : (1 if t.primary_key else 0) + len(t.uniques)]:
        out.append(
            f"ALTER TABLE {qt} ADD CONSTRAINT {quote_ident(name)} UNIQUE USING INDEX {quote_ident(name)}"
        )
    out += restart_sql(t, schema)
    return out


def post_load_sql(t: PlanTable, schema: str) -> list[str]:
    """Keys and indexes, built after the bulk load (faster than maintaining them row by
    row): every statement in order, as one connection would run them."""
    indexes = index_sql(t, schema, {ix.name for ix in t.indexes})
    return [sql for _n, sql in indexes] + constraint_sql(t, schema, indexes)


def restart_sql(t: PlanTable, schema: str, restart_with: int | None = None) -> list[str]:
    value = restart_with if restart_with is not None else t.restart_with
    ident = next((c for c in t.columns if c.identity), None)
    if ident is None or value is None:
        return []
    return [
        f"ALTER TABLE {quote_ident(schema)}.{quote_ident(t.name)} ALTER COLUMN"
        f" {quote_ident(ident.name)} RESTART WITH {value}"
    ]


def fk_sql(t: PlanTable, schema: str) -> list[str]:
    qt = f"{quote_ident(schema)}.{quote_ident(t.name)}"
    return [fk.sql.format(table=qt, schema=quote_ident(schema)) for fk in t.fks]


_PRINTF_ARGS = 100  # SQLite takes at most 127 arguments per function call


def _copy_line(t: PlanTable) -> str:
    """The row as one CSV line: printf() per 100 columns instead of a `||` chain.

    printf's `%w` doubles the `"` of a NOT NULL text column in C, where the
    chain ran a replace() and four concatenations per value: the same bytes,
    measured 0.90 s against 1.48 s of SQLite CPU for votes' 0.9 M rows.
    """
    cols = t.columns
    groups = [cols[i : i + _PRINTF_ARGS] for i in range(0, len(cols), _PRINTF_ARGS)]
    return " || ',' || ".join(
        f"printf('{','.join(c.copy_field for c in g)}', {', '.join(c.copy_arg for c in g)})"
        for g in groups
    )


def copy_select(t: PlanTable, rowid: bool = False) -> str:
    """One SQLite SELECT whose single column is the row as one CSV line for COPY
    (after the rowid, if asked)."""
    return f"SELECT {'rowid, ' if rowid else ''}{_copy_line(t)} FROM {quote_ident(t.name)}"


def copy_block_select(t: PlanTable) -> str:
    """(rows, their CSV lines newline-joined): one SQLite step per block, no per-row Python.

    Measured 1.54 s against 1.92 s of fetching line by line for 0.9 M rows.
    """
    return f"SELECT count(*), group_concat({_copy_line(t)}, char(10)) FROM {quote_ident(t.name)}"


def copy_into(t: PlanTable, schema: str) -> str:
    cols = ", ".join(quote_ident(c.name) for c in t.columns)
    return f"COPY {quote_ident(schema)}.{quote_ident(t.name)} ({cols}) FROM STDIN (FORMAT csv)"


# ---------------------------------------------------------------- canonical values


def _piece(v: str | None) -> str:
    return "\\N" if v is None else f"{len(v)}:{v}"


def jsonb_text(value: str) -> str:
    """PostgreSQL's text output of `value::jsonb`, computed without PostgreSQL.

    jsonb keeps the last of duplicate keys, orders keys by length then bytes,
    prints numbers as numeric does (no exponent, no negative zero) and uses
    ", " / ": "; strings are escaped as json's C encoder does, which matches
    PostgreSQL's escape_json.
    """

    def out(v: Any) -> str:
        if isinstance(v, str):
            return _jstr(v)
        if isinstance(v, dict):
            keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
            return "{" + ", ".join(f"{_jstr(k)}: {out(v[k])}" for k in keys) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(out(x) for x in v) + "]"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if v is None:
            return "null"
        if isinstance(v, int):
            return str(v)
        return format(v.copy_abs() if v.is_zero() else v, "f")

    return out(_JSON.decode(value))


_JSON = json.JSONDecoder(parse_float=Decimal)
_jstr: Callable[[str], str] = encode_basestring


def _double(v: Any) -> str:
    return struct.pack(">d", float(v)).hex()


def _numeric(v: Any) -> str:
    """PostgreSQL's trim_scale(x)::text of the number SQLite rendered (`1.0e+20`,
    `10.50`): plain digits, no exponent, no trailing zeros, no negative zero."""
    d = Decimal(v)
    if not d:
        return "0"
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _timestamp(v: Any) -> str:
    d = datetime.fromisoformat(v)
    return d.strftime("%Y-%m-%d %H:%M:%S.%f") + (d.strftime("%z") if d.tzinfo else "")


def _time(v: Any) -> str:
    """PostgreSQL's time output: HH:MM:SS, then the fraction without trailing zeros."""
    t = time.fromisoformat(v)
    fraction = f"{t.microsecond:06d}".rstrip("0")
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}" + (f".{fraction}" if fraction else "")


def _date(v: Any) -> str:
    return date.fromisoformat(v).isoformat()


_FINISH: dict[str, Callable[[Any], str]] = {
    "double": _double,
    "numeric": _numeric,
    "json": jsonb_text,
    "timestamp": _timestamp,
    "date": _date,
    "time": _time,
}


def _plain(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


_FAST: dict[str, Callable[[Any], str]] = {
    "bigint": str,
    "boolean": lambda v: "t" if v in (1, "t", "true") else "f",
    "bytea": lambda v: bytes(v).hex(),
    "text": _plain,
    "citext": _plain,
    "uuid": _plain,
    "inet": _plain,
}


def source_row_hasher(t: PlanTable) -> tuple[str, Callable[..., int]]:
    """(SQLite select list, function(*values) -> signed 64-bit hash of the row's canonical text).

    Raw values are fetched and made canonical in Python: building the text in
    SQLite was measured slower (3.5 s against 0.6 s of fetching for 0.9 M rows).
    Only a column under a policy keeps its SQLite expression, so the hash sees
    exactly the value the policy produced.
    """
    select: list[str] = []
    convert: list[Callable[[Any], str]] = []
    for c in t.columns:
        q = quote_ident(c.name)
        if c.canon_kind != "plain":
            select.append(c.src_canon)
            convert.append(_FINISH[c.canon_kind])
        elif (c.src_value == q and c.pg_type in _FAST and c.pg_type != "text") or (
            c.src_value == q and c.src_canon == q
        ):
            select.append(q)
            convert.append(_FAST[c.pg_type])
        else:
            select.append(f"CASE WHEN {c.src_value} IS NULL THEN NULL ELSE {c.src_canon} END")
            convert.append(_plain)

    return ", ".join(select), _compile_row_hash(convert)


def _compile_row_hash(convert: list[Callable[[Any], str]]) -> Callable[..., int]:
    """A row hasher written out for this table's columns: no per-value loop or call.

    The generated code is built only from column positions, never from names
    or values; it runs about twice as fast as the generic loop (the source
    checksum is the migration's largest CPU cost).
    """
    names = [f"v{i}" for i in range(len(convert))]
    body = [f"def row_hash({', '.join(names)}):"]
    for i, conv in enumerate(convert):
        if conv is _plain:
            value = f"v{i} if v{i}.__class__ is str else str(v{i})"
        elif conv is str:
            value = f"str(v{i})"
        else:
            value = f"c{i}(v{i})"
        body.append(f"    if v{i} is None: p{i} = '\\\\N'")
        body.append(f"    else: s = {value}; p{i} = f'{{len(s)}}:{{s}}'")
    joined = ",".join(f"{{p{i}}}" for i in range(len(convert)))
    body.append(
        f"    return from_bytes(md5(f'{joined}'.encode(), usedforsecurity=False).digest()[:8], 'big', signed=True)"
    )
    scope: dict[str, Any] = {"md5": hashlib.md5, "from_bytes": int.from_bytes}
    scope.update({f"c{i}": conv for i, conv in enumerate(convert)})
    exec("\n".join(body), scope)  # code from column positions only
    fn: Callable[..., int] = scope["row_hash"]
    return fn


def _row_hash_sql(t: PlanTable) -> str:
    """PostgreSQL: a row's signed 64-bit hash of its canonical text (`row_hash`'s twin)."""
    pieces = ", ".join(
        f"CASE WHEN {quote_ident(c.name)} IS NULL THEN '\\N'"
        f" ELSE length({c.pg_canon}) || ':' || {c.pg_canon} END"
        for c in t.columns
    )
    return f"('x' || substr(md5(concat_ws(',', {pieces})), 1, 16))::bit(64)::bigint"


def pg_checksum_sql(t: PlanTable, schema: str, where: str = "") -> str:
    """count(*) and the sum of the rows' 64-bit hashes, over PostgreSQL's stored values."""
    return (
        f"SELECT count(*), coalesce(sum({_row_hash_sql(t)}), 0)"
        f" FROM {quote_ident(schema)}.{quote_ident(t.name)} {where}"
    )


def pg_row_hashes_sql(
    t: PlanTable, schema: str, keys: Sequence[str], tail: str = "", source: str = ""
) -> str:
    """Each row's `keys` (SQL expressions) and hash; `tail` is a WHERE or ORDER BY, and
    `source` a FROM clause other than the table. The keys are renamed: an ORDER BY
    "n" would otherwise sort by the output `"n"::text`."""
    named = ", ".join(f"{k} AS shipyard_key{i}" for i, k in enumerate(keys))
    source = source or f"{quote_ident(schema)}.{quote_ident(t.name)}"
    return f"SELECT {named}, {_row_hash_sql(t)} FROM {source}{tail}"


_KEY_TYPES = ("bigint", "text", "citext", "uuid", "boolean", "bytea")


@dataclass(frozen=True)
class KeyWalk:
    """How to read both sides' rows in primary-key order and walk them side by side:
    the key's canonical text on each side, each side's ORDER BY, and a Python sort
    key over those texts that orders them as both engines order the keys."""

    sqlite_key_exprs: tuple[str, ...]
    pg_keys: tuple[str, ...]
    sqlite_order: str
    pg_order: str
    numeric: tuple[bool, ...]
    columns: tuple[str, ...] = ()
    by_value: bool = False  # SQLite's stored keys equal their canonical text (or its number)
    pg_types: tuple[str, ...] = ()  # the key columns' PostgreSQL types

    @property
    def sqlite_keys(self) -> str:
        return ", ".join(self.sqlite_key_exprs)

    def pg_params(self, keys: Sequence[Sequence[str]]) -> tuple[list[str], ...]:
        """One text array per key column, for unnest()."""
        return tuple([k[i] for k in keys] for i in range(len(self.pg_keys)))

    def sqlite_params(self, keys: Sequence[Sequence[str]]) -> list[Any]:
        """The keys as SQLite stores them, flat, for `catch_up_where_sql`."""
        return [int(v) if n else v for k in keys for v, n in zip(k, self.numeric, strict=True)]

    def sort_key(self, key: Sequence[Any]) -> tuple[Any, ...]:
        """Numbers as numbers, the rest as text: Python compares text by code point,
        which is UTF-8's byte order — SQLite's BINARY and PostgreSQL's "C"; uuid orders
        as its hex digits, boolean as 'f' < 't'. A key without numbers is its own sort
        key (no call per row: `sorts_as_is`)."""
        return tuple(int(v) if n else v for v, n in zip(key, self.numeric, strict=True))

    @property
    def sorts_as_is(self) -> bool:
        return not any(self.numeric)


def key_walk(t: PlanTable) -> KeyWalk | None:
    """None without a primary key, or where a key column's canonical text would not
    order as the engines order it (doubles, timestamps, text under a policy …)."""
    if not t.primary_key:
        return None
    cols = {c.name: c for c in t.columns}
    for k in t.primary_key:
        c = cols[k]
        q = quote_ident(c.name)
        text_like = c.pg_type in ("text", "citext", "uuid")
        if (
            c.pg_type not in _KEY_TYPES
            or c.canon_kind != "plain"
            or c.src_value != q
            or (text_like and c.src_canon != q)
        ):
            return None
    return KeyWalk(
        columns=tuple(t.primary_key),
        by_value=all(
            cols[k].pg_type in ("bigint", "text", "citext", "uuid") for k in t.primary_key
        ),
        sqlite_key_exprs=tuple(cols[k].src_canon for k in t.primary_key),
        pg_keys=tuple(cols[k].pg_canon for k in t.primary_key),
        sqlite_order=_order_by(t, "sqlite"),
        pg_order=_order_by(t, "pg"),
        numeric=tuple(cols[k].pg_type == "bigint" for k in t.primary_key),
        pg_types=tuple(cols[k].pg_type for k in t.primary_key),
    )


def bucketed(t: PlanTable) -> KeyWalk | None:
    """Tables validated per key-prefix bucket: a primary key whose first column is
    text, citext or uuid, other than the rowid. Such keys sort by their prefixes,
    so both engines read each bucket in key order, and a catch-up knows from the
    digests alone which few buckets to walk and to check again."""
    walk = key_walk(t)
    if walk is None or chunked(t) or not walk.by_value or walk.numeric[0]:
        return None
    return walk


def bucket_digest_sql(
    t: PlanTable, walk: KeyWalk, width: int, only: bool = False
) -> tuple[str, str]:
    """(SQLite, PostgreSQL) queries of (bucket, rows, the bucket's canonical lines in
    key order): rows bucketed by the first `width` characters of the first key
    column's canonical text. Both engines render and join a bucket in C; Python then
    hashes one text per bucket. Both read in key order through the key's index and
    group what arrives, in arrival order (PostgreSQL by hashing, with sorts off:
    4.1 s against 5.4 s for an aggregate ordering each bucket itself). A bucket that differs only by the order an engine
    grouped it in costs a second look, never a wrong pass. With `only`, just the
    buckets of one parameter: a JSON array (SQLite), a text array (PostgreSQL).
    """
    b_sqlite = f"substr({walk.sqlite_key_exprs[0]}, 1, {width})"
    sqlite = (
        f"SELECT b, count(*), group_concat(l, char(10)) FROM"
        f" (SELECT {b_sqlite} AS b, {source_line_sql(t)} AS l FROM {quote_ident(t.name)}"
        + (f" WHERE {b_sqlite} IN (SELECT value FROM json_each(?))" if only else "")
        + f" ORDER BY {walk.sqlite_order}) GROUP BY b"
    )
    pg = (
        f"SELECT b, count(*), md5(string_agg(l, E'\\n')) FROM"
        f" (SELECT substr({walk.pg_keys[0]}, 1, {width}) AS b, {pg_line_sql(t)} AS l"
        f" FROM {pg_bucket_from(t, walk, width, '{table}') if only else '{table}'}"
        f" ORDER BY {walk.pg_order}) lines GROUP BY b"
    )
    return sqlite, pg


def bucket_range_sqlite(t: PlanTable, walk: KeyWalk, width: int) -> str | None:
    """SQLite's query of one bucket (bucket, rows, lines) read as a range of its key's
    index: parameters (prefix, `prefix_upper(prefix)`). The `only` form of `bucket_digest_sql` filters by prefix, so it reads the
    whole index (0.2 s for 1 M uuids, per changed bucket set). None where a range of
    the stored text is not the bucket: other key types, or citext (NOCASE) keys."""
    first = next(c for c in t.columns if c.name == walk.columns[0])
    if first.pg_type not in ("text", "uuid"):
        return None
    key = walk.sqlite_key_exprs[0]
    b_sqlite = f"substr({key}, 1, {width})"
    return (
        f"SELECT b, count(*), group_concat(l, char(10)) FROM"
        f" (SELECT {b_sqlite} AS b, {source_line_sql(t)} AS l FROM {quote_ident(t.name)}"
        f" WHERE {key} >= ?1 AND {key} < ?2 AND {b_sqlite} = ?1"
        f" ORDER BY {walk.sqlite_order}) GROUP BY b"
    )


def prefix_upper(prefix: str) -> str | None:
    """The least text above every text that starts with `prefix` (in code point order),
    or None if there is none."""
    p = prefix.rstrip(chr(0x10FFFF))
    if not p:
        return None
    nxt = ord(p[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not text: jump past them
        nxt = 0xE000
    return p[:-1] + chr(nxt)


def pg_bucket_from(t: PlanTable, walk: KeyWalk, width: int, table: str) -> str:
    """The FROM clause that keeps only the rows of the buckets of one text[] parameter.
    A uuid key's bucket is a range of uuids, read through the key's index, one range
    after another (a subquery PostgreSQL cannot flatten, so no plan scans the whole
    index to skip a sort of a few rows; a catch-up that touched 2 buckets of a
    1 M-row table: ms, not a 1 s scan). Other keys' buckets are filtered by prefix."""
    first = next(c for c in t.columns if c.name == walk.columns[0])
    if first.pg_type == "uuid" and width <= 8:  # no dash within 8 characters
        col = quote_ident(first.name)
        return (
            "unnest(%s::text[]) AS shipyard_p, LATERAL (SELECT * FROM"
            f" {table} WHERE {col} BETWEEN rpad(shipyard_p, 32, '0')::uuid"
            f" AND rpad(shipyard_p, 32, 'f')::uuid OFFSET 0) AS {quote_ident(t.name)}"
        )
    return f"{table} WHERE substr({walk.pg_keys[0]}, 1, {width}) = ANY(%s::text[])"


ROWID_BUCKET = 1024  # rowids a catch-up compares row by row when their digests differ


def rowid_bucket_sql(t: PlanTable, schema: str, rng: tuple[int, int]) -> tuple[str, str]:
    """(SQLite, PostgreSQL) queries of (bucket, rows, the bucket's canonical lines in
    key order) over one rowid range of a table keyed by its rowid, by ROWID_BUCKET
    rowids (integer division truncates towards zero in both engines). A catch-up
    narrows a range whose digests differ to its few differing buckets before
    hashing rows in Python (17 µs a row: a 200 k-row range took 3.5 s)."""
    ident = quote_ident(next(c.name for c in t.columns if c.identity))
    lo, hi = int(rng[0]), int(rng[1])
    sqlite = (
        f"SELECT b, count(*), group_concat(l, char(10)) FROM"
        f" (SELECT rowid / {ROWID_BUCKET} AS b, {source_line_sql(t)} AS l"
        f" FROM {quote_ident(t.name)} WHERE rowid BETWEEN {lo} AND {hi} ORDER BY rowid)"
        " GROUP BY b"
    )
    pg = (
        f"SELECT b, count(*), md5(string_agg(l, E'\\n')) FROM"
        f" (SELECT {ident} / {ROWID_BUCKET} AS b, {pg_line_sql(t)} AS l"
        f" FROM {quote_ident(schema)}.{quote_ident(t.name)} WHERE {ident} BETWEEN {lo} AND {hi}"
        f" ORDER BY {ident}) lines GROUP BY b"
    )
    return sqlite, pg


def rowid_bucket_range(b: int) -> tuple[int, int]:
    """The rowids of bucket `b` (bucket 0 holds the negative ones down to -1023 too)."""
    n = ROWID_BUCKET
    if b > 0:
        return b * n, b * n + n - 1
    if b < 0:
        return b * n - n + 1, b * n
    return -n + 1, n - 1


def bucket_total(buckets: Mapping[str, str]) -> str:
    """One table's digest from its buckets' (each "rows:md5"), the same on both sides."""
    joined = "".join(f"{b} {buckets[b]}\n" for b in sorted(buckets))
    return hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest()


def bucket_width(rows: int) -> int:
    """Key-prefix characters per bucket: at most about a thousand rows a bucket for hex
    keys. PostgreSQL digests 4096 buckets of a 1 M-row table as fast as one ordered
    digest (4.3-4.9 s against 4.3-4.4 s), 65536 buckets in 5.0-5.7 s; a catch-up then
    walks a few hundred rows per changed bucket, a few milliseconds."""
    width = 1
    while 16**width * 1000 < rows and width < 6:
        width += 1
    return width


def keyed_where_pg(walk: KeyWalk) -> str:
    """PostgreSQL WHERE over the given keys (canonical text, one array per column).

    Keys of text, uuid and bigint columns (whose canonical text is the value's text)
    are compared as values, so the primary key's index finds them: deleting 2 rows
    of a 1 M-row uuid-keyed table by canonical text scans it all (citext keeps the
    text comparison: its cast depends on where the extension lives)."""
    arrays = ", ".join(["%s::text[]"] * len(walk.pg_keys))
    if (
        walk.by_value
        and walk.pg_types
        and len(walk.pg_types) == len(walk.columns)
        and all(typ in ("text", "uuid", "bigint") for typ in walk.pg_types)
    ):
        names = ", ".join(f"k{i}" for i in range(len(walk.columns)))
        casts = ", ".join(f"k{i}::{typ}" for i, typ in enumerate(walk.pg_types))
        cols = ", ".join(quote_ident(c) for c in walk.columns)
        return (
            f" WHERE ({cols}) IN (SELECT {casts} FROM unnest({arrays}) AS shipyard_keys({names}))"
        )
    return f" WHERE ({', '.join(walk.pg_keys)}) IN (SELECT * FROM unnest({arrays}))"


def catch_up_delete_sql(t: PlanTable, schema: str, walk: KeyWalk) -> str:
    """Delete the rows of the given keys (canonical text, one array per column)."""
    return f"DELETE FROM {quote_ident(schema)}.{quote_ident(t.name)}{keyed_where_pg(walk)}"


def catch_up_where_sql(walk: KeyWalk) -> tuple[Callable[[int], str], int]:
    """(WHERE clause for n keys, keys per statement): the source rows of those keys,
    compared as SQLite stores them, so its primary-key index finds them."""
    cols = [quote_ident(c) for c in walk.columns]
    row = "(" + ", ".join("?" * len(cols)) + ")"

    def where(n: int) -> str:
        if len(cols) == 1:
            return f" WHERE {cols[0]} IN ({', '.join('?' * n)})"
        return f" WHERE ({', '.join(cols)}) IN (VALUES {', '.join([row] * n)})"

    return where, max(1, 5000 // len(cols))  # SQLite takes 32766 parameters per statement


# ---------------------------------------------------------------- ordered chunk digests
#
# The validation's fast path. Both sides render one canonical line per row in
# SQL (C speed), join the lines of a key range in key order and hash them once:
# no per-row work in Python. Measured on 0.9 M rows: 1.8 s of SQLite CPU with
# the GIL released, against 3.3 s of Python per-row hashing. Where a digest
# differs, the per-row order-independent checksum above decides (a different
# order can then never fail a correct table) and names the differing keys.


def _nullable(finish: Callable[[Any], str]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else finish(v)


_PYTHON_FINISHED = ("double", "numeric", "time")  # SQLite calls shipyard_<kind>() per value
CANON_FUNCTIONS: dict[str, Callable[[Any], str | None]] = {
    **{f"shipyard_{kind}": _nullable(_FINISH[kind]) for kind in _PYTHON_FINISHED},
    "shipyard_json_piece": _nullable(lambda v: _prefixed(jsonb_text(v))),
}
_NO_SEPARATORS = {
    *("bigint", "boolean", "bytea", "double precision", "timestamp", "timestamptz", "date"),
    "uuid",
    "interval",
}


def _prefixed(text: str) -> str:
    return f"{len(text)}:{text}"


def _line(pieces: list[tuple[str | None, str, bool]]) -> str:
    """One canonical text line from (null test or None for NOT NULL, text, may contain
    separators) per column."""
    out = []
    for value, text, prefixed in pieces:
        body = f"length({text}) || ':' || {text}" if prefixed else text
        out.append(
            body if value is None else f"CASE WHEN {value} IS NULL THEN '\\N' ELSE {body} END"
        )
    return " || ',' || ".join(out)


def _sqlite_timestamp(v: str) -> str:
    """The ISO text the scan admitted (date, then [ T]HH:MM[:SS[.fraction]]) in
    PostgreSQL's to_char(.., 'YYYY-MM-DD HH24:MI:SS.US') layout, by string slicing:
    strftime() would round the fraction through milliseconds."""
    return (
        f"substr({v}, 1, 10) || ' ' || CASE WHEN length({v}) = 10 THEN '00:00:00'"
        f" ELSE substr({v}, 12, 5) || ':' || CASE WHEN length({v}) >= 19 THEN substr({v}, 18, 2) ELSE '00' END END"
        f" || '.' || substr(substr({v}, 21) || '000000', 1, 6)"
    )


def source_line_sql(t: PlanTable) -> str:
    """SQLite expression: the row's canonical line, the same text `pg_line_sql` renders.

    Python finishes only doubles (IEEE bytes), decimals, times and JSON (jsonb's
    normal form), through functions the reader registers (`CANON_FUNCTIONS`).
    """
    pieces = []
    for c in t.columns:
        prefixed = c.pg_type not in _NO_SEPARATORS
        if c.canon_kind in _PYTHON_FINISHED:
            text = f"shipyard_{c.canon_kind}({c.src_canon})"
        elif c.canon_kind == "json":
            text, prefixed = f"shipyard_json_piece({c.src_canon})", False
        elif c.canon_kind == "timestamp":
            text = _sqlite_timestamp(c.src_canon)
        else:
            text = c.src_canon
        pieces.append((None if _never_null(c) else c.src_value, text, prefixed))
    return _line(pieces)


def _never_null(c: PlanColumn) -> bool:
    """NOT NULL holds on both sides (SQLite enforced it, PostgreSQL does), unless a
    policy turns values into NULL."""
    return c.notnull and c.src_value == quote_ident(c.name)


def pg_line_sql(t: PlanTable) -> str:
    return _line(
        [
            (
                None if _never_null(c) else quote_ident(c.name),
                c.pg_canon,
                c.pg_type not in _NO_SEPARATORS,
            )
            for c in t.columns
        ]
    )


def stream_digested(t: PlanTable) -> bool:
    """The COPY text itself is the canonical form: every field renders one-to-one and
    PostgreSQL can render its stored values the same way, and rows go in rowid order.
    The copy then hashes what it sends, and the source is read once, not twice
    (votes: 1.6 s of SQLite rendering saved)."""
    return chunked(t) and all(c.pg_copy is not None for c in t.columns)


def ordered(t: PlanTable) -> bool:
    """Tables with a primary key have an order both engines agree on; the rest are
    checked row by row, order-independently."""
    return bool(t.primary_key)


def chunked(t: PlanTable) -> bool:
    """Tables whose key is the rowid are digested per rowid range, in parallel."""
    return t.has_rowid and any(c.identity for c in t.columns)


def _order_by(t: PlanTable, engine: str) -> str:
    """Key order as both engines see it: bytes for text (SQLite BINARY = PostgreSQL "C")."""
    types = {c.name: c.pg_type for c in t.columns}
    terms = []
    for k in t.primary_key:
        q = quote_ident(k)
        if types.get(k) in ("text", "citext"):
            q = f"{q} COLLATE BINARY" if engine == "sqlite" else f'{q}::text COLLATE "C"'
        terms.append(q)
    return ", ".join(terms)


def source_digest_sql(t: PlanTable, where: str = "") -> str:
    """SQLite: (rows, the canonical lines of the range in key order, newline-joined).

    A rowid range is read in rowid order; other keys go through an ordered
    subquery, which SQLite never flattens into an aggregate.
    """
    line = source_line_sql(t)
    qt = quote_ident(t.name)
    if chunked(t):
        return f"SELECT count(*), group_concat({line}, char(10)) FROM {qt}{where}"
    return (
        f"SELECT count(*), group_concat(l, char(10)) FROM"
        f" (SELECT {line} AS l FROM {qt}{where} ORDER BY {_order_by(t, 'sqlite')})"
    )


def pg_digest_sql(t: PlanTable, schema: str, rng: tuple[int, int] | None) -> str:
    """PostgreSQL: (rows, md5 of the same text the source side hashed) over the stored
    values: the COPY lines, each ending in a newline, or the canonical lines joined.

    The lines come from a subquery in key order rather than `string_agg(.. ORDER BY)`:
    PostgreSQL 15 sorts an ordered aggregate's input itself even when the rows already
    arrive in order (votes: 1.2 s against 0.8 s). A subquery with ORDER BY is never
    flattened, and the caller turns parallel plans off, so the aggregate reads the
    subquery's order. Should a plan ever read them out of order, the digest differs
    and validation fails loudly: order can cost a false alarm, never a false pass.
    """
    where = ""
    if rng is not None:
        ident = next(c for c in t.columns if c.identity)
        where = f" WHERE {quote_ident(ident.name)} BETWEEN {int(rng[0])} AND {int(rng[1])}"
    if stream_digested(t):
        line, sep = " || ',' || ".join(str(c.pg_copy) for c in t.columns) + " || E'\\n'", "''"
    else:
        line, sep = pg_line_sql(t), "E'\\n'"
    return (
        f"SELECT count(*), md5(coalesce(string_agg(l, {sep}), ''))"
        f" FROM (SELECT {line} AS l FROM {quote_ident(schema)}.{quote_ident(t.name)}{where}"
        f" ORDER BY {_order_by(t, 'pg')}) lines"
    )


_EXACT = 2**53  # integers a double holds exactly


def loose_value(v: Any) -> str:
    """A view cell compared across engines: numbers to 12 significant digits, bytes as hex,
    and text in the loose form of the value PostgreSQL would return for it (`_loose_text`)."""
    kind = type(v)  # exact types first: most cells are one of these (half the time per row)
    if kind is int and -_EXACT < v < _EXACT:
        return str(v)
    if kind is str:
        return _loose_text(v)
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int | float | Decimal):
        f = float(v)
        return str(int(f)) if f.is_integer() and abs(f) < _EXACT else f"{f:.12g}"
    if isinstance(v, bytes | memoryview):
        return bytes(v).hex()
    if isinstance(v, datetime):
        return _loose_datetime(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, time):
        return v.isoformat(timespec="microseconds")
    if isinstance(v, UUID):  # a uuid column, as SQLite holds it: 32 hex digits
        return v.hex
    if isinstance(v, dict | list):  # json/jsonb, which psycopg hands over parsed
        return _loose_json(v)
    return str(v)


_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
_TIME_OF_DAY = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?\Z")
_DASHED_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def _loose_text(v: str) -> str:
    """SQLite returns a view's JSON, datetime, time and uuid columns as the text it
    holds; PostgreSQL returns jsonb (its own key order and spacing), timestamps, times
    and uuids. Text that reads as one of those is compared as that value, on both
    sides alike, so a view that merely selects such a column does not fail the check
    (text a PostgreSQL text column holds is read the same way, so nothing is missed)."""
    head = v[:1]
    if head == "{" or head == "[":
        try:
            return _loose_json(json.loads(v))
        except (ValueError, RecursionError):
            return v
    if len(v) >= 16 and _ISO_DATETIME.match(v):
        try:
            return _loose_datetime(datetime.fromisoformat(v))
        except ValueError:
            return v
    if 5 <= len(v) <= 15 and _TIME_OF_DAY.match(v):
        try:
            return time.fromisoformat(v).isoformat(timespec="microseconds")
        except ValueError:
            return v
    if len(v) == 36 and _DASHED_UUID.match(v):
        return v.replace("-", "")
    return v


def _loose_datetime(v: datetime) -> str:
    """An instant with an offset is compared in UTC, as a naive one would be stored."""
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v.isoformat(sep=" ", timespec="microseconds")


def _loose_json(v: Any) -> str:
    """JSON as a value: keys in one order (jsonb reorders them), numbers loose (jsonb
    keeps 2.50 where psycopg hands over 2.5), strings quoted so "1" is not 1."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_loose_json(v[k])}" for k in sorted(v)) + "}"
    if isinstance(v, list):
        return "[" + ",".join(map(_loose_json, v)) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    if v is True or v is False or v is None:
        return json.dumps(v)
    return loose_value(v)


# ---------------------------------------------------------------- what a person reads


def plan_markdown(plan: Plan, source: str) -> str:
    lines = [f"# Migration plan: `{source}`", ""]
    if plan.blocking:
        lines += ["**Blocked** by these errors (accept by key to override):", ""]
        lines += [f"- `{f.key}`: {f.message}" for f in plan.blocking]
        lines.append("")
    for t in plan.tables:
        lines += [
            f"## {t.name} ({t.rows} rows)",
            "",
            "| column | PostgreSQL type | not null | default |",
            "|---|---|---|---|",
        ]
        for c in t.columns:
            pg = c.pg_type + (" identity" if c.identity else "")
            lines.append(
                f"| {c.name} | {pg} | {'yes' if c.notnull else ''} | {c.default_sql or ''} |"
            )
        extra = []
        if t.primary_key:
            extra.append(f"primary key ({', '.join(t.primary_key)})")
        extra += [f"unique ({', '.join(u)})" for u in t.uniques]
        extra += [f"check {c}" for c in t.checks]
        extra += [ix.sql.format(table=t.name) for ix in t.indexes]
        extra += [
            fk.sql.format(table=t.name, schema="").replace("REFERENCES .", "REFERENCES ")
            for fk in t.fks
        ]
        if t.restart_with:
            extra.append(f"identity restarts at {t.restart_with}")
        lines += ["", *[f"- {x}" for x in extra], ""]
    for v in plan.views:
        lines += [f"## view {v.name}", "", f"`{v.select_sql}`", ""]
    for tr in plan.triggers:
        when = f" when `{tr.when}`" if tr.when else ""
        lines += [
            f"## trigger {tr.name}",
            "",
            f"{tr.timing} {tr.event} on {tr.table}{when}: PL/pgSQL function {tr.function}()",
            "",
            *[f"- `{x.replace(LEAVE, 'skip the row')}`" for x in tr.statements],
            "",
        ]
    if plan.findings:
        lines += [
            "## Findings",
            "",
            "| severity | key | count | rows | message |",
            "|---|---|---|---|---|",
        ]
        for f in plan.findings:
            rows = ", ".join(map(str, f.rowids))
            lines.append(f"| {f.severity} | `{f.key}` | {f.count or ''} | {rows} | {f.message} |")
    return "\n".join(lines)
