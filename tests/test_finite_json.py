"""Webhook bodies are read with `finite_json.loads`: what jsonb would keep but Python would read
back as infinity (or what jsonb refuses) is not JSON to colmena."""

from __future__ import annotations

import pytest

from colmena.domain import finite_json


@pytest.mark.parametrize(
    "text", ['{"amount": 1e400}', "[-1E+309]", '{"a": NaN}', "[Infinity]", '{"b": [-Infinity]}']
)
def test_a_number_that_is_not_finite_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        finite_json.loads(text)


def test_finite_numbers_read_as_json_reads_them() -> None:
    text = b'{"amount": 1999, "rate": 17.25, "tiny": 1e-400, "big": 1e308, "n": -0.0}'
    assert finite_json.loads(text) == {
        "amount": 1999, "rate": 17.25, "tiny": 0.0, "big": 1e308, "n": -0.0,
    }  # fmt: skip
