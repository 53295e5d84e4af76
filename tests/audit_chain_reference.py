"""The audit chain's rules run over links held in memory: the reference the database's own
check (`colmena.store.audit.verify_chain`, which computes each link's facts in SQL) must agree
with, and what the Hypothesis properties of `judge` run on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from colmena.domain.audit_chain import GENESIS, Break, LinkFacts, judge, link_hash


@dataclass(frozen=True)
class Link:
    """A stored link with its row's canonical bytes, or None when that row is gone."""

    seq: int
    event_id: int
    prev_hash: bytes
    hash: bytes
    canonical: bytes | None


def link_facts(links: Iterable[Link]) -> Iterator[LinkFacts]:
    """The facts of links given in seq order, computed in memory."""
    prev_seq, prev_link = 0, GENESIS
    for link in links:
        yield LinkFacts(
            seq=link.seq,
            event_id=link.event_id,
            prev_hash=link.prev_hash,
            prev_seq=prev_seq,
            present=link.canonical is not None,
            intact=link.canonical is not None
            and link_hash(link.prev_hash, link.canonical) == link.hash,
            continues=link.prev_hash == prev_link,
        )
        prev_seq, prev_link = link.seq, link.hash


def find_breaks(links: Iterable[Link]) -> list[Break]:
    """Every break of a chain given in seq order."""
    return [found for facts in link_facts(links) for found in judge(facts)]
