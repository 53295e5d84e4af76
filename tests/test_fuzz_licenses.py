"""Fuzzing downloads and license checks with random and mutated tokens and keys: never a 5xx,
no download spent or logged by a token that is not the real one, no secret in any answer or log.

A real link and license exist (delivered as in production, mail to a local SMTP server), so the
mutations start from working values and a lookup that matched would show as a spent link.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz_support import (
    FUZZ,
    capture_logs,
    configured_secrets,
    fuzz_settings,
    make_target,
)
from tests.licenses_support import (
    a_key,
    deliver_inline,
    insert_payment,
    license_settings,
    tampered,
)
from tests.standins.smtp import SmtpStandin

TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


@pytest.fixture
async def web(settings, smtp, tmp_path, make_client, db):
    active = fuzz_settings(license_settings(settings, smtp, tmp_path))
    token = await deliver_inline(active, await insert_payment(db), smtp)
    license_id, key = await db.fetchrow("SELECT id, license_key FROM licenses")
    with capture_logs() as logs:
        target = await make_target(
            await make_client(active), db, [*configured_secrets(active), token], logs
        )
        target.token, target.key, target.license_id = token, key, str(license_id)  # type: ignore[attr-defined]
        yield target


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe="")


@st.composite
def mutated(draw: st.DrawFn, original: str, alphabet: str) -> str:
    """A near miss: one character changed, dropped or added, a case flipped, or a random string."""
    kind = draw(st.sampled_from(["change", "drop", "add", "swapcase", "random", "shape", "pad"]))
    at = draw(st.integers(0, len(original) - 1))
    if kind == "change":
        return original[:at] + draw(st.sampled_from(alphabet)) + original[at + 1 :]
    if kind == "drop":
        return original[:at] + original[at + 1 :]
    if kind == "add":
        return original[:at] + draw(st.text(min_size=1, max_size=3)) + original[at:]
    if kind == "swapcase":
        return original[:at] + original[at:].swapcase()
    if kind == "shape":
        return draw(
            st.text(st.sampled_from(alphabet), min_size=len(original), max_size=len(original))
        )
    if kind == "pad":
        return original + draw(st.sampled_from(["=", "==", "%00", " ", ".", "/.."]))
    return draw(st.text(min_size=1, max_size=120))


@FUZZ
@given(data=st.data(), method=st.sampled_from(["GET", "POST", "HEAD"]))
async def test_random_and_mutated_download_tokens_spend_nothing(web, data, method) -> None:
    candidate = data.draw(mutated(web.token, TOKEN_ALPHABET), label="token")
    assume(candidate != web.token)
    await web.start()
    answer = await web.send(method, f"/downloads/{_segment(candidate)}", allow_redirects=False)
    await web.finish(answer, refused=True, what="a download with a wrong token")
    assert answer.status in (404, 405), answer.text[:300]


@FUZZ
@given(data=st.data())
async def test_random_and_mutated_license_keys_verify_only_the_issued_one(web, data) -> None:
    source = data.draw(st.sampled_from([web.key, a_key(), tampered(web.key)]), label="source")
    candidate = data.draw(mutated(source, TOKEN_ALPHABET + "."), label="key")
    await web.start()
    answer = await web.send("GET", f"/licenses/{_segment(candidate)}/status")
    issued = "".join(candidate.split()) == web.key  # whitespace anywhere is forgiven
    await web.finish(answer, refused=not issued, what="a license status check")
    if issued:
        assert answer.status == 200, answer.text[:300]
        assert f'"license_id": "{web.license_id}"' in answer.text, answer.text[:300]
    else:
        assert answer.status in (400, 404), answer.text[:300]


@FUZZ
@given(
    path=st.sampled_from(["/downloads/{}", "/licenses/{}/status", "/licenses/public-key"]),
    segment=st.binary(min_size=1, max_size=80),
    header=st.sampled_from(
        [b"User-Agent", b"X-Forwarded-For", b"Cookie", b"Range", b"If-None-Match"]
    ),
    value=st.binary(max_size=60),
    method=st.sampled_from([b"GET", b"POST", b"HEAD"]),
)
async def test_raw_paths_and_headers_never_break_license_routes(
    web, path, segment, header, value, method
) -> None:
    raw = bytes(b for b in segment if b > 0x20 and b not in b"/?#%\x7f")
    assume(raw and raw != web.token.encode())
    clean = bytes(b for b in value if b not in b"\r\n")
    await web.start()
    target = path.replace("{}", "\x00").encode().replace(b"\x00", raw)
    head = (
        method
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + header
        + b": "
        + clean
        + b"\r\nContent-Length: 0\r\n"
    )
    answer = await web.send_raw(head)
    await web.finish(answer, changes_nothing=True, what="a raw license request")
    if "{}" in path:  # a token or key that is not the issued one
        assert 400 <= answer.status < 500, answer.text[:300]
