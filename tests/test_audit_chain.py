"""The audit chain's pure rules: a check that names every broken row (altered, missing, out of
order, links deleted) without flagging the intact ones. The rows' canonical bytes come from
the database (tests/test_audit.py checks them); here they are any bytes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.audit_chain import GENESIS, BreakKind, link_hash, seal
from tests.audit_chain_reference import Link, find_breaks

Row = tuple[int, bytes]


def _chain(rows: list[Row]) -> list[Link]:
    links = seal(rows, last_seq=0, last_hash=GENESIS)
    return [
        Link(link.seq, link.event_id, link.prev_hash, link.hash, canonical)
        for link, (_, canonical) in zip(links, rows, strict=True)
    ]


def _distinct(canonicals: list[bytes]) -> list[Row]:
    return [(index, canonical) for index, canonical in enumerate(canonicals, start=1)]


def _rows(min_size: int) -> st.SearchStrategy[list[Row]]:
    return st.lists(st.binary(max_size=40), min_size=min_size, max_size=12).map(_distinct)


_chains = _rows(1)


@given(st.binary(max_size=40), st.binary(min_size=1, max_size=4))
def test_any_changed_byte_changes_the_hash(canonical: bytes, extra: bytes) -> None:
    assert link_hash(GENESIS, canonical + extra) != link_hash(GENESIS, canonical)
    assert link_hash(bytes([1]) * 32, canonical) != link_hash(GENESIS, canonical)


@given(_chains)
def test_an_intact_chain_has_no_breaks(rows: list[Row]) -> None:
    assert find_breaks(_chain(rows)) == []


@given(_chains, st.data())
def test_an_altered_row_is_the_one_reported(rows: list[Row], data: st.DataObject) -> None:
    links = _chain(rows)
    index = data.draw(st.integers(0, len(links) - 1))
    target = links[index]
    assert target.canonical is not None
    links[index] = replace(target, canonical=target.canonical + b"!")
    breaks = find_breaks(links)
    assert [(b.kind, b.seq, b.event_id) for b in breaks] == [
        (BreakKind.ALTERED, target.seq, target.event_id)
    ]


@given(_chains, st.data())
def test_a_deleted_row_is_reported_missing(rows: list[Row], data: st.DataObject) -> None:
    links = _chain(rows)
    index = data.draw(st.integers(0, len(links) - 1))
    links[index] = replace(links[index], canonical=None)
    assert [(b.kind, b.seq) for b in find_breaks(links)] == [(BreakKind.MISSING, links[index].seq)]


@given(_rows(2), st.data())
def test_deleted_links_are_reported_as_a_gap(rows: list[Row], data: st.DataObject) -> None:
    links = _chain(rows)
    first = data.draw(st.integers(0, len(links) - 2))
    last = data.draw(st.integers(first, len(links) - 2))
    kept = links[:first] + links[last + 1 :]
    assert [(b.kind, b.seq) for b in find_breaks(kept)] == [
        (BreakKind.MISSING_LINKS, links[first].seq)
    ]


@given(_rows(3), st.data())
def test_swapped_rows_are_reported_out_of_order(rows: list[Row], data: st.DataObject) -> None:
    links = _chain(rows)
    i = data.draw(st.integers(0, len(links) - 2))
    j = data.draw(st.integers(i + 1, len(links) - 1))
    swapped = list(links)
    swapped[i] = replace(links[j], seq=links[i].seq)
    swapped[j] = replace(links[i], seq=links[j].seq)
    breaks = find_breaks(swapped)
    flagged = {b.event_id for b in breaks}
    assert {b.kind for b in breaks} == {BreakKind.OUT_OF_ORDER}
    assert {links[i].event_id, links[j].event_id} <= flagged
    # Nothing before the first moved row is blamed.
    assert all(b.seq is not None and b.seq >= links[i].seq for b in breaks)


@given(_rows(2), st.data())
def test_a_row_rewritten_with_its_seal_breaks_the_next_link(
    rows: list[Row], data: st.DataObject
) -> None:
    links = _chain(rows)
    index = data.draw(st.integers(0, len(links) - 2))
    target = links[index]
    assert target.canonical is not None
    forged = target.canonical + b"someone else"
    links[index] = replace(target, canonical=forged, hash=link_hash(target.prev_hash, forged))
    breaks = find_breaks(links)
    assert [(b.kind, b.seq) for b in breaks] == [(BreakKind.OUT_OF_ORDER, links[index + 1].seq)]
    assert breaks[0].prev_hash == target.hash


def test_sealing_continues_a_chain() -> None:
    first, second = (1, b"[1]"), (2, b"[2]")
    [one] = seal([first], last_seq=0, last_hash=GENESIS)
    [two] = seal([second], last_seq=one.seq, last_hash=one.hash)
    assert (two.seq, two.prev_hash) == (2, one.hash)
    assert seal([first, second], last_seq=0, last_hash=GENESIS) == [one, two]
