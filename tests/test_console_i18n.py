"""Spanish and English in the console: every English source string a console template or
console module shows has a Spanish entry, catalogs agree with each other, and the language
comes from the switch's cookie, else the browser, else Spanish."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jinja2
import pytest

from colmena.http.console.errors import MESSAGES
from colmena.http.console.i18n import LOCALES, load_catalog
from tests.console_support import console, console_settings, page_token

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "colmena" / "http" / "templates" / "console"
MODULES = ROOT / "colmena" / "http" / "console"
# Where a console module hands an English source string to be shown: the argument positions
# and keywords that are translated at render.
SHOWN = {"HtmlError": (1, None), "translate": (1, None), "error_page": (2, None)}
SHOWN_KEYWORDS = {"see_other": "notice", "confirmation": "message"}


def template_strings() -> dict[str, set[str]]:
    """Every `_("...")` literal of every console template, by template."""
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    found: dict[str, set[str]] = {}
    for path in sorted(TEMPLATES.rglob("*.html")):
        source = path.read_text(encoding="utf-8")
        strings = {
            message
            for _line, function, message in env.extract_translations(source)
            if function == "_" and isinstance(message, str)
        }
        found[str(path.relative_to(TEMPLATES))] = strings
    return found


def _constants(tree: ast.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            names[node.targets[0].id] = node.value.value
    return names


def _literal(node: ast.expr | None, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    return None


def module_strings() -> dict[str, set[str]]:
    """String literals (or module constants) console modules give to HtmlError, translate,
    see_other(notice=) and confirmation(message=), plus the error pages' messages."""
    found: dict[str, set[str]] = {}
    for path in sorted(MODULES.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = _constants(tree)
        strings: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in SHOWN:
                position = SHOWN[name][0]
                if len(node.args) > position:
                    strings.add(_literal(node.args[position], names) or "")
            if name in SHOWN_KEYWORDS:
                for keyword in node.keywords:
                    if keyword.arg == SHOWN_KEYWORDS[name]:
                        strings.add(_literal(keyword.value, names) or "")
        if path.name == "errors.py":
            strings |= set(MESSAGES.values())
        strings.discard("")
        found[path.name] = strings
    return found


def test_the_extraction_finds_what_the_core_templates_show() -> None:
    # Guards the test itself: an extraction that found nothing would pass everything.
    found = template_strings()
    assert {"Sign in", "Skip to content", "Language"} <= found["base.html"] | found["login.html"]
    assert "Yes, do it" in found["confirm.html"]
    modules = module_strings()
    assert "You are signed out." in modules["login.py"]
    assert "That page link is not valid" in modules["core.py"]


@pytest.mark.parametrize("source", ["templates", "modules"])
def test_every_shown_string_has_a_spanish_entry(source: str) -> None:
    catalog = load_catalog()
    found = template_strings() if source == "templates" else module_strings()
    missing = {
        where: sorted(text for text in strings if text not in catalog)
        for where, strings in found.items()
    }
    missing = {where: texts for where, texts in missing.items() if texts}
    assert missing == {}, json.dumps(missing, indent=2, ensure_ascii=False)


def test_every_catalog_is_a_map_of_english_to_spanish_text() -> None:
    for path in sorted((LOCALES / "es").glob("*.json")):
        entries = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(entries, dict), path
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in entries.items())


def test_two_catalogs_may_not_translate_one_string_differently(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"Cancel": "Cancelar"}), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"Cancel": "Anular"}), encoding="utf-8")
    with pytest.raises(ValueError, match="translated differently"):
        load_catalog(tmp_path)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "es"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR, en;q=0.5, es;q=0.8", "es"),
        ("de, en;q=0.1", "en"),
        ("en;q=0, es", "es"),
        ("fr", "es"),
    ],
)
async def test_the_browser_language_is_followed_when_nothing_was_chosen(
    settings, accept, expected
) -> None:
    headers = {"Accept-Language": accept} if accept else {}
    async with console(console_settings(settings)) as client:
        page = await (await client.get("/console/login", headers=headers)).text()
        assert f'<html lang="{expected}">' in page
        assert ("Entrar a la consola" in page) == (expected == "es")


async def test_the_switch_sets_the_language_and_comes_back_to_the_page(settings) -> None:
    async with console(console_settings(settings)) as client:
        token = await page_token(client)
        response = await client.post(
            "/console/language",
            data={"csrf_token": token, "lang": "en", "next": "/console/login?next=/console/x"},
            allow_redirects=False,
        )
        assert response.status == 303
        assert response.headers["Location"] == "/console/login?next=/console/x"
        page = await (await client.get("/console/login", headers={"Accept-Language": "es"})).text()
        assert '<html lang="en">' in page and "Sign in to the console" in page
        # Off-site `next`: the switch goes home instead.
        away = await client.post(
            "/console/language",
            data={"csrf_token": token, "lang": "es", "next": "https://evil.example/"},
            allow_redirects=False,
        )
        assert away.headers["Location"] == "/console/login"
        unknown = await client.post(
            "/console/language", data={"csrf_token": token, "lang": "fr"}, allow_redirects=False
        )
        assert unknown.status == 400 and "Unknown language." not in await unknown.text()
