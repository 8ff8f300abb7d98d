"""The page comparison's decisions, on hand-made pages and `dbstat` rows."""

from __future__ import annotations

import pytest

from tasks.core.pagediff import (
    Page,
    TableDiff,
    btree_children,
    differing_pages,
    freelist_trunk,
    leaf_rowids,
    overflow_owner,
    table_diff,
    varint,
)


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    if v >= 1 << 56:
        head, last = v >> 8, v & 0xFF
        groups = [(head >> (7 * i)) & 0x7F for i in range(7, -1, -1)]
        return bytes(g | 0x80 for g in groups) + bytes([last])
    groups = []
    while True:
        groups.append(v & 0x7F)
        v >>= 7
        if not v:
            break
    groups.reverse()
    return bytes([g | 0x80 for g in groups[:-1]] + [groups[-1]])


@pytest.mark.parametrize("v", [0, 1, 127, 128, 16383, 16384, 2**31, 2**56 - 1, 2**56, 2**63 - 1])
def test_varints_of_every_length(v):
    raw = b"\x00" + _varint(v) + b"\xff"
    assert varint(raw, 1) == (v, 1 + len(_varint(v)))


def _leaf(rowids: list[int], size: int = 512, header_at: int = 0) -> bytes:
    page = bytearray(size)
    page[header_at] = 0x0D
    page[header_at + 3 : header_at + 5] = len(rowids).to_bytes(2, "big")
    at = size
    for i, r in enumerate(rowids):
        cell = _varint(3) + _varint(r) + b"abc"
        at -= len(cell)
        page[at : at + len(cell)] = cell
        ptr = header_at + 8 + 2 * i
        page[ptr : ptr + 2] = at.to_bytes(2, "big")
    return bytes(page)


def test_rowids_of_a_leaf_including_negative_and_huge_ones():
    ids = [-(2**63), -5, 0, 1, 300, 2**40, 2**63 - 1]
    assert leaf_rowids(_leaf(ids)) == ids
    assert leaf_rowids(_leaf([7, 8], header_at=100), header_at=100) == [7, 8]


def test_an_interior_page_is_not_read_as_a_leaf():
    page = bytearray(_leaf([1]))
    page[0] = 0x05
    with pytest.raises(ValueError, match="not a table leaf"):
        leaf_rowids(bytes(page))


def test_overflow_pages_belong_to_the_page_of_their_cell():
    assert overflow_owner("/000/003+000001") == "/000/"
    assert overflow_owner("/000+000000") == "/"
    assert overflow_owner("/00a/1f2/003+000000") == "/00a/1f2/"


def test_differing_pages_include_pages_only_one_file_has():
    a = bytes(4096 * 3)
    b = bytearray(4096 * 4)
    b[4096 + 7] = 1
    assert differing_pages(a, bytes(b), 4096) == {2, 4}
    assert differing_pages(a, a, 4096) == frozenset()


T = "t"


def leaf(n: int, path: str) -> Page:
    return Page(T, path, n, "leaf")


def over(n: int, path: str) -> Page:
    return Page(T, path, n, "overflow")


def test_a_table_whose_leaves_are_all_equal_is_the_same():
    old = [Page(T, "/", 2, "internal"), leaf(3, "/000/"), leaf(4, "/001/")]
    # an interior page changing alone moves no row of a rowid table
    assert table_diff(old, old, frozenset({2}), rowid=True) == TableDiff(same=True)


def test_a_changed_leaf_is_read_on_both_sides():
    old = [leaf(3, "/000/"), leaf(4, "/001/")]
    new = [leaf(3, "/000/"), leaf(4, "/001/"), leaf(9, "/002/")]  # a split added page 9
    d = table_diff(old, new, frozenset({4, 9}), rowid=True)
    assert (d.same, d.old_leaves, d.new_leaves) == (False, (4,), (4, 9))


def test_a_leaf_freed_with_its_bytes_intact_still_counts():
    """Freed pages keep their bytes (secure_delete off): page 4 is equal in both files
    but no longer a leaf of the table, so its rows were deleted."""
    old = [leaf(3, "/000/"), leaf(4, "/001/")]
    new = [leaf(3, "/")]
    d = table_diff(old, new, frozenset({3}), rowid=True)
    assert d.old_leaves == (3, 4) and d.new_leaves == (3,)


def test_an_overflow_page_that_changed_marks_its_leaf():
    old = [leaf(3, "/000/"), over(5, "/000/001+000000"), leaf(4, "/001/")]
    d = table_diff(old, old, frozenset({5}), rowid=True)
    assert d.old_leaves == (3,) and d.new_leaves == (3,)


def test_an_overflow_chain_that_moved_marks_its_leaf():
    old = [leaf(3, "/000/"), over(5, "/000/001+000000")]
    new = [leaf(3, "/000/"), over(6, "/000/001+000000")]
    d = table_diff(old, new, frozenset(), rowid=True)
    assert d.old_leaves == (3,) and d.new_leaves == (3,)


def test_without_rowid_tables_are_whole_or_the_same():
    pages = [Page(T, "/", 2, "internal"), leaf(3, "/000/")]
    assert table_diff(pages, pages, frozenset({7}), rowid=False) == TableDiff(same=True)
    assert table_diff(pages, pages, frozenset({2}), rowid=False).whole
    assert table_diff(pages, pages[1:], frozenset(), rowid=False).whole


def test_an_overflow_page_without_its_leaf_is_refused():
    with pytest.raises(ValueError, match="has no leaf"):
        table_diff([over(5, "/000/001+000000")], [], frozenset(), rowid=True)


def test_children_of_an_interior_page_and_none_of_a_leaf():
    page = bytearray(512)
    page[0] = 0x05
    page[3:5] = (2).to_bytes(2, "big")
    page[8:12] = (99).to_bytes(4, "big")  # the rightmost child
    for i, (at, child) in enumerate([(400, 7), (450, 8)]):
        page[12 + 2 * i : 14 + 2 * i] = at.to_bytes(2, "big")
        page[at : at + 4] = child.to_bytes(4, "big")
    assert btree_children(bytes(page)) == (0x05, [7, 8, 99])
    assert btree_children(_leaf([1, 2])) == (0x0D, [])
    page[0] = 0x00
    with pytest.raises(ValueError, match="not a b-tree page"):
        btree_children(bytes(page))


def test_a_freelist_trunk_names_the_next_trunk_and_its_free_pages():
    page = (12).to_bytes(4, "big") + (3).to_bytes(4, "big")
    page += b"".join(n.to_bytes(4, "big") for n in (5, 6, 9)) + bytes(100)
    assert freelist_trunk(page) == (12, [5, 6, 9])
