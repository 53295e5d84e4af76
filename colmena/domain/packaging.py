"""What a customer's package holds, decided without touching a file.

A package is the product directory plus the customer's license at its root: ``license.key``
(the signed key) and ``license.json`` (the license, readable). Making the zip is
`colmena.gateways.packaging`'s; these rules say what it may and must contain, so that the same
inputs always make the same members, and therefore the same bytes and SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import PurePosixPath

from colmena.domain.licensing import License
from colmena.errors import PermanentError

LICENSE_KEY_MEMBER = "license.key"
LICENSE_JSON_MEMBER = "license.json"
RESERVED_MEMBERS = frozenset({LICENSE_KEY_MEMBER, LICENSE_JSON_MEMBER})


class PackagingError(PermanentError):
    """The product directory or package name cannot make a safe package."""


def check_filename(filename: str) -> None:
    """A plain ``*.zip`` name: no directory part, not hidden."""
    name = PurePosixPath(filename).name
    if name != filename or not filename.endswith(".zip") or filename.startswith("."):
        raise PackagingError(f"package filename must be a plain *.zip name, got {filename!r}")


def package_filename(product_ref: str) -> str:
    """The name a customer's browser saves the package as: ``<product_ref>.zip``."""
    filename = f"{product_ref}.zip"
    check_filename(filename)
    return filename


def check_product_members(names: Iterable[str], *, product: str) -> list[str]:
    """The product's member names, sorted (the zip's order); refuses an empty product and one
    that already holds the license's own members."""
    members = sorted(names)
    if not members:
        raise PackagingError(f"product directory {product} has no files")
    reserved = RESERVED_MEMBERS & set(members)
    if reserved:
        raise PackagingError(f"product directory already contains {sorted(reserved)}")
    return members


def license_members(license: License, license_key: str) -> list[tuple[str, bytes]]:
    """The members the license adds at the package root, with their exact contents."""
    document = json.dumps(license.to_document(), indent=2, sort_keys=True, ensure_ascii=False)
    return [
        (LICENSE_KEY_MEMBER, (license_key.strip() + "\n").encode()),
        (LICENSE_JSON_MEMBER, (document + "\n").encode()),
    ]


def member_time(license: License) -> tuple[int, int, int, int, int, int]:
    """Every member's timestamp: the license's issue time, so a rebuild changes no byte."""
    issued = license.issued_at.timetuple()
    return (
        issued.tm_year,
        issued.tm_mon,
        issued.tm_mday,
        issued.tm_hour,
        issued.tm_min,
        issued.tm_sec,
    )
