"""The audit trail's hash chain: the link that seals a row, and the row-by-row findings of a
check.

Each sealed row gets a link `hash = SHA-256(VERSION || prev_hash || canonical)`, where prev_hash
is the hash of the link before it (GENESIS for the first) and is stored in the link too, and
`canonical` is the row's canonical bytes. Storing prev_hash lets a check tell the two ways a
chain breaks apart: a row whose content no longer gives its own link's hash was altered; an
intact row whose prev_hash is not the hash of the link before it was moved (or the link before
it rewritten). A gap in the sequence numbers is a link deleted; a link whose row is gone is a
row deleted. Each finding names its row, and a break never hides the rows after it.

The canonical bytes are the database's own JSON text of the row (`colmena.store.audit`): jsonb
prints one text for one value (keys in a fixed order, fixed spacing, numbers exact), so the
same row always gives the same bytes, and the database can recompute every link's hash itself
(SHA-256 is built in). That is what lets a check of millions of rows run inside the database,
sending back only the broken links: the check's facts per link (`LinkFacts`) come from a
query, and `judge` here turns them into findings.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

VERSION = b"colmena-audit-v2\n"
GENESIS = bytes(32)


def link_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(VERSION + prev_hash + canonical).digest()


@dataclass(frozen=True, slots=True)
class NewLink:
    seq: int
    event_id: int
    prev_hash: bytes
    hash: bytes


def seal(rows: Iterable[tuple[int, bytes]], *, last_seq: int, last_hash: bytes) -> list[NewLink]:
    """The links that append `rows` (event id, canonical bytes), in the given order, after link
    `last_seq`."""
    links = []
    prev = last_hash
    seq = last_seq
    for event_id, canonical in rows:
        seq += 1
        digest = link_hash(prev, canonical)
        links.append(NewLink(seq, event_id, prev, digest))
        prev = digest
    return links


class BreakKind(enum.StrEnum):
    ALTERED = "altered"
    MISSING = "missing"
    MISSING_LINKS = "missing_links"
    OUT_OF_ORDER = "out_of_order"
    UNSEALED_BEHIND = "unsealed_behind"


@dataclass(frozen=True)
class Break:
    """One finding. For OUT_OF_ORDER, prev_hash is what the link says came before it (so the
    caller can name the link that really did)."""

    kind: BreakKind
    seq: int | None
    event_id: int | None
    detail: str
    prev_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What a check learns of one stored link by itself and the link stored before it."""

    seq: int
    event_id: int
    prev_hash: bytes
    # The seq of the link stored before this one (0 for the first link).
    prev_seq: int
    # The sealed row still exists.
    present: bool
    # The row, after the link's own prev_hash, still gives the link's hash.
    intact: bool
    # The link's prev_hash is the hash of the link stored before it (GENESIS for the first).
    continues: bool


def judge(facts: LinkFacts) -> list[Break]:
    """The findings of one link (none when it is sound)."""
    found = []
    gap = facts.seq != facts.prev_seq + 1
    if gap:
        first, last = facts.prev_seq + 1, facts.seq - 1
        span = f"link {first}" if first == last else f"links {first}..{last}"
        found.append(Break(BreakKind.MISSING_LINKS, first, None, f"chain {span} deleted"))
    if not facts.present:
        found.append(
            Break(BreakKind.MISSING, facts.seq, facts.event_id, "the sealed row is deleted")
        )
    elif not facts.intact:
        found.append(
            Break(
                BreakKind.ALTERED, facts.seq, facts.event_id, "the row no longer matches its seal"
            )
        )
    elif not facts.continues and not gap:
        found.append(
            Break(
                BreakKind.OUT_OF_ORDER,
                facts.seq,
                facts.event_id,
                "sealed after another link than the one now before it"
                " (links re-ordered, or the one before rewritten)",
                prev_hash=facts.prev_hash,
            )
        )
    return found
