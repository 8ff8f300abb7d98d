"""Scan a SQLite source, read-only, into the facts the type mapping needs (issue 3 groundwork).

One aggregate query per column: SQLite computes the storage-class counts and
value facts itself, so nothing is materialised in Python.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tasks.core.errors import MigrationError
from tasks.core.sqlmap import ColumnStats, affinity, quote_ident


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open without any chance of writing (mode=ro), and fail clearly on a non-database."""
    if not path.is_file():
        raise MigrationError(f"{path} does not exist or is not a file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise MigrationError(
            f"{path} is not a readable SQLite database: {exc}",
            hint="check the path; a locked database needs its writer stopped",
        ) from exc
    return conn


_AGGREGATES = 13


def _aggregates(c: str, declared: str) -> str:
    """Storage classes always; value tests only where the declared type can use them.

    json_valid/julianday/date on every text value cost more than the rest of
    the scan together, and the mapping only asks them for JSON/DATE/TIME columns.
    """
    d = declared.upper()
    sql = f"""
          coalesce(sum(typeof({c}) = 'integer'), 0),
          coalesce(sum(typeof({c}) = 'real'), 0),
          coalesce(sum(typeof({c}) = 'text'), 0),
          coalesce(sum(typeof({c}) = 'blob'), 0),
          coalesce(sum(typeof({c}) = 'null'), 0),
          min(CASE WHEN typeof({c}) = 'integer' THEN {c} END),
          max(CASE WHEN typeof({c}) = 'integer' THEN {c} END),
          coalesce(sum(typeof({c}) = 'integer' AND {c} NOT IN (0, 1)), 0),
          coalesce(sum(typeof({c}) = 'text' AND json_valid({c}) AND substr(ltrim({c}), 1, 1) IN ('{{', '[')), 0),
          coalesce(sum(typeof({c}) = 'text' AND julianday({c}) IS NOT NULL
                   AND ({c} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'
                        OR ({c} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][ T][0-9][0-9]:[0-9][0-9]*'
                            AND NOT substr({c}, 17) GLOB '*[^0-9:.]*'))), 0),
          coalesce(sum(typeof({c}) = 'text' AND date({c}) = {c}), 0),
          coalesce(sum(typeof({c}) = 'real' AND abs({c}) > 1.7976931348623157e308), 0),
          coalesce(sum(typeof({c}) = 'text' AND instr(CAST({c} AS BLOB), x'00') > 0), 0)"""
    parts = sql.split(",\n")
    aff = affinity(declared)
    if aff in ("INTEGER", "TEXT"):  # min/max and Infinity only matter for a double mapping
        parts[5] = parts[6] = parts[11] = "NULL"
    if aff in ("INTEGER", "REAL"):  # text here is mixed storage already
        parts[12] = "0"
    if "BOOL" not in d:
        parts[7] = "0"
    if "JSON" not in d:
        parts[8] = "0"
    if "DATE" not in d and "TIME" not in d:
        parts[9] = parts[10] = "0"
    assert len(parts) == _AGGREGATES
    return ",\n".join(parts)


def _stats(row: tuple[int | None, ...]) -> ColumnStats:
    integer, real, text, blob, null, imin, imax, not_bool, json_ok, iso_ok, date_ok, inf, nul = row
    return ColumnStats(
        integer=integer or 0,
        real=real or 0,
        text=text or 0,
        blob=blob or 0,
        null=null or 0,
        int_min=imin,
        int_max=imax,
        all_bool=bool(integer) and not_bool == 0,
        all_json=bool(text) and json_ok == text,
        all_iso_datetime=bool(text) and iso_ok == text,
        all_date_only=bool(text) and date_ok == text,
        nan_or_inf=inf or 0,
        text_with_nul=nul or 0,
    )


Raw = tuple[int | None, ...]


def scan_table_raw(
    conn: sqlite3.Connection,
    table: str,
    columns: list[str],
    declared: list[str] | None = None,
    where: str = "",
) -> list[Raw]:
    """Per column, the raw aggregates of the rows matching `where` (mergeable across ranges)."""
    types = declared or ["BOOL JSON DATETIME"] * len(columns)
    select = ",".join(_aggregates(quote_ident(c), d) for c, d in zip(columns, types, strict=True))
    row = conn.execute(f"SELECT {select} FROM {quote_ident(table)}{where}").fetchone()
    return [tuple(row[i * _AGGREGATES : (i + 1) * _AGGREGATES]) for i in range(len(columns))]


def merge_raw(a: Raw, b: Raw) -> Raw:
    """Counts add up; the integer min and max are the min and max of the parts."""
    out: list[int | None] = [(x or 0) + (y or 0) for x, y in zip(a, b, strict=True)]
    lows = [v for v in (a[5], b[5]) if v is not None]
    highs = [v for v in (a[6], b[6]) if v is not None]
    out[5] = min(lows) if lows else None
    out[6] = max(highs) if highs else None
    return tuple(out)


def stats_of(raw: Raw) -> ColumnStats:
    return _stats(raw)


def scan_table(
    conn: sqlite3.Connection, table: str, columns: list[str], declared: list[str] | None = None
) -> dict[str, ColumnStats]:
    """All columns of a table in one pass over its rows."""
    if not columns:
        return {}
    raws = scan_table_raw(conn, table, columns, declared)
    return {c: _stats(r) for c, r in zip(columns, raws, strict=True)}


def scan_column(
    conn: sqlite3.Connection, table: str, column: str, declared: str | None = None
) -> ColumnStats:
    return scan_table(conn, table, [column], [declared] if declared else None)[column]
