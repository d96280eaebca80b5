"""The console's Chinese catalogue is complete and ships as compiled: every message the
sources hold (babel's extraction, as `python -m controller.web.catalogue` runs it) has a
non-empty, non-fuzzy zh_CN translation that keeps its placeholders, and the committed .mo is
exactly what compiling the .po gives."""
from __future__ import annotations

import re

import pytest
from babel.messages.catalog import Catalog

from controller.web import catalogue
from controller.web.i18n import LANGUAGES

# %(name)s, %(minutes)02d, %% — what Python's %-formatting reads in a msgid
PLACEHOLDER = re.compile(r"%(?:\([A-Za-z_][A-Za-z0-9_]*\))?[-#0 +]*\d*(?:\.\d+)?[sdifr%]")
TRANSLATED = sorted(set(LANGUAGES) - {"en"})


@pytest.fixture(scope="module")
def template() -> Catalog:
    return catalogue.extract()


def ids(message) -> tuple[str, ...]:
    return (message.id,) if isinstance(message.id, str) else tuple(message.id)


def strings(message) -> tuple[str, ...]:
    return (message.string,) if isinstance(message.string, str) else tuple(message.string)


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


def test_extraction_finds_the_console(template):
    """The extraction reads templates, Python and the registry (else the checks below pass
    on an empty list)."""
    found = {m.id for m in template if isinstance(m.id, str)}
    assert {"Overview", "Sign in", "profile saved", "view its old and new secret",
            "success"} <= found
    assert any(location.startswith("controller/web/templates/")
               for m in template for location, _ in m.locations)
    assert len(template) > 400


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated(template, language):
    catalog = catalogue.read(language)
    missing = [m.id for m in template if m.id and (m.id not in catalog
                                                   or not all(strings(catalog[m.id])))]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not missing, f"{language} lacks {len(missing)} translations, e.g. {missing[:5]}"
    assert not fuzzy, f"{language} has fuzzy entries: {fuzzy[:5]}"
    assert not catalog.fuzzy, "a fuzzy header hides the catalogue's plural rule"


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_the_placeholders(language):
    catalog = catalogue.read(language)
    checked = 0
    for message in catalog:
        if not message.id:
            continue
        wanted = placeholders(ids(message)[-1])
        for text in strings(message):
            assert placeholders(text) == wanted, (message.id, text)
            checked += 1
    assert checked > 400


def test_a_lost_placeholder_is_caught():
    """The comparison the test above relies on sees a dropped or renamed placeholder."""
    assert placeholders("用户 %(name)s 已添加") == placeholders("user %(name)s added")
    assert placeholders("用户已添加") != placeholders("user %(name)s added")
    assert placeholders("%(minutes)s分%(seconds)02d秒") == placeholders("%(minutes)sm %(seconds)02ds")
    assert placeholders("2%%") != placeholders("2%")


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_committed_mo_is_the_compiled_po(language):
    mo = catalogue.po_path(language).with_suffix(".mo")
    assert mo.read_bytes() == catalogue.compiled(catalogue.read(language)), (
        "messages.mo is stale: run python -m controller.web.catalogue")


def test_the_catalogue_ships_with_the_package():
    """pyproject's package data takes the compiled catalogues (and the templates)."""
    import tomllib

    project = tomllib.loads((catalogue.ROOT / "pyproject.toml").read_text())
    data = project["tool"]["setuptools"]["package-data"]["controller.web"]
    assert "translations/*/LC_MESSAGES/*.mo" in data and "templates/**/*.html" in data
