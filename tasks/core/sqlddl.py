"""Read SQLite DDL text and translate SQLite expressions into PostgreSQL.

PRAGMAs give columns, keys and index columns, but not CHECK constraints,
column collations, partial-index predicates, index expressions or view
bodies: those exist only in the stored ``CREATE`` text. A small tokenizer is
enough to cut that text at the right places; a full SQL parser is not needed
because the pieces are re-emitted token by token, with every identifier
re-quoted, so a hostile name can never become SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from tasks.core.sqlmap import quote_ident


@dataclass(frozen=True)
class Tok:
    kind: str  # ident (quoted), word (bare), str, num, op, lp, rp, comma, semi, param
    text: str  # for ident: the unquoted name; for str: the raw literal including quotes


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^']|'')*')
  | (?P<blob>[xX]'[0-9a-fA-F]*')
  | (?P<dq>"(?:[^"]|"")*")
  | (?P<bt>`(?:[^`]|``)*`)
  | (?P<br>\[[^\]]*\])
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+)
  | (?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
  | (?P<param>[?:@$][A-Za-z0-9_]*)
  | (?P<op>\|\||<<|>>|<=|>=|==|!=|<>|->>|->|[-+*/%<>=~&|.])
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<comma>,)
  | (?P<semi>;)
    """,
    re.S | re.X,
)


class DDLError(ValueError):
    """The stored SQL could not be read; the message names the offending text."""


def tokenize(sql: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if not m:
            raise DDLError(f"cannot read SQL near {sql[pos : pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "ws":
            continue
        if kind == "dq":
            out.append(Tok("ident", text[1:-1].replace('""', '"')))
        elif kind == "bt":
            out.append(Tok("ident", text[1:-1].replace("``", "`")))
        elif kind == "br":
            out.append(Tok("ident", text[1:-1]))
        else:
            out.append(Tok(kind, text))
    return out


def _is(t: Tok, *words: str) -> bool:
    return t.kind == "word" and t.text.upper() in words


def split_top(tokens: Sequence[Tok]) -> list[list[Tok]]:
    """Split a parenthesised list at commas that are not nested."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for t in tokens:
        if t.kind == "lp":
            depth += 1
        elif t.kind == "rp":
            depth -= 1
        if t.kind == "comma" and depth == 0:
            parts.append([])
        else:
            parts[-1].append(t)
    return [p for p in parts if p]


def paren_body(tokens: Sequence[Tok], start: int) -> tuple[list[Tok], int]:
    """Tokens inside the parenthesis opening at `start`, and the index after it closes."""
    if start >= len(tokens) or tokens[start].kind != "lp":
        raise DDLError("expected '('")
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].kind == "lp":
            depth += 1
        elif tokens[i].kind == "rp":
            depth -= 1
            if depth == 0:
                return list(tokens[start + 1 : i]), i + 1
    raise DDLError("unbalanced parentheses")


def _name(t: Tok) -> str:
    if t.kind == "ident":
        return t.text
    if t.kind == "str":
        return t.text[1:-1].replace("''", "'")
    return t.text


@dataclass(frozen=True)
class ColumnDDL:
    name: str
    collate: str | None
    checks: tuple[tuple[Tok, ...], ...]
    generated: bool


@dataclass(frozen=True)
class ForeignKeyDDL:
    """What PRAGMA foreign_key_list leaves out: whether the key is checked at commit."""

    columns: tuple[str, ...]  # lower-case
    parent: str  # lower-case
    deferred: bool


@dataclass(frozen=True)
class TableDDL:
    columns: tuple[ColumnDDL, ...]
    checks: tuple[tuple[Tok, ...], ...]
    foreign_keys: tuple[ForeignKeyDDL, ...] = ()

    def json_checked(self) -> frozenset[str]:
        """Columns (lower-case) a CHECK holds to `json_valid(column)`: JSON by
        constraint, as Django declares its JSONField (`text CHECK (JSON_VALID(x) ...)`)."""
        found = set()
        for toks in [*(x for c in self.columns for x in c.checks), *self.checks]:
            for k in range(len(toks) - 3):
                if (
                    _is(toks[k], "JSON_VALID")
                    and toks[k + 1].kind == "lp"
                    and toks[k + 2].kind in ("word", "ident")
                    and toks[k + 3].kind == "rp"
                ):
                    found.add(_name(toks[k + 2]).lower())
        return frozenset(found)


def _foreign_key(columns: list[str], tail: Sequence[Tok]) -> ForeignKeyDDL | None:
    """`tail` starts at REFERENCES. SQLite defers a key only for DEFERRABLE INITIALLY
    DEFERRED; NOT DEFERRABLE, or DEFERRABLE alone, checks each statement."""
    if len(tail) < 2:
        return None
    words = [t.text.upper() if t.kind == "word" else "" for t in tail]
    deferred = False
    for k in range(len(words) - 2):
        if words[k : k + 3] == ["DEFERRABLE", "INITIALLY", "DEFERRED"]:
            deferred = not (k > 0 and words[k - 1] == "NOT")
    return ForeignKeyDDL(tuple(c.lower() for c in columns), _name(tail[1]).lower(), deferred)


_CONSTRAINT_START = (
    "CONSTRAINT",
    "PRIMARY",
    "NOT",
    "NULL",
    "UNIQUE",
    "CHECK",
    "DEFAULT",
    "COLLATE",
    "REFERENCES",
    "GENERATED",
    "AS",
)


def parse_create_table(sql: str) -> TableDDL:
    """Column collations, column and table CHECKs, and generated columns."""
    toks = tokenize(sql)
    i = next((k for k, t in enumerate(toks) if t.kind == "lp"), None)
    if i is None:
        raise DDLError("CREATE TABLE without a column list (CREATE TABLE ... AS is not supported)")
    body, _ = paren_body(toks, i)
    cols: list[ColumnDDL] = []
    checks: list[tuple[Tok, ...]] = []
    fks: list[ForeignKeyDDL] = []
    for part in split_top(body):
        head = part[0]
        if _is(head, "CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"):
            k = 0
            while k < len(part):
                if _is(part[k], "CHECK"):
                    inner, k = paren_body(part, k + 1)
                    checks.append(tuple(inner))
                elif _is(part[k], "FOREIGN") and k + 2 < len(part) and part[k + 2].kind == "lp":
                    inner, k = paren_body(part, k + 2)
                    ref = next((j for j in range(k, len(part)) if _is(part[j], "REFERENCES")), None)
                    names = [_name(x) for x in inner if x.kind != "comma"]
                    fk = None if ref is None else _foreign_key(names, part[ref:])
                    fks += [fk] if fk is not None else []
                else:
                    k += 1
            continue
        name = _name(head)
        collate = None
        col_checks: list[tuple[Tok, ...]] = []
        generated = False
        k = 1
        while k < len(part):
            t = part[k]
            if _is(t, "COLLATE") and k + 1 < len(part):
                collate = _name(part[k + 1]).upper()
                k += 2
            elif _is(t, "CHECK"):
                inner, k = paren_body(part, k + 1)
                col_checks.append(tuple(inner))
            elif _is(t, "GENERATED") or (
                _is(t, "AS") and k + 1 < len(part) and part[k + 1].kind == "lp"
            ):
                generated = True
                k += 1
            elif _is(t, "REFERENCES"):
                # no other constraint has DEFERRABLE in it: the next REFERENCES ends it
                end = next(
                    (j for j in range(k + 1, len(part)) if _is(part[j], "REFERENCES")), len(part)
                )
                fk = _foreign_key([name], part[k:end])
                fks += [fk] if fk is not None else []
                k += 1
            elif t.kind == "lp":
                _, k = paren_body(part, k)
            else:
                k += 1
        cols.append(ColumnDDL(name, collate, tuple(col_checks), generated))
    return TableDDL(tuple(cols), tuple(checks), tuple(fks))


def json_checked(sql: str) -> frozenset[str]:
    """TableDDL.json_checked of a CREATE TABLE; nothing for DDL the plan reports unreadable."""
    try:
        return parse_create_table(sql).json_checked()
    except DDLError:
        return frozenset()


@dataclass(frozen=True)
class IndexTerm:
    tokens: tuple[Tok, ...]  # the expression (a single ident/word for a plain column)
    desc: bool
    collate: str | None


@dataclass(frozen=True)
class IndexDDL:
    unique: bool
    terms: tuple[IndexTerm, ...]
    where: tuple[Tok, ...] | None


def parse_create_index(sql: str) -> IndexDDL:
    toks = tokenize(sql)
    unique = any(_is(t, "UNIQUE") for t in toks[:3])
    on = next(k for k, t in enumerate(toks) if _is(t, "ON"))
    lp = next(k for k in range(on, len(toks)) if toks[k].kind == "lp")
    body, after = paren_body(toks, lp)
    terms = []
    for part in split_top(body):
        desc = False
        collate = None
        if part and _is(part[-1], "ASC", "DESC"):
            desc = part[-1].text.upper() == "DESC"
            part = part[:-1]
        if len(part) >= 2 and _is(part[-2], "COLLATE"):
            collate = _name(part[-1]).upper()
            part = part[:-2]
        terms.append(IndexTerm(tuple(part), desc, collate))
    where = None
    if after < len(toks) and _is(toks[after], "WHERE"):
        where = tuple(t for t in toks[after + 1 :] if t.kind != "semi")
    return IndexDDL(unique, tuple(terms), where)


def view_select(sql: str) -> list[Tok]:
    """The SELECT of a CREATE VIEW (after the first top-level AS)."""
    toks = tokenize(sql)
    depth = 0
    for k, t in enumerate(toks):
        if t.kind == "lp":
            depth += 1
        elif t.kind == "rp":
            depth -= 1
        elif depth == 0 and _is(t, "AS"):
            return [x for x in toks[k + 1 :] if x.kind != "semi"]
    raise DDLError("CREATE VIEW without AS")


# Words passed through unchanged (upper-cased); anything else bare is an identifier.
KEYWORDS = frozenset(
    """ALL AND AS ASC BETWEEN BY CASE CAST COLLATE CROSS CURRENT_DATE CURRENT_TIME
    CURRENT_TIMESTAMP DESC DISTINCT ELSE END ESCAPE EXCEPT EXISTS FALSE FROM FULL GROUP
    HAVING IN INNER INTERSECT IS ISNULL JOIN LEFT LIKE LIMIT NATURAL NOT NOTNULL NULL
    OFFSET ON OR ORDER OUTER RIGHT SELECT THEN TRUE UNION USING WHEN WHERE WITH""".split()
)

# SQLite function -> PostgreSQL function with the same meaning for the same arguments.
FUNCTIONS = {
    "ABS": "abs",
    "AVG": "avg",
    "COALESCE": "coalesce",
    "COUNT": "count",
    "IFNULL": "coalesce",
    "LENGTH": "length",
    "LOWER": "lower",
    "LTRIM": "ltrim",
    "NULLIF": "nullif",
    "REPLACE": "replace",
    "RTRIM": "rtrim",
    "SUBSTR": "substr",
    "SUBSTRING": "substr",
    "SUM": "sum",
    "TRIM": "btrim",
    "UPPER": "upper",
    "INSTR": "strpos",
    # window functions: the same definitions and default frame in both engines
    "ROW_NUMBER": "row_number",
    "RANK": "rank",
    "DENSE_RANK": "dense_rank",
    "PERCENT_RANK": "percent_rank",
    "CUME_DIST": "cume_dist",
    "NTILE": "ntile",
    "LAG": "lag",
    "LEAD": "lead",
    "FIRST_VALUE": "first_value",
    "LAST_VALUE": "last_value",
    "NTH_VALUE": "nth_value",
}
# functions that read their arguments as text: a uuid column is read as SQLite held it
TEXT_FUNCTIONS = frozenset(
    {
        "LENGTH",
        "LOWER",
        "LTRIM",
        "REPLACE",
        "RTRIM",
        "SUBSTR",
        "SUBSTRING",
        "TRIM",
        "UPPER",
        "INSTR",
    }
)
# a uuid column as the text SQLite held: SQLAlchemy's and Django's 32 hex digits, Tortoise's dashes
UUID_TEXT = {"hex": "replace(({})::text, '-', '')", "dashed": "({})::text"}
CAST_TYPES = {
    "INTEGER": "bigint",
    "INT": "bigint",
    "REAL": "double precision",
    "TEXT": "text",
    "NUMERIC": "numeric",
    "BLOB": "bytea",
}
# SQLite's CURRENT_TIMESTAMP is UTC text 'YYYY-MM-DD HH:MM:SS'; PostgreSQL's is a
# timestamptz rendered in the session zone: translate to the same UTC value.
UTC_NOW_TEXT = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
UTC_NOW = (
    "date_trunc('second', now() AT TIME ZONE 'UTC')"  # SQLite truncates; ::timestamp(0) rounds
)


class Untranslatable(ValueError):
    """An expression uses a SQLite feature with no faithful PostgreSQL equivalent."""


# strftime() conversions with a to_char() equivalent (SQLite's %f is seconds.milliseconds)
_STRFTIME = {
    "Y": "YYYY",
    "m": "MM",
    "d": "DD",
    "H": "HH24",
    "M": "MI",
    "S": "SS",
    "f": "SS.MS",
    "j": "DDD",
    "F": "YYYY-MM-DD",
    "T": "HH24:MI:SS",
}
_FIXED = {
    "DATE": "%Y-%m-%d",
    "TIME": "%H:%M:%S",
    "DATETIME": "%Y-%m-%d %H:%M:%S",
    "JULIANDAY": "julian",
    "UNIXEPOCH": "%s",
}
# Layouts PostgreSQL reads back as a timestamp, for a timestamp/date column's value.
_TIMESTAMP_LAYOUTS = {
    "YYYY-MM-DD",
    "YYYY-MM-DD HH24:MI:SS",
    "YYYY-MM-DD HH24:MI:SS.MS",
    'YYYY-MM-DD"T"HH24:MI:SS',
    'YYYY-MM-DD"T"HH24:MI:SS.MS',
}


def _to_char_literal(text: str) -> str:
    """Literal text inside a to_char() layout: double-quoted, so no letter is a pattern."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_MODIFIER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s+(day|hour|minute|second)s?\s*", re.I)
_START_OF = re.compile(r"\s*start\s+of\s+(day|month|year)\s*", re.I)
_MONTHS = re.compile(r"\s*([+-]?\d+)\s+(month|year)s?\s*", re.I)  # whole ones only
_WEEKDAY = re.compile(r"\s*weekday\s+([0-6])\s*", re.I)
_NOW = "now() AT TIME ZONE 'UTC'"


def _modified(base: str, modifiers: list[str | None]) -> str:
    """SQLite's shifts by days, hours, minutes or seconds are exact arithmetic, as
    PostgreSQL's intervals are; 'start of' is date_trunc. Whole months and years
    are SQLite's own rule: shift the month, then let the day overflow (31 January
    + 1 month is 2 or 3 March; PostgreSQL's interval would stop at 28/29 February),
    so the day and time are added back to the first of the shifted month.
    'weekday N' moves forward to the next such day (none if it is one)."""
    for raw in modifiers:
        text = None if raw is None else raw[1:-1].replace("''", "'")
        if text is not None and (m := _MODIFIER.fullmatch(text)):
            n = m.group(1).lstrip("+")
            base = f"({base} + interval '{n} {m.group(2).lower()}')"
        elif text is not None and (m := _MONTHS.fullmatch(text)):
            months = int(m.group(1)) * (12 if m.group(2).lower() == "year" else 1)
            first = f"date_trunc('month', {base})"
            base = f"({first} + interval '{months} months' + ({base} - {first}))"
        elif text is not None and (m := _WEEKDAY.fullmatch(text)):
            days = f"((({m.group(1)} - extract(dow FROM {base})::int) + 7) % 7)"
            base = f"({base} + {days} * interval '1 day')"
        elif text is not None and (m := _START_OF.fullmatch(text)):
            base = f"date_trunc('{m.group(1).lower()}', {base})"
        else:
            raise Untranslatable(f"date modifier {raw} has no faithful equivalent")
    return base


def _layout(fmt: str) -> str:
    """A strftime() format as a to_char() layout, literal text double-quoted."""
    layout, literal, i = [], "", 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt) and fmt[i + 1] in _STRFTIME:
            if literal:
                layout.append(_to_char_literal(literal))
                literal = ""
            layout.append(_STRFTIME[fmt[i + 1]])
            i += 2
        elif fmt[i] == "%" and fmt[i + 1 : i + 2] == "%":
            literal += "%"
            i += 2
        elif fmt[i] == "%":
            raise Untranslatable(f"strftime() conversion {fmt[i : i + 2]!r}")
        else:
            literal += fmt[i]
            i += 1
    if literal:
        layout.append(_to_char_literal(literal))
    text = "".join(layout)
    for sep in ("-", ":", " ", "."):  # plain separators read the same unquoted
        text = text.replace(f'"{sep}"', sep)
    return text


def _date_function(
    name: str,
    args: list[list[Tok]],
    now_as_text: bool,
    column: Callable[..., str | None],
) -> str:
    """date/time/datetime/strftime as to_char() of the same instant: of 'now' (UTC,
    like SQLite), of a column that became a timestamp or date (its values were all
    ISO text, which is what SQLite's functions read), or of an integer column read
    with 'unixepoch', shifted by the modifiers that have an exact equivalent.
    `strftime('%s', …)` is the integer epoch SQLite apps store in INTEGER columns."""
    if name == "STRFTIME":
        if not args or len(args[0]) != 1 or args[0][0].kind != "str":
            raise Untranslatable("strftime() with a format that is not a literal")
        fmt, args = args[0][0].text[1:-1].replace("''", "'"), args[1:]
    else:
        fmt = _FIXED[name]
    if not args:
        raise Untranslatable(f"{name.lower()}() without a time value")
    head = args[0]
    modifiers = [a[0].text if len(a) == 1 and a[0].kind == "str" else None for a in args[1:]]
    is_now = len(head) == 1 and head[0].kind == "str" and head[0].text.lower() == "'now'"
    value = _NOW if is_now else column(head)
    if value is None and modifiers[:1] and (modifiers[0] or "").lower() == "'unixepoch'":
        epoch = column(head, "bigint")  # seconds since 1970 in UTC, as SQLite reads them
        value = None if epoch is None else f"(to_timestamp({epoch}) AT TIME ZONE 'UTC')"
        modifiers = modifiers[1:]
    if value is None:
        raise Untranslatable(
            f"{name.lower()}() of anything but 'now' or a date/time column has no faithful"
            " equivalent"
        )
    instant = _modified(value, modifiers)
    if name == "UNIXEPOCH":  # an integer, unlike strftime('%s')
        return f"floor(extract(epoch FROM {instant}))::bigint"
    if fmt == "julian":  # SQLite's day starts at noon (astronomical), PostgreSQL's at midnight;
        # a double, as SQLite's: differences of two then cancel the same way in both
        return f"(extract(julian FROM {instant}) - 0.5)::float8"
    if fmt == "%s":  # text, as SQLite returns it, unless an integer is wanted
        epoch = f"floor(extract(epoch FROM {instant}))::bigint"
        return f"{epoch}::text" if now_as_text else epoch
    if fmt == "%w":  # SQLite's weekday: Sunday is 0, as PostgreSQL's dow
        return f"extract(dow FROM {instant})::int::text"
    text = _layout(fmt)
    quoted = text.replace("'", "''")
    sql = f"to_char({instant}, '{quoted}')"
    if now_as_text:
        return sql
    if text == "YYYY-MM-DD HH24:MI:SS":
        return f"date_trunc('second', {instant})"
    if text == "YYYY-MM-DD":
        return f"({instant})::date"
    if text not in _TIMESTAMP_LAYOUTS:
        raise Untranslatable(f"strftime({fmt!r}) is not a date or timestamp")
    return f"CAST({sql} AS timestamp)"


_COMPARISONS = {"=", "==", "!=", "<>", "<", ">", "<=", ">="}


def _typed_null(t: Tok) -> str | None:
    """The kind of a trigger probe's `CAST(NULL AS type)` standing for NEW.x / OLD.x."""
    m = re.fullmatch(r"CAST\(NULL AS (.+)\)", t.text) if t.kind == "record" else None
    if m is None:
        return None
    return "timestamp" if m.group(1) in ("timestamp", "date") else m.group(1)


def _beside_temporal(toks: Sequence[Tok], k: int, end: int, temporal: frozenset[str]) -> bool:
    """Whether the call at toks[k:end] is compared with a (qualified) temporal column."""

    def col(t: Tok | None) -> bool:
        if t is not None and _typed_null(t) == "timestamp":
            return True
        return t is not None and t.kind in ("word", "ident") and t.text.lower() in temporal

    def at(i: int) -> Tok | None:
        return toks[i] if 0 <= i < len(toks) else None

    def op(t: Tok | None) -> bool:
        return t is not None and t.kind == "op" and t.text in _COMPARISONS

    if op(at(k - 1)) and col(at(k - 2)):
        return True
    if not op(at(end)):
        return False
    dot = at(end + 2)
    return col(at(end + 3)) if dot is not None and dot.text == "." else col(at(end + 1))


_REGEX_SPECIAL = set(".^$|()+*?{}\\[]")


def _glob_regex(pattern: str) -> str:
    """A GLOB pattern as an anchored POSIX regex literal: `*` any text, `?` one
    character, `[...]`/`[^...]` a class (a leading `]` is literal), anything else
    itself. Both compare characters by code on a "C" column, case-sensitively."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + 1
            negate = j < len(pattern) and pattern[j] == "^"
            j += negate
            start = j
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 1
            if j >= len(pattern):
                raise Untranslatable(f"GLOB pattern {pattern!r} has an unclosed [")
            body = "".join("\\" + x if x in "\\[]^" else x for x in pattern[start:j])
            out.append("[" + ("^" if negate else "") + body + "]")
            i = j
        else:
            out.append("\\" + c if c in _REGEX_SPECIAL else c)
        i += 1
    out.append("$")
    return "'" + "".join(out).replace("'", "''") + "'"


def _operand_end(toks: Sequence[Tok], i: int) -> int | None:
    """The end of the primary at toks[i] (a column, qualified column, function call or
    parenthesised expression); None for anything else."""
    t = toks[i]
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if t.kind == "lp":
        return paren_body(toks, i)[1]
    if t.kind == "word" and t.text.upper() in KEYWORDS - {"CAST"}:
        return None
    if t.kind == "word" and nxt is not None and nxt.kind == "lp":
        return paren_body(toks, i + 1)[1]
    if t.kind in ("word", "ident"):
        if nxt is not None and nxt.text == "." and i + 2 < len(toks):
            return i + 3
        return i + 1
    return None


def _beside_number(toks: Sequence[Tok], k: int, end: int) -> bool:
    """Whether the call at toks[k:end] is compared with a number literal."""
    before = toks[k - 2 : k]
    after = toks[end : end + 3]
    if len(before) == 2 and before[1].text in _COMPARISONS and before[0].kind == "num":
        return True
    if not after or after[0].kind != "op" or after[0].text not in _COMPARISONS:
        return False
    rest = after[1:]
    return bool(rest) and (
        rest[0].kind == "num"
        or (rest[0].text in ("-", "+") and len(rest) > 1 and rest[1].kind == "num")
    )


_JSON_STEP = re.compile(r'\.(?:"((?:[^"\\]|\\.)*)"|([^.\["]+))|\[(\d+)\]')


def _json_node(
    name: str, args: list[list[Tok]], column: Callable[[list[Tok]], str | None], paths: int
) -> str:
    """The jsonb node that `name(column[, '$.path'])` reads: `column #> '{keys}'`."""
    if not 1 <= len(args) <= 1 + paths or any(len(a) != 1 or a[0].kind != "str" for a in args[1:]):
        raise Untranslatable(f"{name}() with other than a column and one literal path")
    value = column(args[0])
    if value is None:
        raise Untranslatable(f"{name}() of anything but a column that became jsonb")
    path = args[1][0].text[1:-1].replace("''", "'") if len(args) > 1 else "$"
    if not path.startswith("$"):
        raise Untranslatable(f"JSON path {path!r}")
    keys: list[str] = []
    pos = 1
    while pos < len(path):
        m = _JSON_STEP.match(path, pos)
        if m is None:
            raise Untranslatable(f"JSON path {path!r}")
        quoted, bare, index = m.groups()
        keys.append(
            index
            if index is not None
            else bare
            if bare is not None
            else re.sub(r"\\(.)", r"\1", quoted)
        )
        pos = m.end()
    literal = (
        "{"
        + ",".join('"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"' for key in keys)
        + "}"
    )
    return f"({value} #> '{literal.replace(chr(39), chr(39) * 2)}')" if keys else value


def _json_extract(args: list[list[Tok]], column: Callable[[list[Tok]], str | None]) -> str:
    """json_extract(jsonb column, '$.path') with SQLite's result: text for a string,
    1/0 for true/false, NULL for null or a missing path, and the number's text (a
    number compared with a number literal is cast to numeric). An object or array
    comes back as jsonb's text, which orders keys its own way: the view check
    reports such a view if the results differ."""
    if len(args) != 2:
        raise Untranslatable("json_extract() with other than one literal path")
    node = _json_node("json_extract", args, column, 1)
    return (
        f"(CASE jsonb_typeof({node}) WHEN 'boolean' THEN ({node})::boolean::int::text"
        f" ELSE {node} #>> '{{}}' END)"
    )


def _json_array_length(args: list[list[Tok]], column: Callable[[list[Tok]], str | None]) -> str:
    """SQLite: the array's length, 0 for any other JSON value, NULL for a missing path."""
    node = _json_node("json_array_length", args, column, 1)
    return (
        f"(CASE WHEN {node} IS NULL THEN NULL WHEN jsonb_typeof({node}) = 'array'"
        f" THEN jsonb_array_length({node}) ELSE 0 END)"
    )


def _json_type(args: list[list[Tok]], column: Callable[[list[Tok]], str | None]) -> str:
    """SQLite's names: 'true'/'false', 'text', 'integer' or 'real' by the number's
    text (jsonb writes 1e3 as 1000, which SQLite calls real: the view check tells)."""
    node = _json_node("json_type", args, column, 1)
    return (
        f"(CASE jsonb_typeof({node}) WHEN 'boolean' THEN ({node})::text"
        f" WHEN 'string' THEN 'text' WHEN 'number' THEN CASE WHEN ({node})::text ~ '^-?[0-9]+$'"
        f" THEN 'integer' ELSE 'real' END ELSE jsonb_typeof({node}) END)"
    )


_JSON_TEXT = "shipyard_json_text"  # what `->` reads: no SQLite function has this name


def _arrows(toks: list[Tok]) -> list[Tok]:
    """`col ->> 'key'` (SQLite 3.38) is json_extract(col, '$."key"'); `col ->> 2` is
    '$[2]' and a '$…' operand is a path already. Rewritten into the call before
    translation, so both spellings translate (or are refused) alike. `->` (the
    node as JSON text) becomes an internal call of the same shape."""
    out: list[Tok] = []
    for t in toks:
        arrow = out[-1].text if out and out[-1].kind == "op" else None
        if arrow in ("->", "->>") and t.kind in ("str", "num"):
            out.pop()
            ref = out[-3:] if len(out) >= 3 and out[-2].text == "." else out[-1:]
            if not ref or ref[-1].kind not in ("word", "ident"):
                raise Untranslatable(f"{arrow} of anything but a column")
            del out[-len(ref) :]
            if t.kind == "num":
                path = f"$[{int(t.text)}]"
            else:
                text = t.text[1:-1].replace("''", "'")
                path = text if text.startswith("$") else '$."' + text.replace('"', '\\"') + '"'
            literal = Tok("str", "'" + path.replace("'", "''") + "'")
            call = "json_extract" if arrow == "->>" else _JSON_TEXT
            out += [Tok("word", call), Tok("lp", "("), *ref, Tok("comma", ",")]
            out += [literal, Tok("rp", ")")]
        else:
            out.append(t)
    return out


_CLAUSES = {"WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "WINDOW", "UNION", "EXCEPT", "INTERSECT"}


def _subquery_aliases(toks: list[Tok]) -> list[Tok]:
    """SQLite lets a subquery in FROM go unnamed; PostgreSQL 15 wants a name for it.
    An unnamed one (after FROM, JOIN, or a comma of a FROM list) gets one."""
    out = list(toks)
    from_at: dict[int, bool] = {}  # depth -> inside a FROM list at that depth
    depth = 0
    k = 0
    n = 0
    while k < len(out):
        t = out[k]
        if t.kind == "word" and t.text.upper() in ("FROM", "JOIN"):
            from_at[depth] = True
        elif t.kind == "word" and t.text.upper() in _CLAUSES | {"ON", "USING", "SELECT"}:
            from_at[depth] = False
        elif t.kind == "lp":
            prev = out[k - 1] if k else None
            starts = (
                k + 1 < len(out)
                and _is(out[k + 1], "SELECT", "WITH", "VALUES")
                and prev is not None
                and (_is(prev, "FROM", "JOIN") or (prev.kind == "comma" and from_at.get(depth)))
            )
            if starts:
                end = paren_body(out, k)[1]
                after = out[end] if end < len(out) else None
                named = after is not None and (
                    _is(after, "AS")
                    or after.kind == "ident"
                    or (after.kind == "word" and after.text.upper() not in KEYWORDS | _CLAUSES)
                )
                if not named:
                    n += 1
                    out[end:end] = [Tok("word", "AS"), Tok("ident", f"shipyard_subquery_{n}")]
            depth += 1
        elif t.kind == "rp":
            depth -= 1
        k += 1
    return out


def translate(
    tokens: Sequence[Tok],
    resolve: Callable[[str], str | None],
    *,
    now_as_text: bool = True,
    casts: Mapping[str, str] = CAST_TYPES,
    booleans: frozenset[str] = frozenset(),
    column_types: Mapping[str, str] = {},
    uuid_text: Mapping[str, str] = {},
    datetime_text: Mapping[str, str] = {},
) -> str:
    """Re-emit a SQLite expression or SELECT as PostgreSQL, token by token.

    `resolve` maps a name case-insensitively to its real spelling (SQLite
    names are case-insensitive, quoted PostgreSQL names are not); unknown
    bare names (aliases) are lower-cased so every use quotes the same way.
    `column_types` gives the PostgreSQL type of the columns (lower-case names)
    that have it in every table with a column by that name ("timestamp" for
    timestamp or date): date functions may read those, JSON functions jsonb ones.
    `uuid_text` gives the form ("hex" or "dashed") SQLite held the uuid columns
    in: where SQL reads one as text (text functions, `||`, LIKE, CAST AS TEXT,
    group_concat), it reads that text, as in SQLite, not PostgreSQL's dashed form.
    `datetime_text` does the same for timestamp columns: a template ({0}: the
    column) rendering the text layout SQLite held, so `substr(at, 1, 7)` or
    `at LIKE '2024-%'` read what they read in SQLite.
    """
    temporal = frozenset(n for n, k in column_types.items() if k == "timestamp")

    def column(arg: list[Tok], kind: str = "timestamp") -> str | None:
        """A (qualified) reference to a column of `kind`, translated; else None."""
        if len(arg) == 1 and arg[0].kind == "record":  # a trigger probe's typed NULL
            return arg[0].text if _typed_null(arg[0]) == kind else None
        names = arg[-1:] if len(arg) == 1 else arg[2:] if len(arg) == 3 else []
        if len(arg) == 3 and not (
            arg[0].kind in ("word", "ident", "record") and arg[1].text == "."
        ):
            return None
        if not names or names[0].kind not in ("word", "ident"):
            return None
        if column_types.get(names[0].text.lower()) != kind:
            return None
        return translate(arg, resolve)

    def again(part: Sequence[Tok], now: bool = now_as_text) -> str:
        return translate(
            part,
            resolve,
            now_as_text=now,
            booleans=booleans,
            column_types=column_types,
            uuid_text=uuid_text,
            datetime_text=datetime_text,
        )

    def as_text(arg: Sequence[Tok]) -> str | None:
        """A uuid or datetime column as the text SQLite held, else None (a trigger
        probe's typed NULL stands for any form: the probe only checks types)."""
        if not arg:
            return None
        probe = arg[-1].kind == "record"
        if uuid_text:
            form = "hex" if probe else uuid_text.get(arg[-1].text.lower())
            ref = column(list(arg), "uuid") if form is not None else None
            if ref is not None and form is not None:
                return UUID_TEXT[form].format(ref)
        if datetime_text:
            some = next(iter(datetime_text.values()))
            template = some if probe else datetime_text.get(arg[-1].text.lower())
            ref = column(list(arg), "timestamp") if template is not None else None
            if ref is not None and template is not None:
                return template.format(ref)
        return None

    def text_args(args: Sequence[Tok]) -> str:
        return ", ".join(as_text(a) or again(a) for a in split_top(list(args)))

    out: list[str] = []
    toks = _null_order(
        _boolean_literals(_subquery_aliases(_arrows(list(tokens))), booleans), column_types
    )
    feed_order = _ordered_feed(toks)
    depths = list(accumulate((t.kind == "lp") - (t.kind == "rp") for t in toks))
    k = 0
    while k < len(toks):
        t = toks[k]
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        up = t.text.upper()
        before = toks[k - 1] if k else None
        if (
            (uuid_text or datetime_text)
            and t.kind in ("word", "ident", "record")
            and (nxt is None or nxt.kind != "lp")
            and not (before is not None and before.text == ".")
        ):  # a (qualified) column concatenated or matched: read as the text SQLite held
            n_ref = 3 if nxt is not None and nxt.text == "." and k + 2 < len(toks) else 1
            then = toks[k + n_ref : k + n_ref + 2]
            textual = (before is not None and before.text == "||") or (
                bool(then)
                and (
                    then[0].text == "||"
                    or _is(then[0], "LIKE")
                    or (len(then) == 2 and _is(then[0], "NOT") and _is(then[1], "LIKE"))
                )
            )
            text = as_text(toks[k : k + n_ref]) if textual else None
            if text is not None:
                out.append(text)
                k += n_ref
                continue
        if t.kind == "word" and up in ("OVER", "FILTER"):
            if nxt is None or nxt.kind != "lp":
                raise Untranslatable("a named window (OVER name)")
            body, end = paren_body(toks, k + 1)
            spec = _window_spec(body) if up == "OVER" else body
            sub = again(spec)
            out.append(f"{up} ({sub})")
            k = end
            continue
        if (
            t.kind == "word"
            and nxt is not None
            and nxt.kind == "lp"
            and up not in KEYWORDS | {"IN", "EXISTS"}
        ):
            args, end = paren_body(toks, k + 1)
            n_args = len(split_top(args))
            if up in ("MAX", "MIN") and n_args > 1:
                fn = "GREATEST" if up == "MAX" else "LEAST"
            elif up in ("HEX", "RANDOMBLOB") and _random_id(up, args):
                # the usual SQLite id default, lower(hex(randomblob(16))): 16 random
                # bytes are a version-4 UUID's (122 random bits, two fixed nibbles)
                uuid = "gen_random_uuid()"
                out.append(
                    f"upper(replace({uuid}::text, '-', ''))"
                    if up == "HEX"
                    else f"uuid_send({uuid})"
                )
                k = end
                continue
            elif up == "HEX" and n_args == 1:
                out.append(_hex(args, column))
                k = end
                continue
            elif up == "GROUP_CONCAT":
                parts = split_top(args)
                sep = translate(parts[1], resolve) if len(parts) > 1 else "','"
                distinct = "DISTINCT " if parts[0] and _is(parts[0][0], "DISTINCT") else ""
                arg = parts[0][1:] if distinct else parts[0]
                value = as_text(arg) or again(arg, True)
                order = ""
                if feed_order and not distinct and depths[k] == 0:
                    order = " ORDER BY " + ", ".join(
                        " ".join([again(term[:1]), *(x.text.upper() for x in term[1:])])
                        for term in feed_order
                    )
                out.append(f"string_agg({distinct}({value})::text, {sep}{order})")
                k = end
                continue
            elif up in ("MAX", "MIN"):
                fn = up.lower()
            elif up == "IIF" and n_args == 3:
                cond, yes, no = split_top(args)
                single = len(cond) == 1 and cond[0].text.lower() in booleans
                test = again(cond) if single or _has_predicate(cond) else f"({again(cond)}) <> 0"
                out.append(f"CASE WHEN {test} THEN {again(yes)} ELSE {again(no)} END")
                k = end
                continue
            elif up == "ROUND":  # half away from zero, as SQLite; float8 round() is half even
                parts = split_top(args)
                digits = f", {again(parts[1])}" if len(parts) > 1 else ""
                out.append(f"round(({again(parts[0])})::numeric{digits})")
                k = end
                continue
            elif up in ("DATE", "TIME", "DATETIME", "STRFTIME", "JULIANDAY", "UNIXEPOCH"):
                # compared with a timestamp column, the value is a timestamp too: SQLite
                # compared the texts, which order as the instants when laid out alike
                now = now_as_text and not _beside_temporal(toks, k, end, temporal)
                out.append(_date_function(up, split_top(args), now, column))
                k = end
                continue
            elif up in ("JSON_ARRAY_LENGTH", "JSON_TYPE"):
                fn_ = _json_array_length if up == "JSON_ARRAY_LENGTH" else _json_type
                out.append(fn_(split_top(args), lambda a: column(a, "jsonb")))
                k = end
                continue
            elif up == "JSON_VALID":  # a jsonb value is valid JSON; SQLite says 0 for NULL
                checked = column(args, "jsonb")
                if checked is None:
                    raise Untranslatable("json_valid() of anything but a column that became jsonb")
                out.append(f"({checked} IS NOT NULL)")
                k = end
                continue
            elif t.text == _JSON_TEXT:  # scalars as SQLite writes them; objects and
                # arrays in jsonb's spacing and key order, which the view check reports
                node = _json_node("->", split_top(args), lambda a: column(a, "jsonb"), 1)
                out.append(f"({node})::text")
                k = end
                continue
            elif up == "JSON_EXTRACT":
                value = _json_extract(split_top(args), lambda a: column(a, "jsonb"))
                out.append(f"({value})::numeric" if _beside_number(toks, k, end) else value)
                k = end
                continue
            elif up in ("SUBSTR", "SUBSTRING") and n_args >= 2:
                parts = split_top(args)
                start = parts[1]
                literal = [x.text for x in start]
                if literal[:1] == ["-"] and len(start) == 2 and start[1].kind == "num":
                    if n_args > 2:  # SQLite counts from the end; PostgreSQL from before 1
                        raise Untranslatable("substr() with a negative start and a length")
                    text = as_text(parts[0]) or again(parts[0])
                    out.append(f"right({text}, {int(float(start[1].text))})")
                    k = end
                    continue
                fn = "substr"
            elif up == "TOTAL":  # sum() that is 0.0, not NULL, over no values
                if end < len(toks) and _is(toks[end], "OVER", "FILTER"):
                    raise Untranslatable("total() as a window or filtered aggregate")
                inner = again(args)
                inner = f"({inner})::int" if _has_predicate(args) else inner
                out.append(f"coalesce(sum({inner}), 0)")
                k = end
                continue
            elif up in ("SUM", "AVG") and _has_predicate(args):
                # SQLite's comparisons are the integers 0/1; PostgreSQL's are boolean
                inner = again(args)
                out.append(f"{FUNCTIONS[up]}(({inner})::int)")
                k = end
                continue
            elif up in FUNCTIONS:
                fn = FUNCTIONS[up]
            else:
                raise Untranslatable(f"function {t.text}() has no faithful PostgreSQL equivalent")
            out.append(f"{fn}({text_args(args) if up in TEXT_FUNCTIONS else again(args)})")
            k = end
            continue
        if t.kind == "word" and up == "CAST" and nxt is not None and nxt.kind == "lp":
            args, end = paren_body(toks, k + 1)
            as_at = max(i for i, a in enumerate(args) if _is(a, "AS"))
            target = " ".join(a.text for a in args[as_at + 1 :]).upper()
            if target not in casts:
                raise Untranslatable(f"CAST to {target} has no faithful PostgreSQL equivalent")
            text = as_text(args[:as_at]) if target == "TEXT" else None
            out.append(text or f"CAST({again(args[:as_at], True)} AS {casts[target]})")
            k = end
            continue
        if t.kind == "word" and up == "GLOB" and nxt is not None and nxt.kind == "str":
            back = 2 if k >= 2 and _is(toks[k - 1], "NOT") else 1
            prev = toks[k - back] if k >= back else None
            kind = (
                column_types.get(prev.text.lower())
                if prev is not None and prev.kind in ("word", "ident")
                else None
            )
            if kind not in ("text", "citext"):  # citext's ~ would ignore case: GLOB never does
                raise Untranslatable("GLOB of anything but a text column")
            negated = bool(out) and out[-1] == "NOT"
            if negated:
                out.pop()
            if kind == "citext":
                out[-1] += "::text"  # the column, NOT popped above
            out += ["!~" if negated else "~", _glob_regex(nxt.text[1:-1].replace("''", "'"))]
            k += 2
            continue
        if t.kind == "word" and up in ("GLOB", "REGEXP", "MATCH"):
            raise Untranslatable(f"{up} has no faithful PostgreSQL equivalent")
        if t.kind == "op" and t.text == "/" and nxt is not None and nxt.kind != "num":
            # SQLite divides by zero to NULL, PostgreSQL raises: the divisor becomes
            # NULL where it is 0 (a literal divisor is left as written)
            stop = _operand_end(toks, k + 1)
            if stop is not None:
                out += ["/", f"nullif({again(toks[k + 1 : stop])}, 0)"]
                k = stop
                continue
        if t.kind == "word" and up == "LIMIT":
            stop = k + 1
            depth = 0
            while stop < len(toks) and not (
                depth == 0 and (toks[stop].kind in ("rp", "semi") or _is(toks[stop], *_ORDER_END))
            ):
                depth += (toks[stop].kind == "lp") - (toks[stop].kind == "rp")
                stop += 1
            parts = split_top(toks[k + 1 : stop])
            if len(parts) == 2:  # SQLite's LIMIT offset, count
                out.append(f"LIMIT {again(parts[1])} OFFSET {again(parts[0])}")
                k = stop
                continue
        if t.kind == "word" and up == "IS":
            # SQLite's IS compares any two values, NULL-safe; PostgreSQL's only takes
            # NULL, TRUE, FALSE or DISTINCT FROM after it
            negated = nxt is not None and _is(nxt, "NOT")
            operand = toks[k + 2] if negated and k + 2 < len(toks) else nxt
            if operand is not None and not _is(operand, "NULL", "TRUE", "FALSE", "DISTINCT"):
                out.append("IS DISTINCT FROM" if negated else "IS NOT DISTINCT FROM")
                k += 2 if negated else 1
                continue
        if t.kind == "word" and up == "LIKE":
            out.append("ILIKE")  # SQLite's LIKE ignores ASCII case by default
            after = toks[k + 2] if k + 2 < len(toks) else None
            if (
                nxt is not None
                and nxt.kind == "str"
                and "\\" in nxt.text
                and not (after is not None and _is(after, "ESCAPE"))
            ):  # PostgreSQL's LIKE escapes with a backslash by default; SQLite's has none
                out += [nxt.text, "ESCAPE ''"]
                k += 2
                continue
        elif t.kind == "word" and up == "COLLATE":
            coll = _name(toks[k + 1]).upper() if nxt else ""
            if coll not in ("BINARY", "NOCASE", "RTRIM"):
                raise Untranslatable(f"unknown collation {coll}")
            if coll == "NOCASE":
                raise Untranslatable("COLLATE NOCASE inside an expression")
            k += 2
            continue
        elif t.kind == "word" and up == "CURRENT_TIMESTAMP":
            out.append(UTC_NOW_TEXT if now_as_text else UTC_NOW)
        elif t.kind == "word" and up in ("CURRENT_DATE", "CURRENT_TIME"):
            # SQLite's are UTC text too; PostgreSQL's follow the session's zone
            layout, cast = (
                ("YYYY-MM-DD", "date") if up == "CURRENT_DATE" else ("HH24:MI:SS", "time")
            )
            utc = "now() AT TIME ZONE 'UTC'"
            out.append(f"to_char({utc}, '{layout}')" if now_as_text else f"({UTC_NOW})::{cast}")
        elif t.kind == "word" and up in KEYWORDS:
            out.append(up)
        elif t.kind in ("word", "ident"):
            real = resolve(t.text)
            out.append(
                quote_ident(
                    real if real is not None else (t.text.lower() if t.kind == "word" else t.text)
                )
            )
        elif t.kind == "str":
            out.append(t.text)  # same quoting rules with standard_conforming_strings
        elif t.kind == "blob":
            out.append("'\\x" + t.text[2:-1] + "'::bytea")
        elif t.kind == "op" and t.text == "==":
            out.append("=")
        elif t.kind == "op" and t.text in ("->", "->>"):
            raise Untranslatable("JSON operators have different meaning in PostgreSQL")
        elif t.kind == "param":
            raise Untranslatable("bound parameter in stored SQL")
        elif t.kind == "lp":
            out.append("(")
        elif t.kind == "rp":
            out.append(")")
        elif t.kind == "comma":
            out.append(",")
        else:
            out.append(t.text)
        k += 1
    return _join(out)


_ORDER_END = {
    "LIMIT",
    "OFFSET",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "ROWS",
    "RANGE",
    "GROUPS",
    "WINDOW",
}
_FRAME = {"ROWS", "RANGE", "GROUPS", "BETWEEN", "AND", "UNBOUNDED", "PRECEDING", "FOLLOWING"}
_FRAME |= {"CURRENT", "ROW", "EXCLUDE", "NO", "OTHERS", "TIES", "GROUP"}


def _kw(t: Tok) -> Tok:
    """A keyword that passes through as written (never resolved as a name)."""
    return Tok("kw", t.text.upper())


def _nocase_term(term: list[Tok], column_types: Mapping[str, str]) -> list[Tok]:
    """`ORDER BY col COLLATE NOCASE`: SQLite folds ASCII letters only, as lower() does
    on a COLLATE "C" text column; a citext column already compares so. Anything else
    keeps its COLLATE, which translate() refuses."""
    end = len(term) - (1 if term and _is(term[-1], "ASC", "DESC") else 0)
    body = term[:end]
    if len(body) < 3 or not _is(body[-2], "COLLATE") or body[-1].text.upper() != "NOCASE":
        return term
    ref = body[:-2]
    name = ref[-1] if len(ref) == 1 or (len(ref) == 3 and ref[1].text == ".") else None
    kind = column_types.get(name.text.lower()) if name and name.kind in ("word", "ident") else None
    if kind == "citext":
        return ref + term[end:]
    if kind == "text":
        return [Tok("word", "lower"), Tok("lp", "("), *ref, Tok("rp", ")"), *term[end:]]
    return term


def _null_order(toks: list[Tok], column_types: Mapping[str, str] = {}) -> list[Tok]:
    """ORDER BY terms sort NULLs as SQLite does, first ascending and last descending
    (PostgreSQL's defaults are the opposite), unless a term says NULLS itself."""
    out: list[Tok] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        if _is(t, "NULLS") and k + 1 < len(toks) and _is(toks[k + 1], "FIRST", "LAST"):
            out += [_kw(t), _kw(toks[k + 1])]
            k += 2
            continue
        if not (_is(t, "ORDER") and k + 1 < len(toks) and _is(toks[k + 1], "BY")):
            out.append(t)
            k += 1
            continue
        depth, j = 0, k + 2
        while j < len(toks):
            u = toks[j]
            depth += u.kind == "lp"
            depth -= u.kind == "rp"
            if depth < 0 or u.kind == "semi" or (depth == 0 and _is(u, *_ORDER_END)):
                break
            j += 1
        out += [toks[k], toks[k + 1]]
        for n, term in enumerate(split_top(toks[k + 2 : j])):
            term = _nocase_term(_null_order(term, column_types), column_types)
            if n:
                out.append(Tok("comma", ","))
            out += term
            if not any(x.kind == "kw" and x.text == "NULLS" for x in term):
                last = "LAST" if _is(term[-1], "DESC") else "FIRST"
                out += [Tok("kw", "NULLS"), Tok("kw", last)]
        k = j
    return out


def _window_spec(toks: list[Tok]) -> list[Tok]:
    """PARTITION BY and the frame's words are keywords only here: elsewhere `rows` or
    `current` may well be a column."""
    out = list(toks)
    frame = next((i for i, t in enumerate(out) if _is(t, "ROWS", "RANGE", "GROUPS")), len(out))
    for i, t in enumerate(out):
        if (i == 0 and _is(t, "PARTITION")) or (i >= frame and _is(t, *_FRAME)):
            out[i] = _kw(t)
    return out


_PREDICATE_OPS = {"=", "==", "!=", "<>", "<", ">", "<=", ">="}
_PREDICATE_WORDS = {
    *("AND", "OR", "NOT", "IS", "IN", "LIKE", "BETWEEN", "ISNULL", "NOTNULL"),
    "JSON_VALID",  # translated into IS NOT NULL
}


def _boolean_literals(toks: list[Tok], booleans: frozenset[str]) -> list[Tok]:
    """`flag = 1` on a column that became boolean compares with TRUE, as SQLite meant."""
    if not booleans:
        return toks
    out = list(toks)
    for i in range(len(out) - 2):
        a, op, b = out[i], out[i + 1], out[i + 2]
        if (
            a.kind in ("ident", "word")
            and a.text.lower() in booleans
            and op.kind == "op"
            and op.text in ("=", "==", "!=", "<>")
            and b.kind == "num"
            and b.text in ("0", "1")
        ):
            out[i + 2] = Tok("word", "TRUE" if b.text == "1" else "FALSE")
        elif (
            a.kind in ("ident", "word")
            and a.text.lower() in booleans
            and _is(op, "IN")
            and b.kind == "lp"
        ):
            j = i + 3
            while j < len(out) and out[j].kind != "rp":
                if out[j].kind == "num" and out[j].text in ("0", "1"):
                    out[j] = Tok("word", "TRUE" if out[j].text == "1" else "FALSE")
                j += 1
    return out


def _hex(arg: list[Tok], column: Callable[[list[Tok], str], str | None]) -> str:
    """hex() of a bytea, text or integer column: SQLite's upper-case hex of the bytes,
    of the UTF-8 text, of the integer's digits; '' for NULL."""
    for kind, bytes_of in (
        ("bytea", "{}"),
        ("text", "convert_to({}, 'UTF8')"),
        ("citext", "convert_to({}::text, 'UTF8')"),
        ("bigint", "convert_to({}::text, 'UTF8')"),
    ):
        value = column(arg, kind)
        if value is not None:
            return f"coalesce(upper(encode({bytes_of.format(value)}, 'hex')), '')"
    raise Untranslatable("hex() of anything but a bytea, text or integer column")


def _random_id(up: str, args: list[Tok]) -> bool:
    """randomblob(16), or hex() of it."""
    if up == "HEX":
        return (
            len(args) == 4
            and _is(args[0], "RANDOMBLOB")
            and args[1].kind == "lp"
            and _random_id("RANDOMBLOB", args[2:3])
            and args[3].kind == "rp"
        )
    return len(args) == 1 and args[0].kind == "num" and args[0].text == "16"


def _ordered_feed(toks: Sequence[Tok]) -> list[list[Tok]] | None:
    """The ORDER BY terms of a SELECT's only FROM item when that is an ordered subquery
    whose output has every term's column: SQLite's way to order group_concat(), which
    concatenates in the order rows arrive. string_agg() gets the same ORDER BY."""
    depth = 0
    for i, t in enumerate(toks):
        depth += (t.kind == "lp") - (t.kind == "rp")
        if depth or not _is(t, "FROM") or i + 2 >= len(toks) or toks[i + 1].kind != "lp":
            continue
        if not _is(toks[i + 2], "SELECT"):
            return None
        body, end = paren_body(toks, i + 1)
        if end < len(toks) and _is(toks[end], "AS"):
            end += 2
        elif (
            end < len(toks)
            and toks[end].kind in ("word", "ident")
            and not _is(toks[end], *KEYWORDS, "WINDOW")
        ):
            end += 1
        if end < len(toks) and (toks[end].kind == "comma" or _is(toks[end], *_JOINS)):
            return None  # another FROM item: rows no longer arrive in that order
        return _feed_terms(body)
    return None


_JOINS = ("JOIN", "LEFT", "RIGHT", "INNER", "CROSS", "NATURAL", "FULL")


def _feed_terms(body: list[Tok]) -> list[list[Tok]] | None:
    depth = 0
    select_end = order_at = None
    for k, t in enumerate(body):
        depth += (t.kind == "lp") - (t.kind == "rp")
        if depth == 0 and select_end is None and _is(t, "FROM"):
            select_end = k
        if depth == 0 and _is(t, "ORDER") and k + 1 < len(body) and _is(body[k + 1], "BY"):
            order_at = k + 2
    if select_end is None or order_at is None:
        return None
    stop = next((m for m in range(order_at, len(body)) if _is(body[m], "LIMIT")), len(body))
    terms = split_top(body[order_at:stop])
    items = split_top(body[1:select_end])
    star = [[x.text for x in item] for item in items] == [["*"]]
    outputs = {item[-1].text.lower() for item in items if item[-1].kind in ("word", "ident")}
    for term in terms:
        plain = (
            term
            and term[0].kind in ("word", "ident")
            and all(x.text.upper() in ("ASC", "DESC", "NULLS", "FIRST", "LAST") for x in term[1:])
        )
        if not plain or not (star or term[0].text.lower() in outputs):
            return None
    return terms


def concat_separators(tokens: Sequence[Tok]) -> tuple[str, ...] | None:
    """The separators of the group_concat() calls in a SELECT (',' by default), or
    None if one is not a literal. Neither engine promises an order for the
    concatenated values, so the view check compares them in any order."""
    found: list[str] = []
    for k, t in enumerate(tokens):
        if _is(t, "GROUP_CONCAT") and k + 1 < len(tokens) and tokens[k + 1].kind == "lp":
            args = split_top(paren_body(tokens, k + 1)[0])
            if len(args) == 1:
                found.append(",")
            elif len(args) == 2 and len(args[1]) == 1 and args[1][0].kind == "str":
                found.append(_name(args[1][0]))
            else:
                return None
    return tuple(dict.fromkeys(found))


def _has_predicate(tokens: Sequence[Tok]) -> bool:
    depth = 0
    for t in tokens:
        depth += t.kind == "lp"
        depth -= t.kind == "rp"
        if depth == 0 and (
            (t.kind == "op" and t.text in _PREDICATE_OPS)
            or (t.kind == "word" and t.text.upper() in _PREDICATE_WORDS)
        ):
            return True
    return False


def _join(parts: list[str]) -> str:
    s = ""
    for p in parts:
        if not s or s.endswith("(") or p in (")", ",") or s.endswith("."):
            s += p
        elif (
            p == "("
            and re.search(r"[\w\"]$", s)
            and not re.search(
                r"\b(IN|AND|OR|NOT|WHEN|THEN|ELSE|AS|EXISTS|ON|FROM|JOIN|WHERE|BY)$", s
            )
        ):
            s += p
        elif p == ".":
            s += p
        else:
            s += " " + p
    return s
