"""The rows written between two snapshots of a SQLite file, found from its pages.

A cutover freezes writes, snapshots the file again and must bring staging up to
date. Comparing the two snapshots page by page (`tasks.core.pagediff`) names the
few rows that may have changed in a fraction of a second, where digests of every
table take as long as a full validation. Anything this cannot vouch for (another
schema, another page size, no `dbstat` in this SQLite) returns None, and the
caller falls back to digests.
"""

from __future__ import annotations

import mmap
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.core.pagediff import Page, differing_pages, leaf_rowids, table_diff
from tasks.sqlite_scan import open_readonly


@dataclass(frozen=True)
class RowChanges:
    """The rows of one table that may differ: these rowids, or (`whole`) any row."""

    whole: bool
    rowids: frozenset[int] = frozenset()


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m


def _layout(conn: sqlite3.Connection, names: set[str]) -> dict[str, list[Page]]:
    out: dict[str, list[Page]] = {n: [] for n in names}
    for name, path, pageno, kind in conn.execute("SELECT name, path, pageno, pagetype FROM dbstat"):
        if name in out:
            out[name].append(Page(name, path, pageno, kind))
    return out


def _schema(conn: sqlite3.Connection) -> list[tuple[str, ...]]:
    return conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
    ).fetchall()


def changed_rows(old: Path, new: Path, tables: Mapping[str, bool]) -> dict[str, RowChanges] | None:
    """Per table (`tables`: name → whether it has rowids) that may have changed between
    the snapshots `old` and `new` (both taken with the backup API from one file), the
    rowids whose rows may differ. Tables left out are unchanged; None means the pages
    cannot tell."""
    names = set(tables)
    a, b = open_readonly(old), open_readonly(new)
    try:
        size = a.execute("PRAGMA page_size").fetchone()[0]
        if size != b.execute("PRAGMA page_size").fetchone()[0] or _schema(a) != _schema(b):
            return None
        try:
            pages_a, pages_b = _layout(a, names), _layout(b, names)
        except sqlite3.OperationalError:  # this SQLite was built without dbstat
            return None
    finally:
        a.close()
        b.close()
    out: dict[str, RowChanges] = {}
    with _mapped(old) as fa, _mapped(new) as fb:
        differing = differing_pages(fa, fb, size)
        for name, has_rowid in tables.items():
            if not pages_a[name] and not pages_b[name]:  # virtual: rows live elsewhere
                out[name] = RowChanges(whole=True)
                continue
            try:
                d = table_diff(pages_a[name], pages_b[name], differing, has_rowid)
            except ValueError:
                out[name] = RowChanges(whole=True)
                continue
            if d.same:
                continue
            if d.whole:
                out[name] = RowChanges(whole=True)
                continue
            rowids: set[int] = set()
            for mapped, leaves in ((fa, d.old_leaves), (fb, d.new_leaves)):
                for n in leaves:
                    page = mapped[(n - 1) * size : n * size]
                    rowids.update(leaf_rowids(page, 100 if n == 1 else 0))
            out[name] = RowChanges(whole=False, rowids=frozenset(rowids))
    return out
