"""Spanish and English for the console: English source strings, Spanish from JSON catalogs.

Each console module keeps its own catalog, `locales/es/<module>.json` (a map English ->
Spanish); all of them are loaded once at start-up. The language is the `lang` cookie the
switch in every page sets, else the browser's Accept-Language (first of es/en by preference),
else Spanish. A string missing from the catalog shows in English (a test keeps the catalogs
complete).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from aiohttp import web

Language = Literal["es", "en"]
LANGUAGES: tuple[Language, ...] = ("es", "en")
DEFAULT_LANGUAGE: Language = "es"
LANG_COOKIE = "lang"
LOCALES = Path(__file__).parent / "locales"

Catalog = Mapping[str, str]
CATALOG = web.AppKey("console_catalog", dict[str, str])


def load_catalog(directory: Path = LOCALES / "es") -> dict[str, str]:
    """Every `*.json` catalog of `directory` merged; a key two files translate differently is a
    mistake to fix, not to pick from."""
    merged: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: expected a JSON object of English -> Spanish")
        for english, spanish in entries.items():
            if not isinstance(spanish, str):
                raise ValueError(f"{path}: {english!r} must map to a string")
            if merged.get(english, spanish) != spanish:
                raise ValueError(f"{path}: {english!r} is translated differently elsewhere")
            merged[english] = spanish
    return merged


def _accepted(header: str) -> Language | None:
    """The preferred language of Accept-Language among ours, by q value then order."""
    ranked: list[tuple[float, int, Language]] = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        if quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


def request_language(request: web.Request) -> Language:
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    return _accepted(request.headers.get("Accept-Language", "")) or DEFAULT_LANGUAGE


def translated(catalog: Catalog, language: Language, text: str) -> str:
    return catalog.get(text, text) if language == "es" else text
