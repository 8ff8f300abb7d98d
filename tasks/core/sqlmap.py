"""SQLite → PostgreSQL decisions that need no database: identifiers and column types.

Groundwork for the migration (issue 3). SQLite is dynamically typed, so a
column's PostgreSQL type is chosen from its declared type *and* the storage
classes actually found in it (a scan reports them). Every lossy or uncertain
choice is a finding, never silent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


def quote_ident(name: str) -> str:
    """Quote any identifier for PostgreSQL: reserved words, spaces, quotes, unicode.

    NUL cannot be part of a PostgreSQL identifier, and names over 63 bytes are
    silently truncated by the server; both are refused here instead.
    """
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains NUL")
    if len(name.encode()) > 63:
        raise ValueError(f"identifier {name!r} is longer than PostgreSQL's 63 bytes")
    return '"' + name.replace('"', '""') + '"'


_DECIMAL = re.compile(
    r"\b(?:DECIMAL|NUMERIC|MONEY)\b\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?", re.IGNORECASE
)


def decimal_spec(declared: str) -> tuple[int | None, int]:
    """(precision, scale) of a DECIMAL/NUMERIC declaration — (None, 0) unbounded —
    or raise ValueError for any other declaration. A precision PostgreSQL would
    refuse (over 1000, or below the scale) counts as unbounded."""
    m = _DECIMAL.search(declared)
    if m is None or affinity(declared) != "NUMERIC":
        raise ValueError(f"{declared!r} is no DECIMAL declaration")
    if m.group(1) is None:
        return None, 0
    p, s = int(m.group(1)), int(m.group(2) or 0)
    return (p, s) if 1 <= p <= 1000 and s <= p else (None, 0)


def numeric_type(declared: str) -> str:
    p, s = decimal_spec(declared)
    return "numeric" if p is None else f"numeric({p},{s})"


def time_only(declared: str) -> bool:
    """TIME, not DATETIME or TIMESTAMP: a time of day."""
    d = declared.upper()
    return bool(re.search(r"\bTIME\b", d)) and "DATE" not in d and "STAMP" not in d


_UUID_HEX = re.compile(r"\s*CHAR\s*\(\s*32\s*\)\s*", re.IGNORECASE)
_UUID_DASHED = re.compile(r"\s*CHAR\s*\(\s*36\s*\)\s*", re.IGNORECASE)
_UUID_WORD = re.compile(r"\s*(?:UUID|GUID|UNIQUEIDENTIFIER)\s*", re.IGNORECASE)


def uuid_forms(declared: str) -> frozenset[str]:
    """How a declaration stores UUIDs in SQLite: CHAR(32), 32 lower-case hex digits
    (SQLAlchemy's Uuid, Django's UUIDField); CHAR(36), the dashed form (Tortoise's
    UUIDField); UUID, either (Peewee writes hex). Their PostgreSQL dialects declare
    and bind `uuid`. Empty for any other declaration."""
    if _UUID_HEX.fullmatch(declared):
        return frozenset({"hex"})
    if _UUID_DASHED.fullmatch(declared):
        return frozenset({"dashed"})
    if _UUID_WORD.fullmatch(declared):
        return frozenset({"hex", "dashed"})
    return frozenset()


_IP_TEXT = re.compile(r"\s*CHAR\s*\(\s*(?:39|15)\s*\)\s*", re.IGNORECASE)


def ip_text(declared: str) -> bool:
    """CHAR(39): Django's GenericIPAddressField in SQLite (CHAR(15): the old
    IPAddressField). Its PostgreSQL backend declares `inet` and binds `'…'::inet`."""
    return _IP_TEXT.fullmatch(declared) is not None


def uuid_form(declared: str, stats: ColumnStats) -> str:
    """'hex' or 'dashed': the form every stored UUID of the column has (an empty column:
    its declaration's, hex first); '' when the column is no UUID column."""
    forms = uuid_forms(declared)
    if not stats.text:
        return "hex" if "hex" in forms else "dashed" if forms else ""
    if "hex" in forms and stats.all_uuid_hex:
        return "hex"
    if "dashed" in forms and stats.all_uuid_dashed:
        return "dashed"
    return ""


def is_decimal(declared: str) -> bool:
    try:
        decimal_spec(declared)
    except ValueError:
        return False
    return True


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)

    severity: Severity
    code: str
    table: str  # or the index/view/trigger the finding is about
    column: str | None
    message: str
    count: int = 0
    rowids: tuple[int, ...] = ()  # a sample of offending rows

    @property
    def key(self) -> str:
        """The name a user accepts the finding by."""
        return (
            f"{self.table}.{self.column}:{self.code}"
            if self.column
            else f"{self.table}:{self.code}"
        )


class ColumnStats(BaseModel):
    """What a scan of one column found: counts per SQLite storage class and value facts."""

    model_config = ConfigDict(frozen=True)

    integer: int = 0
    real: int = 0
    text: int = 0
    blob: int = 0
    null: int = 0
    int_min: int | None = None
    int_max: int | None = None
    all_bool: bool = False  # every integer is 0 or 1
    all_bool_text: bool = False  # every text is 't', 'f', 'true' or 'false' (BOOL columns)
    all_json: bool = False  # every text parses as JSON object/array
    all_iso_datetime: bool = False  # every text is an ISO-8601 date/datetime without zone
    all_date_only: bool = False  # every text is an ISO-8601 date
    all_time_only: bool = False  # every text is a time of day, HH:MM[:SS[.ffffff]]
    nan_or_inf: int = 0
    text_with_nul: int = 0
    not_decimal: int = 0  # DECIMAL(p,s) columns: numbers that are no exact decimal fitting it
    all_uuid_hex: bool = False  # every text is 32 lower-case hex digits (UUID columns)
    all_uuid_dashed: bool = False  # every text is a lower-case 8-4-4-4-12 UUID (UUID columns)
    all_ip: bool = False  # every text looks like an IPv4/IPv6 address (CHAR(39) columns)
    iso_t: int = 0  # DATE/TIME columns: texts with a 'T' between date and time
    iso_fraction: int = 0  # DATE/TIME columns: texts with a fraction of a second


def classes_from_extremes(
    count: int, low: str | None, high: str, reals: int | None, aff: str
) -> list[int] | None:
    """(integer, real, text, blob) counts of a column from its non-NULL count, the
    storage classes of its smallest and largest value (SQLite orders NULL < numbers
    < text < blob), its count of reals and its affinity; None when these leave the
    mix open and each class must be counted."""
    if high == "null":  # max() of no values
        return [0, 0, 0, 0]
    if aff == "TEXT":
        return [0, 0, count, 0] if high == "text" else None
    if aff == "REAL":
        return [0, count, 0, 0] if high == "real" else None
    if low == high and low in ("text", "blob"):
        return [0, 0, count, 0] if low == "text" else [0, 0, 0, count]
    if low in ("integer", "real") and high in ("integer", "real"):
        return [count - int(reals or 0), int(reals or 0), 0, 0]
    return None


class Mapped(BaseModel):
    model_config = ConfigDict(frozen=True)

    pg_type: str
    findings: tuple[Finding, ...] = ()


def affinity(declared: str) -> str:
    """SQLite's type affinity rules (section 3.1 of the datatype docs), in their order."""
    d = declared.upper()
    if "INT" in d:
        return "INTEGER"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in d or not d.strip():
        return "BLOB"
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


_DATE_WORDS = re.compile(r"DATE|TIME", re.I)


#: Explicit per-column answers to refused data; nothing is altered without one.
POLICIES = {
    "text": "store every value as text (mixed storage classes)",
    "double": "accept integers stored as REAL (too big for 64 bits) as double precision",
    "null": "store refused values (NUL in text) as NULL; the report counts them",
    "bytea": "store text with NUL bytes as bytea, byte for byte",
    "utc": "naive datetimes are UTC instants: timestamptz (SQLAlchemy's"
    " DateTime(timezone=True); the block's datetimes_utc does it for every column)",
    "interval": "durations as interval: integer microseconds (Django's DurationField)"
    " or datetimes since 1970-01-01 (SQLAlchemy's Interval)",
}


def map_column(
    table: str,
    column: str,
    declared: str,
    stats: ColumnStats,
    policy: str | None = None,
    json: bool = False,
    uuid: bool = True,
) -> Mapped:
    """Choose the PostgreSQL type for one column from its declaration and its values;
    `json`: a CHECK holds the column to valid JSON, whatever its declared type;
    `uuid`: a UUID column may become uuid (False when a foreign key ties it to a
    column that stays text: the two must have one type)."""
    f: list[Finding] = []

    def find(sev: Severity, code: str, msg: str, count: int = 0) -> None:
        f.append(
            Finding(severity=sev, code=code, table=table, column=column, message=msg, count=count)
        )

    if policy is not None and policy not in POLICIES:
        raise ValueError(
            f"policy for {table}.{column}: unknown {policy!r}; use one of {sorted(POLICIES)}"
        )
    if policy == "utc":  # a declaration never says which datetimes are instants
        m = map_column(table, column, declared, stats, None, json, uuid)
        if m.pg_type == "timestamp":
            find(
                Severity.INFO,
                "utc-datetime",
                "datetimes without zone are read as UTC: timestamptz (policy)",
            )
            return Mapped(pg_type="timestamptz", findings=tuple(f))
        find(
            Severity.ERROR,
            "utc",
            f"policy 'utc' takes naive ISO datetimes; this column maps to {m.pg_type}",
        )
        return Mapped(pg_type=m.pg_type, findings=(*m.findings, *f))
    classes = {k for k in ("integer", "real", "text", "blob") if getattr(stats, k)}
    aff = affinity(declared)
    if policy == "text":
        if "blob" in classes:
            find(
                Severity.ERROR, "mixed-storage", "BLOB values cannot be stored as text", stats.blob
            )
        elif len(classes) > 1:
            find(Severity.WARNING, "mixed-storage", f"{sorted(classes)} stored as text (policy)")
        return Mapped(pg_type="text", findings=tuple(f))
    if policy == "interval":  # nothing in a declaration says duration: the user does
        if classes <= {"integer"} or (classes == {"text"} and stats.all_iso_datetime):
            find(
                Severity.INFO,
                "interval",
                "durations become interval (policy): integers as microseconds,"
                " datetimes as the time since 1970-01-01 00:00:00",
            )
            return Mapped(pg_type="interval", findings=tuple(f))
        find(
            Severity.ERROR,
            "interval",
            f"policy 'interval' takes integer microseconds (Django's DurationField) or"
            f" datetimes without zone since 1970-01-01 (SQLAlchemy's Interval), all of one"
            f" kind; found {sorted(classes)}",
        )
        return Mapped(pg_type="text", findings=tuple(f))
    if (
        "BOOL" in declared.upper()
        and "text" in classes
        and classes <= {"integer", "text"}
        and stats.all_bool_text
        and (stats.all_bool or not stats.integer)
        and policy is None
    ):
        find(
            Severity.INFO,
            "boolean-text",
            f"{stats.text} value(s) stored as 't'/'f' (as Rails wrote booleans before 6.0)"
            " become booleans with the 0/1 ones",
            stats.text,
        )
        return Mapped(pg_type="boolean", findings=tuple(f))
    if len(classes) > 1 and classes != {"integer", "real"}:
        find(
            Severity.ERROR,
            "mixed-storage",
            f"values of several storage classes: {sorted(classes)}; policy 'text' keeps them as text",
        )
    if stats.text_with_nul:
        if policy == "bytea":
            find(Severity.WARNING, "nul-in-text", "text with NUL bytes stored as bytea (policy)")
            return Mapped(pg_type="bytea", findings=tuple(f))
        if policy == "null":
            find(
                Severity.WARNING,
                "nul-in-text",
                f"{stats.text_with_nul} value(s) with NUL bytes stored as NULL (policy)",
                stats.text_with_nul,
            )
        else:
            find(
                Severity.ERROR,
                "nul-in-text",
                f"{stats.text_with_nul} text value(s) contain NUL bytes, which PostgreSQL text refuses;"
                " policy 'bytea' or 'null' decides",
                stats.text_with_nul,
            )
    if classes == {"blob"} or (aff == "BLOB" and not classes - {"blob"} and classes):
        return Mapped(pg_type="bytea", findings=tuple(f))
    if classes and classes <= {"integer", "real"} and policy is None and is_decimal(declared):
        pg = numeric_type(declared)
        if not stats.not_decimal:
            find(
                Severity.INFO,
                "decimal",
                f"{declared} becomes {pg}: each number as SQLite shows it (15 significant"
                " digits), which reads back as the same double",
            )
            return Mapped(pg_type=pg, findings=tuple(f))
        find(
            Severity.WARNING,
            "decimal",
            f"{stats.not_decimal} number(s) are no exact decimal that fits {pg} (more than 15"
            " significant digits, more decimals, too large): kept as SQLite stores them",
            stats.not_decimal,
        )
    if classes <= {"integer"} and classes:
        if "BOOL" in declared.upper() and stats.all_bool:
            return Mapped(pg_type="boolean", findings=tuple(f))
        if _DATE_WORDS.search(declared):
            find(
                Severity.WARNING,
                "epoch-datetime",
                "unix-epoch integers in a date/time column: kept as bigint",
            )
        return Mapped(pg_type="bigint", findings=tuple(f))
    if classes <= {"integer", "real"} and classes:
        if aff == "INTEGER" and stats.real and policy != "double":
            find(
                Severity.ERROR,
                "int-overflow",
                f"{stats.real} value(s) in an INTEGER column are stored as REAL (an integer beyond"
                " 64 bits, or a fraction); policy 'double' accepts double precision",
                stats.real,
            )
        big = max(abs(stats.int_min or 0), abs(stats.int_max or 0))
        if big > 2**53:
            find(
                Severity.ERROR,
                "int-precision",
                "integers beyond 2^53 would lose precision in double precision",
            )
        if stats.nan_or_inf:
            find(
                Severity.INFO,
                "infinity",
                f"{stats.nan_or_inf} Infinity value(s) kept as Infinity in double precision",
                stats.nan_or_inf,
            )
        return Mapped(pg_type="double precision", findings=tuple(f))
    if classes <= {"text"} and uuid and not f and (form := uuid_form(declared, stats)):
        find(
            Severity.WARNING,
            "uuid",
            f"{declared} of UUIDs ({form} form: SQLAlchemy's Uuid, Django's or Tortoise's"
            " UUIDField) becomes uuid, the type their PostgreSQL dialects declare and bind;"
            " migrated views and triggers read it as this text, but the application's own SQL"
            " that reads it as text gets the dashed lower-case form; policy 'text' keeps"
            " the text",
        )
        return Mapped(pg_type="uuid", findings=tuple(f))
    if classes <= {"text"} and ip_text(declared) and (stats.all_ip or not classes) and not f:
        find(
            Severity.WARNING,
            "inet",
            "CHAR(39) of IP addresses (Django's GenericIPAddressField) becomes inet, which"
            " Django's PostgreSQL backend declares and binds; SQL that casts it to text gets"
            " a /32 or /128 suffix (host() does not); policy 'text' keeps the text",
        )
        return Mapped(pg_type="inet", findings=tuple(f))
    if classes <= {"text"}:
        if not classes:
            pg = "jsonb" if json else _empty_column_type(declared, aff)
            if aff == "NUMERIC":
                find(
                    Severity.INFO,
                    "empty-column",
                    f"no values; declared {declared!r} maps to {pg}",
                )
            return Mapped(pg_type=pg, findings=tuple(f))
        if f:
            return Mapped(pg_type="text", findings=tuple(f))
        if stats.all_json and (json or "JSON" in declared.upper()):
            find(
                Severity.INFO,
                "jsonb",
                "JSON text becomes jsonb: key order and whitespace are normalised",
            )
            return Mapped(pg_type="jsonb", findings=tuple(f))
        if stats.all_date_only and "DATE" in declared.upper() and "TIME" not in declared.upper():
            return Mapped(pg_type="date", findings=tuple(f))
        if stats.all_time_only and time_only(declared):
            return Mapped(pg_type="time", findings=tuple(f))
        if stats.all_iso_datetime and _DATE_WORDS.search(declared):
            find(
                Severity.INFO,
                "naive-datetime",
                "text datetimes without zone become timestamp (no time zone): values are not shifted",
            )
            return Mapped(pg_type="timestamp", findings=tuple(f))
        return Mapped(pg_type="text", findings=tuple(f))
    return Mapped(pg_type="text", findings=tuple(f))


def _empty_column_type(declared: str, aff: str) -> str:
    """A column with no values yet gets the type its declaration promises: the
    application will write datetimes into DATETIME, and a numeric column would
    refuse them (so would a translated trigger's CURRENT_TIMESTAMP)."""
    d = declared.upper()
    if "BOOL" in d:
        return "boolean"
    if "JSON" in d:
        return "jsonb"
    if "DATE" in d and "TIME" not in d:
        return "date"
    if time_only(declared):
        return "time"
    if _DATE_WORDS.search(d):
        return "timestamp"
    if is_decimal(declared):
        return numeric_type(declared)
    return {
        "INTEGER": "bigint",
        "REAL": "double precision",
        "TEXT": "text",
        "BLOB": "bytea",
    }.get(aff, "numeric")


def blocking(
    findings: list[Finding] | tuple[Finding, ...], accepted: Mapping[str, bool] | None = None
) -> list[Finding]:
    """Errors not accepted by name (`table.column:code` or `table:code`) stop the migration."""
    accepted = accepted or {}
    out = []
    for x in findings:
        keys = {f"{x.table}.{x.column}:{x.code}", f"{x.table}:{x.code}"}
        if x.severity == Severity.ERROR and not any(accepted.get(k) for k in keys):
            out.append(x)
    return out
