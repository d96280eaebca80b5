"""The console's languages (Flask-Babel): English and Simplified Chinese.

A page is in the signed-in user's own language (`User.language`, set on /me), else the one
the browser asks for first (Accept-Language), else English. The JSON API under /api/v1 is
always English: scripts parse its answers and error texts, and these must not change with
whoever's browser or profile made the request. Times are always shown in UTC (the database
keeps naive UTC and the pages say so); only their format follows the language."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from babel import Locale
from babel.support import Translations
from flask import Flask, request
from flask_babel import Babel, Domain, format_datetime, format_decimal, get_locale
from flask_login import current_user

DEFAULT = "en"
# The languages a user may pick, as Babel names them, with their own name for the chooser.
LANGUAGES = {"en": "English", "zh_CN": "简体中文"}
# Accept-Language tags (as werkzeug matches them: case and -/_ do not matter) to our names.
ACCEPTED = {"en": "en", "zh-CN": "zh_CN", "zh-Hans": "zh_CN", "zh-SG": "zh_CN", "zh": "zh_CN"}
TRANSLATIONS = Path(__file__).parent / "translations"
# English keeps the sortable form its operators (and their scripts that scrape pages) read;
# other languages take their CLDR medium form (zh_CN: 2026年12月2日 02:33:56).
TIME_PATTERNS = {"en": "yyyy-MM-dd HH:mm:ss"}

babel = Babel()


def N_(text: str) -> str:
    """Marks a text for the catalogue that is translated later, where it is shown (a step-up
    purpose is also written to the audit log, which stays English)."""
    return text


def select_locale() -> str:
    """The language of this request's answer (see the module's docstring)."""
    from controller.web.views import is_api

    if is_api():
        return DEFAULT
    chosen = getattr(current_user, "language", None) if current_user else None
    if chosen in LANGUAGES:
        return chosen
    return ACCEPTED.get(request.accept_languages.best_match(list(ACCEPTED)) or "", DEFAULT)


def language() -> str:
    """This request's language as we name it ("en", "zh_CN"; Babel says zh_Hans_CN)."""
    return named(get_locale() or Locale.parse(DEFAULT))


def named(locale: Locale) -> str:
    return "_".join(part for part in (locale.language, locale.territory) if part)


def html_lang() -> str:
    """The language for <html lang>: a BCP 47 tag (zh-CN)."""
    return language().replace("_", "-")


def catalogues() -> Domain:
    """Our catalogues, loaded once. Flask-Babel looks one up by the locale's full name, and
    Babel parses zh_CN as zh_Hans_CN, for which gettext finds no translations/zh_Hans_CN:
    so each is loaded here by the name we give it and put where Flask-Babel looks first,
    its domain's cache (keyed by the full name)."""
    domain = Domain(translation_directories=[str(TRANSLATIONS)], domain="messages")
    for code in LANGUAGES:
        domain.cache[str(Locale.parse(code)), "messages"] = Translations.load(
            str(TRANSLATIONS), [code], "messages")
    return domain


def when(moment: datetime | None) -> str:
    """A time (naive UTC) in this language's format, in UTC."""
    if not moment:
        return ""
    return format_datetime(moment, TIME_PATTERNS.get(language(), "medium"))


def time_pattern() -> str:
    """The CLDR pattern `when` formats a time with in this language."""
    chosen = TIME_PATTERNS.get(language())
    if chosen:
        return chosen
    locale = get_locale() or Locale.parse(DEFAULT)
    return (str(locale.datetime_formats["medium"]).replace("{1}", locale.date_formats["medium"].pattern)
            .replace("{0}", locale.time_formats["medium"].pattern))


def number(value) -> str:
    """A count with this language's grouping (1,234 in both of ours)."""
    return format_decimal(value or 0)


def install(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "UTC")
    babel.init_app(app, default_locale=DEFAULT, default_timezone="UTC",
                   default_translation_directories=str(TRANSLATIONS),
                   locale_selector=select_locale)
    babel.domain_instance = catalogues()
    app.jinja_env.globals.update(html_lang=html_lang, languages=LANGUAGES)
