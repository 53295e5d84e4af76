"""JSON read as the database keeps it: every number finite.

Python's json reads `1e400` as infinity and takes `NaN` and `Infinity` as numbers. PostgreSQL's
jsonb refuses those two, but keeps `1e400` as an exact numeric, which a worker reading the
stored text back with Python gets as infinity. Webhook bodies are stored as they arrived, so one
carrying any such number is refused at the door (a 4xx that changes nothing) rather than stored
for a worker to dead-letter.
"""

from __future__ import annotations

import json
import math
from typing import Any


def loads(document: bytes | str) -> Any:
    """`json.loads`, raising ValueError for a number that is not finite."""
    return json.loads(document, parse_float=_finite_float, parse_constant=_refuse_constant)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")
