"""The console's message catalogue, kept by one command (needs only Babel, which Flask-Babel
brings):

    python -m controller.web.catalogue        # extract, merge into each .po, compile the .mo

It extracts every message of the web package (babel.cfg: Python `gettext`/`ngettext`/`N_`,
templates `_`/`ngettext`, the `say` hooks of the rollout's phrases, the message templates of
the refusals the core modules raise, `ERRORS`) plus the platform registry's texts the pages show
(`terms.registry_texts`), merges them into each language's messages.po (new ones empty,
gone ones dropped, fuzzy matching off: a guess is never shipped) and compiles messages.mo
next to it. The .mo files are committed and shipped as package data, so an install needs
no build step; tests/test_i18n_catalogue.py checks the .po is complete and the .mo is what
compiling it gives."""
from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[2]          # the checkout: babel.cfg's paths start here
TRANSLATIONS = Path(__file__).parent / "translations"
# N_: marked, translated where shown; say/say_counted: the hooks of controller.rollout/gates;
# the error classes and `Said` of `shared.errors`: their message template (a field error's is
# its second argument, after the field's name)
ERRORS = {"KeyturnError": None, "Invalid": None, "NeedsConfirmation": None, "Said": None,
          "IntegrationError": None, "Refused": None,
          "BadName": (2,), "RuleError": (2,), "FieldError": (2,)}
KEYWORDS = DEFAULT_KEYWORDS | {"N_": None, "say": None, "say_counted": (1, 2)} | ERRORS
PROJECT = "keyturn"


def extract() -> Catalog:
    """Every message the console shows, as a template catalogue."""
    with open(ROOT / "babel.cfg") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    template = Catalog(project=PROJECT, charset="utf-8")
    found = extract_from_dir(str(ROOT), method_map, options_map, keywords=KEYWORDS,
                             strip_comment_tags=True)
    for filename, lineno, message, comments, context in found:
        template.add(message, None, [(filename, lineno)], auto_comments=comments,
                     context=context)
    from controller.web.terms import registry_texts

    for text in sorted(registry_texts()):
        template.add(text, None, [("shared/platforms.py", 0)])
    return template


def languages() -> list[str]:
    return sorted(p.name for p in TRANSLATIONS.iterdir() if (p / "LC_MESSAGES").is_dir())


def po_path(language: str) -> Path:
    return TRANSLATIONS / language / "LC_MESSAGES" / "messages.po"


def read(language: str) -> Catalog:
    with open(po_path(language), "rb") as po:
        return read_po(po, locale=language)


def compiled(catalog: Catalog) -> bytes:
    """The .mo bytes of `catalog` (fuzzy entries left out, as gettext does)."""
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def update() -> None:
    template = extract()
    for language in languages():
        catalog = read(language)
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        catalog.fuzzy = False           # the header: a fuzzy one would hide the plural rule
        with open(po_path(language), "wb") as po:
            write_po(po, catalog, width=100, sort_output=False, include_previous=False)
        po_path(language).with_suffix(".mo").write_bytes(compiled(read(language)))
        missing = [m.id for m in catalog if m.id and not m.string]
        print(f"{language}: {len(catalog)} messages, {len(missing)} untranslated",
              file=sys.stderr)


if __name__ == "__main__":
    update()
