"""Which rows may differ between two snapshots of one SQLite file, judged from its pages.

During a cutover's write freeze the catch-up must find the few rows written
since the bulk copy. Finding them by digesting every table on both sides again
makes the freeze as long as a full validation (seconds per million rows). The
snapshots are taken with SQLite's backup API, which copies pages verbatim, so
two snapshots of one file number their pages alike: a table's leaf page whose
bytes, and whose overflow pages, are equal in both snapshots, and that is a leaf
of the same table in both, holds the same rows in both. Every row that differs
therefore lies on some other leaf of the old or the new snapshot, and only the
rowids on those leaves need reading again.

Pure: the caller reads the `dbstat` rows and the pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TABLE_LEAF = 0x0D  # b-tree page type of a rowid table's leaf
INTERIOR = (0x02, 0x05)  # index and table interior pages
LEAVES = (0x0A, 0x0D)


@dataclass(frozen=True)
class Page:
    """One `dbstat` row: a page of a table's b-tree."""

    table: str
    path: str  # '/', '/000/', '/000/003+000001' (overflow: the cell's path, '+', its index)
    pageno: int
    kind: str  # 'internal', 'leaf' or 'overflow'


@dataclass(frozen=True)
class TableDiff:
    """What may differ in one table: nothing, the rows on some leaves, or anything."""

    same: bool
    whole: bool = False  # rows cannot be told apart (a WITHOUT ROWID table changed)
    old_leaves: tuple[int, ...] = ()  # leaves of the old snapshot whose rows may differ
    new_leaves: tuple[int, ...] = ()  # and of the new snapshot


def overflow_owner(path: str) -> str:
    """The path of the page holding the cell an overflow page continues."""
    return path.rsplit("/", 1)[0] + "/"


def _leaves(pages: Iterable[Page]) -> tuple[dict[int, str], dict[int, set[int]]]:
    """Leaf page → its path, and leaf page → the overflow pages of its cells."""
    pages = list(pages)
    leaves = {p.pageno: p.path for p in pages if p.kind == "leaf"}
    by_path = {path: n for n, path in leaves.items()}
    owned: dict[int, set[int]] = {n: set() for n in leaves}
    for p in pages:
        if p.kind == "overflow":
            owner = by_path.get(overflow_owner(p.path))
            if owner is None:  # an interior cell's overflow: rowid tables have none
                raise ValueError(f"overflow page {p.pageno} of {p.table} has no leaf ({p.path})")
            owned[owner].add(p.pageno)
    return leaves, owned


def table_diff(
    old: Iterable[Page], new: Iterable[Page], differing: frozenset[int], rowid: bool
) -> TableDiff:
    """Compare one table's pages in two snapshots; `differing` holds the page numbers
    whose bytes differ (or that only one snapshot has).

    A rowid table keeps its rows only in leaves, so its interior pages do not
    matter. A WITHOUT ROWID table keeps rows in interior pages too, and has no
    rowid to name them by: any differing page makes it `whole`.
    """
    old, new = list(old), list(new)
    if not rowid:
        a = {(p.pageno, p.kind) for p in old}
        b = {(p.pageno, p.kind) for p in new}
        changed = a != b or any(n in differing for n, _k in a)
        return TableDiff(same=not changed, whole=changed)
    leaves_a, owned_a = _leaves(old)
    leaves_b, owned_b = _leaves(new)

    def stable(n: int, mine: Mapping[int, set[int]], theirs: Mapping[int, set[int]]) -> bool:
        return (
            n in theirs
            and n not in differing
            and mine[n] == theirs[n]
            and not any(o in differing for o in mine[n])
        )

    old_leaves = tuple(sorted(n for n in leaves_a if not stable(n, owned_a, owned_b)))
    new_leaves = tuple(sorted(n for n in leaves_b if not stable(n, owned_b, owned_a)))
    return TableDiff(
        same=not old_leaves and not new_leaves, old_leaves=old_leaves, new_leaves=new_leaves
    )


def _cells(page: bytes, header_at: int, header_size: int) -> list[int]:
    """Where each cell of a b-tree page starts: the cell pointer array follows the page
    header (8 bytes on a leaf, 12 on an interior page)."""
    cells = int.from_bytes(page[header_at + 3 : header_at + 5], "big")
    pointers = header_at + header_size
    return [
        int.from_bytes(page[pointers + 2 * i : pointers + 2 * i + 2], "big") for i in range(cells)
    ]


def btree_children(page: bytes, header_at: int = 0) -> tuple[int, list[int]]:
    """A b-tree page's type and, for an interior page, its children's page numbers (each
    cell starts with its left child; the rightmost child is in the header)."""
    kind = page[header_at]
    if kind in LEAVES:
        return kind, []
    if kind not in INTERIOR:
        raise ValueError(f"not a b-tree page (type {kind:#x})")
    children = [int.from_bytes(page[at : at + 4], "big") for at in _cells(page, header_at, 12)]
    children.append(int.from_bytes(page[header_at + 8 : header_at + 12], "big"))
    return kind, children


def freelist_trunk(page: bytes) -> tuple[int, list[int]]:
    """A freelist trunk page: the next trunk, and the free pages it lists."""
    count = int.from_bytes(page[4:8], "big")
    return int.from_bytes(page[0:4], "big"), [
        int.from_bytes(page[8 + 4 * i : 12 + 4 * i], "big") for i in range(count)
    ]


def varint(buf: bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian varint at `at`: its value and the offset after it."""
    value = 0
    for i in range(8):
        byte = buf[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | buf[at + 8], at + 9


def leaf_rowids(page: bytes, header_at: int = 0) -> list[int]:
    """The rowids of the cells on a rowid table's leaf page (`header_at` is 100 on page 1,
    after the file header). Each cell starts with its payload size and its rowid."""
    if page[header_at] != TABLE_LEAF:
        raise ValueError(f"not a table leaf page (type {page[header_at]:#x})")
    out = []
    for at in _cells(page, header_at, 8):
        _size, at = varint(page, at)
        rowid, _ = varint(page, at)
        out.append(rowid - (1 << 64) if rowid >= 1 << 63 else rowid)
    return out


def differing_pages(old: bytes, new: bytes, page_size: int, first: int = 1) -> set[int]:
    """Page numbers whose bytes differ, or that only one side has, in two chunks of the
    files that start at page `first`. A chunk is compared whole first: a freeze finds
    few pages changed among many."""
    if old == new:
        return set()
    longest = max(len(old), len(new))
    return {
        first + at // page_size
        for at in range(0, longest, page_size)
        if old[at : at + page_size] != new[at : at + page_size]
    }
