"""SQLite triggers as PL/pgSQL: a trigger function plus a row trigger that calls it.

SQLite trigger bodies are a short list of UPDATE / INSERT / DELETE statements
and `SELECT RAISE(...)` guards over NEW and OLD; each becomes the same
statement in PL/pgSQL. What has no faithful equivalent (INSTEAD OF triggers,
`UPDATE OR REPLACE`, other SELECTs, SQLite-only functions) raises
`Untranslatable`, and the plan keeps it as a blocking finding.

Two SQLite semantics are kept on purpose:
- **No recursion.** SQLite (recursive_triggers off, the default) never fires a
  trigger while it is already running, so the classic `AFTER UPDATE ... UPDATE
  t SET updated_at = ...` touches the row once; PostgreSQL would fire it again
  until the stack overflows. A transaction-local flag per trigger skips the
  nested call, and like any setting it is undone with the (sub)transaction
  that set it.
- **Row results.** BEFORE triggers return the row unchanged (SQLite cannot
  change NEW), AFTER triggers return nothing; `RAISE(IGNORE)` skips the row.

One difference stays, and the plan's warning asks for a review: PostgreSQL
runs AFTER row triggers when the statement ends, SQLite right after each row,
so an AFTER trigger that reads its own table sees every row of a multi-row
statement already changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from tasks.core.sqlddl import (
    DDLError,
    Tok,
    Untranslatable,
    _boolean_literals,
    _is,
    paren_body,
    split_top,
    tokenize,
    translate,
)
from tasks.core.sqlmap import quote_ident

Resolve = Callable[[str], str | None]
LEAVE = "\x00leave\x00"  # RAISE(IGNORE): clear the flag, then skip the row (no SQL holds NUL)


class PlanTrigger(BaseModel):
    """A translated trigger; created disabled in staging, enabled by the swap."""

    model_config = ConfigDict(frozen=True)
    name: str
    table: str
    function: str  # the trigger function's name, in the same schema as the table
    timing: str  # BEFORE | AFTER
    event: str  # INSERT | DELETE | UPDATE [OF "a", "b"]
    when: str | None  # the WHEN condition over NEW/OLD, already PostgreSQL
    statements: tuple[str, ...]  # PL/pgSQL statements, each ending in ';'
    probes: tuple[str, ...] = ()  # the same SQL with NEW/OLD as typed NULLs, for EXPLAIN


def _guard(t: PlanTrigger) -> str:
    """The transaction-local setting that marks the trigger as running (a custom GUC
    name: a prefix, a dot, an identifier)."""
    digest = hashlib.sha256(f"{t.table}\x00{t.name}".encode()).hexdigest()[:20]
    return f"shipyard.trigger_{digest}"


def function_body(t: PlanTrigger) -> str:
    ret = "NULL" if t.timing == "AFTER" else ("OLD" if t.event == "DELETE" else "NEW")
    guard = _guard(t)
    lines = [
        "BEGIN",
        f"  IF current_setting('{guard}', true) = 'on' THEN RETURN {ret}; END IF;",
        f"  PERFORM set_config('{guard}', 'on', true);",
        *[
            "  " + s.replace(LEAVE, f"PERFORM set_config('{guard}', '', true); RETURN NULL;")
            for s in t.statements
        ],
        f"  PERFORM set_config('{guard}', '', true);",
        f"  RETURN {ret};",
        "END",
    ]
    return "\n".join(lines)


def _dollar_quote(body: str) -> str:
    tag = "shipyard"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}${body}${tag}$"


def trigger_sql(t: PlanTrigger, schema: str, search_path: str) -> list[str]:
    """CREATE FUNCTION and CREATE TRIGGER in `schema`, the trigger left disabled: the
    catch-up of a cutover writes to staging and must not fire it. The function
    resolves tables through `search_path` (where the tables will live after the swap)."""
    qs = quote_ident(schema)
    fn = f"{qs}.{quote_ident(t.function)}"
    qt = f"{qs}.{quote_ident(t.table)}"
    when = f" WHEN ({t.when})" if t.when else ""
    return [
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql"
        f" SET search_path = {search_path} AS {_dollar_quote(function_body(t))}",
        f"CREATE TRIGGER {quote_ident(t.name)} {t.timing} {t.event} ON {qt}"
        f" FOR EACH ROW{when} EXECUTE FUNCTION {fn}()",
        f"ALTER TABLE {qt} DISABLE TRIGGER {quote_ident(t.name)}",
    ]


# ---------------------------------------------------------------- translation


def _rows_refs(toks: list[Tok], row: Mapping[str, str] | None = None) -> list[Tok]:
    """NEW.x / OLD.x: the record names pass through as keywords, never resolved. For a
    probe (`row`: the trigger table's column types), `NEW.x` becomes a NULL of x's type,
    so PostgreSQL can type-check the statement outside the trigger."""
    out: list[Tok] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        if (
            t.kind == "word"
            and t.text.upper() in ("NEW", "OLD")
            and k + 1 < len(toks)
            and toks[k + 1].text == "."
        ):
            if row is None:
                out.append(Tok("record", t.text.upper()))
                k += 1
                continue
            col = toks[k + 2] if k + 2 < len(toks) else t
            real = next((n for n in row if n.lower() == col.text.lower()), None)
            if real is None:
                raise Untranslatable(f"unknown column {t.text}.{col.text}")
            out.append(Tok("record", f"CAST(NULL AS {row[real]})"))
            k += 3
            continue
        out.append(t)
        k += 1
    return out


def _find_top(toks: Sequence[Tok], *words: str, start: int = 0) -> int:
    """Index of the first top-level keyword among `words`, or len(toks)."""
    depth = 0
    for i in range(start, len(toks)):
        t = toks[i]
        depth += t.kind == "lp"
        depth -= t.kind == "rp"
        if depth == 0 and _is(t, *words):
            return i
    return len(toks)


class _Context:
    def __init__(
        self,
        resolve: Resolve,
        columns: Mapping[str, Mapping[str, str]],
        booleans: frozenset[str],
        column_types: Mapping[str, str],
        uuid_text: Mapping[str, str] = {},
        datetime_text: Mapping[str, str] = {},
    ) -> None:
        self.resolve = resolve
        self.columns = columns
        self.booleans = booleans
        self.column_types = column_types
        self.uuid_text = uuid_text
        self.datetime_text = datetime_text
        self.row: Mapping[str, str] | None = None  # set: render probes, not PL/pgSQL

    @property
    def probe(self) -> bool:
        return self.row is not None

    def expr(self, toks: Sequence[Tok], pg_type: str | None = None) -> str:
        if not toks:
            raise DDLError("empty expression in a trigger")
        if pg_type == "boolean" and len(toks) == 1 and toks[0].text in ("0", "1"):
            return "TRUE" if toks[0].text == "1" else "FALSE"
        return translate(  # 0/1 against a boolean column first: a probe hides the column
            _rows_refs(_boolean_literals(list(toks), self.booleans), self.row),
            self.resolve,
            now_as_text=pg_type in ("text", "citext"),
            booleans=self.booleans,
            column_types=self.column_types,
            uuid_text=self.uuid_text,
            datetime_text=self.datetime_text,
        )

    def table(self, tok: Tok) -> tuple[str, Mapping[str, str]]:
        if tok.kind not in ("word", "ident"):
            raise DDLError(f"expected a table name, found {tok.text!r}")
        real = next((n for n in self.columns if n.lower() == tok.text.lower()), None)
        if real is None:
            raise Untranslatable(f"table {tok.text} is not migrated")
        return real, self.columns[real]

    def column(self, cols: Mapping[str, str], tok: Tok) -> str:
        real = next((n for n in cols if n.lower() == tok.text.lower()), None)
        if tok.kind not in ("word", "ident") or real is None:
            raise Untranslatable(f"unknown column {tok.text}")
        return real


def _update(toks: list[Tok], ctx: _Context) -> str:
    if _is(toks[1], "OR"):
        raise Untranslatable(f"UPDATE OR {toks[2].text}")
    name, cols = ctx.table(toks[1])
    if not _is(toks[2], "SET"):
        raise DDLError("UPDATE without SET")
    where = _find_top(toks, "WHERE", start=3)
    if _find_top(toks, "FROM", "ORDER", "LIMIT", "RETURNING", start=3) < len(toks):
        raise Untranslatable("UPDATE with FROM, ORDER BY, LIMIT or RETURNING")
    sets = []
    for part in split_top(toks[3:where]):
        if len(part) < 3 or part[1].text not in ("=", "=="):
            raise Untranslatable("UPDATE of a row value")
        col = ctx.column(cols, part[0])
        sets.append(f"{quote_ident(col)} = {ctx.expr(part[2:], cols[col])}")
    sql = f"UPDATE {quote_ident(name)} SET {', '.join(sets)}"
    if where < len(toks):
        sql += f" WHERE {ctx.expr(toks[where + 1 :])}"
    return sql + ("" if ctx.probe else ";")


def _insert(toks: list[Tok], ctx: _Context) -> str:
    if _is(toks[1], "OR") or _is(toks[0], "REPLACE"):
        raise Untranslatable("INSERT OR REPLACE/IGNORE")
    if not _is(toks[1], "INTO"):
        raise DDLError("INSERT without INTO")
    name, cols = ctx.table(toks[2])
    k = 3
    targets = list(cols)
    if k < len(toks) and toks[k].kind == "lp":
        body, k = paren_body(toks, k)
        targets = [ctx.column(cols, p[0]) for p in split_top(body)]
    head = f"INSERT INTO {quote_ident(name)} ({', '.join(quote_ident(c) for c in targets)})"
    if _find_top(toks, "ON", "RETURNING", start=k) < len(toks):
        raise Untranslatable("INSERT with an upsert or RETURNING clause")
    if k < len(toks) and _is(toks[k], "VALUES"):
        rows = []
        rest = toks[k + 1 :]
        for row in split_top(rest):
            if row[0].kind != "lp":
                raise DDLError("VALUES without a row")
            values = split_top(paren_body(row, 0)[0])
            if len(values) != len(targets):
                raise DDLError(f"{len(values)} values for {len(targets)} columns")
            rows.append(
                "("
                + ", ".join(ctx.expr(v, cols[c]) for v, c in zip(values, targets, strict=True))
                + ")"
            )
        return f"{head} VALUES {', '.join(rows)}" + ("" if ctx.probe else ";")
    if k < len(toks) and _is(toks[k], "SELECT"):
        return f"{head} {ctx.expr(toks[k:])}" + ("" if ctx.probe else ";")
    raise Untranslatable("INSERT ... DEFAULT VALUES")


def _delete(toks: list[Tok], ctx: _Context) -> str:
    if not _is(toks[1], "FROM"):
        raise DDLError("DELETE without FROM")
    name, _cols = ctx.table(toks[2])
    end = "" if ctx.probe else ";"
    if len(toks) == 3:
        return f"DELETE FROM {quote_ident(name)}{end}"
    if not _is(toks[3], "WHERE") or _find_top(toks, "ORDER", "LIMIT", "RETURNING") < len(toks):
        raise Untranslatable("DELETE with ORDER BY, LIMIT or RETURNING")
    return f"DELETE FROM {quote_ident(name)} WHERE {ctx.expr(toks[4:])}{end}"


def _raise(args: list[Tok]) -> str:
    parts = split_top(args)
    kind = parts[0][0].text.upper() if parts and parts[0] else ""
    if kind == "IGNORE" and len(parts) == 1:
        return LEAVE
    if kind in ("ABORT", "FAIL", "ROLLBACK") and len(parts) == 2:
        msg = parts[1]
        if len(msg) != 1 or msg[0].kind != "str":
            raise Untranslatable("RAISE with a message that is not a string literal")
        return f"RAISE EXCEPTION USING MESSAGE = {msg[0].text};"
    raise DDLError("RAISE needs IGNORE, or ABORT/FAIL/ROLLBACK and a message")


def _select(toks: list[Tok], ctx: _Context) -> str:
    """`SELECT RAISE(..) [FROM ..] [WHERE ..]` and `SELECT CASE WHEN c THEN RAISE(..) END
    [FROM ..] [WHERE ..]`: the guards SQLite triggers use, as IF EXISTS .. THEN RAISE."""
    cond: list[Tok] = []
    k = 1
    if _is(toks[1], "RAISE") and toks[2].kind == "lp":
        args, k = paren_body(toks, 2)
    elif _is(toks[1], "CASE") and _is(toks[2], "WHEN"):
        then = _find_top(toks, "THEN", start=3)
        end = _find_top(toks, "END", start=then)
        inner = toks[then + 1 : end]
        if (
            end == len(toks)
            or not inner
            or not _is(inner[0], "RAISE")
            or paren_body(inner, 1)[1] != len(inner)
        ):
            raise Untranslatable("SELECT CASE other than WHEN .. THEN RAISE(..) END")
        args = paren_body(inner, 1)[0]
        cond = toks[3:then]
        k = end + 1
    else:
        raise Untranslatable("SELECT in a trigger other than a RAISE guard")
    action = _raise(args)
    rest = toks[k:]
    where = _find_top(rest, "WHERE")
    source = rest[:where]
    if source and not _is(source[0], "FROM"):
        raise Untranslatable("SELECT RAISE with more than one result column")
    conds = [f"({ctx.expr(c)})" for c in (cond, rest[where + 1 :]) if c]
    if source:
        test = f"EXISTS (SELECT 1 {ctx.expr(source)}"
        test += (f" WHERE {' AND '.join(conds)}" if conds else "") + ")"
    else:
        test = " AND ".join(conds) or "TRUE"
    return f"SELECT {test}" if ctx.probe else f"IF {test} THEN {action} END IF;"


_STATEMENTS = {"UPDATE": _update, "INSERT": _insert, "REPLACE": _insert, "DELETE": _delete}


def _statements(body: list[Tok], ctx: _Context) -> tuple[str, ...]:
    out: list[str] = []
    current: list[Tok] = []
    depth = 0
    for t in [*body, Tok("semi", ";")]:
        depth += t.kind == "lp"
        depth -= t.kind == "rp"
        if t.kind == "semi" and depth == 0:
            if current:
                if _is(current[0], "WITH"):
                    raise Untranslatable("WITH in a trigger statement")
                if _is(current[0], "SELECT"):
                    out.append(_select(current, ctx))
                elif current[0].text.upper() in _STATEMENTS and len(current) > 2:
                    out.append(_STATEMENTS[current[0].text.upper()](current, ctx))
                else:
                    raise Untranslatable(f"statement {current[0].text} in a trigger")
            current = []
        else:
            current.append(t)
    if not out:
        raise DDLError("a trigger without statements")
    return tuple(out)


def translate_trigger(
    sql: str,
    resolve: Resolve,
    columns: Mapping[str, Mapping[str, str]],
    booleans: frozenset[str] = frozenset(),
    function: Callable[[str], str] = lambda name: name,
    column_types: Mapping[str, str] | None = None,
    uuid_text: Mapping[str, str] | None = None,
    datetime_text: Mapping[str, str] | None = None,
) -> PlanTrigger:
    """`columns`: every migrated table's columns and PostgreSQL types, in order;
    `function` names the trigger function after the trigger; `column_types` and
    `uuid_text` and `datetime_text` as for `translate` (NEW.x and OLD.x are read
    like columns)."""
    toks = tokenize(sql)
    while toks and toks[-1].kind == "semi":
        toks.pop()
    k = 1 if toks and _is(toks[0], "CREATE") else 0
    if k < len(toks) and _is(toks[k], "TEMP", "TEMPORARY"):
        k += 1
    if k >= len(toks) or not _is(toks[k], "TRIGGER"):
        raise DDLError("not a CREATE TRIGGER")
    k += 1
    if _is(toks[k], "IF"):
        k += 3
    if k + 1 < len(toks) and toks[k + 1].text == ".":
        k += 2  # schema-qualified name
    name = toks[k].text
    quote_ident(name)  # a name PostgreSQL would truncate is refused here, not at creation
    k += 1
    timing = "BEFORE"
    if _is(toks[k], "BEFORE", "AFTER"):
        timing = toks[k].text.upper()
        k += 1
    elif _is(toks[k], "INSTEAD"):
        raise Untranslatable("INSTEAD OF trigger (on a view)")
    ctx = _Context(
        resolve, columns, booleans, column_types or {}, uuid_text or {}, datetime_text or {}
    )
    event = toks[k].text.upper()
    if event not in ("INSERT", "DELETE", "UPDATE"):
        raise DDLError(f"unknown trigger event {toks[k].text}")
    on = _find_top(toks, "ON", start=k)
    if on + 1 >= len(toks):
        raise DDLError("CREATE TRIGGER without ON")
    if on + 2 < len(toks) and toks[on + 2].text == ".":
        on += 2
    table, cols = ctx.table(toks[on + 1])
    if event == "UPDATE" and on > k + 1:
        if not _is(toks[k + 1], "OF"):
            raise DDLError("UPDATE trigger: expected OF")
        listed = split_top(toks[k + 2 : on])
        event += " OF " + ", ".join(quote_ident(ctx.column(cols, p[0])) for p in listed)
    k = on + 2
    if k + 2 < len(toks) and _is(toks[k], "FOR") and _is(toks[k + 2], "ROW"):
        k += 3
    begin = _find_top(toks, "BEGIN", start=k)
    if begin == len(toks) or not _is(toks[-1], "END"):
        raise DDLError("trigger body without BEGIN ... END")
    when = None
    if k < begin and _is(toks[k], "WHEN"):
        when = ctx.expr(toks[k + 1 : begin])
    elif k != begin:
        raise DDLError(f"unexpected {toks[k].text!r} before BEGIN")
    statements = _statements(toks[begin + 1 : -1], ctx)
    ctx.row = cols
    probes = _statements(toks[begin + 1 : -1], ctx)
    return PlanTrigger(
        name=name,
        table=table,
        function=function(name),
        timing=timing,
        event=event,
        when=when,
        statements=statements,
        probes=probes,
    )
