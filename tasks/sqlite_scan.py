"""Scan a SQLite source, read-only, into the facts the type mapping needs (issue 3 groundwork).

One aggregate query per column: SQLite computes the storage-class counts and
value facts itself, so nothing is materialised in Python.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tasks.core.errors import MigrationError
from tasks.core.sqlmap import ColumnStats, quote_ident


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


def scan_column(conn: sqlite3.Connection, table: str, column: str) -> ColumnStats:
    c = quote_ident(column)
    t = quote_ident(table)
    row = conn.execute(
        f"""SELECT
          coalesce(sum(typeof({c}) = 'integer'), 0),
          coalesce(sum(typeof({c}) = 'real'), 0),
          coalesce(sum(typeof({c}) = 'text'), 0),
          coalesce(sum(typeof({c}) = 'blob'), 0),
          coalesce(sum(typeof({c}) = 'null'), 0),
          min(CASE WHEN typeof({c}) = 'integer' THEN {c} END),
          max(CASE WHEN typeof({c}) = 'integer' THEN {c} END),
          coalesce(sum(typeof({c}) = 'integer' AND {c} NOT IN (0, 1)), 0),
          coalesce(sum(typeof({c}) = 'text' AND json_valid({c}) AND substr(ltrim({c}), 1, 1) IN ('{{', '[')), 0),
          coalesce(sum(typeof({c}) = 'text'
                   AND {c} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'
                   AND julianday({c}) IS NOT NULL), 0),
          coalesce(sum(typeof({c}) = 'real' AND abs({c}) > 1.7976931348623157e308), 0),
          coalesce(sum(typeof({c}) = 'text' AND instr(CAST({c} AS BLOB), x'00') > 0), 0)
        FROM {t}"""
    ).fetchone()
    integer, real, text, blob, null, imin, imax, not_bool, json_ok, iso_ok, inf, nul = row
    return ColumnStats(
        integer=integer,
        real=real,
        text=text,
        blob=blob,
        null=null,
        int_min=imin,
        int_max=imax,
        all_bool=integer > 0 and not_bool == 0,
        all_json=text > 0 and json_ok == text,
        all_iso_datetime=text > 0 and iso_ok == text,
        nan_or_inf=inf,
        text_with_nul=nul,
    )
