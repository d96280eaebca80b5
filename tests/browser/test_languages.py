"""Every console page in English and in Simplified Chinese, at a desktop's size (1440×900)
and a phone's (390×844), in a real browser (Debian's chromium under Playwright, the
browser's language set as a person's would be): nothing needs sideways scrolling in either
language, the Chinese pages are Chinese, and their text is drawn in a CJK face (fonts-noto-cjk,
which .ci/prepare installs), not as boxes. Screenshots land in artifacts/languages/ to look at."""
from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS, sign_in
from tests.browser.test_layout import DESKTOP, PHONE, console, failures  # noqa: F401
from tests.visible_text import console_pages

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

LANGUAGES = {"en": "en-US", "zh": "zh-CN"}
SIZES = {"desktop": DESKTOP, "phone": PHONE}
SHOTS = ARTIFACTS / "languages"


def signed_in(browser, base: str, person, viewport: dict, locale: str):
    """A page whose browser speaks `locale` (its Accept-Language), signed in as `person`."""
    page = browser.new_page(viewport=viewport, locale=locale)
    sign_in(page, base, person)
    return page


# The page and every card shown (a collapsed <details>' form is not: it opens in its row).
OVERFLOWING = """() => [document.documentElement, ...document.querySelectorAll('.card')]
    .filter(e => (e === document.documentElement || e.checkVisibility())
                 && e.scrollWidth > e.clientWidth)
    .map(e => `${e.tagName.toLowerCase()}.${[...e.classList].join('.')}`
              + `${e.querySelector('h2') ? ' ' + e.querySelector('h2').textContent.trim() : ''}`
              + ` +${e.scrollWidth - e.clientWidth}px`)"""


def overflowing(page) -> list[str]:
    """What reaches past its box sideways: the element and by how much."""
    return page.evaluate(OVERFLOWING)


def fits(page, viewport: dict) -> bool:
    """Nothing reaches past the viewport's width; on a desktop no card shown scrolls either
    (on a phone a wide table scrolls inside its card, as in test_layout)."""
    if page.evaluate("document.documentElement.scrollWidth") > viewport["width"]:
        return False
    return viewport["width"] < DESKTOP["width"] or not overflowing(page)


def cjk_face(page) -> bool:
    """Whether the page's Chinese is drawn in a face that has Han glyphs: the same text
    measured in the page's font and in a font without them (a missing glyph falls back to
    the same box in both)."""
    return page.evaluate("""() => {
        const probe = (family) => {
            const s = document.createElement('span');
            s.textContent = '改密计划执行记录账号资产节点网域';
            s.style.cssText = `font-family: ${family}; font-size: 40px; position: absolute;`;
            document.body.append(s);
            const width = s.getBoundingClientRect().width;
            s.remove();
            return width;
        };
        return probe('"Noto Sans CJK SC"') > 0
            && document.fonts.check('40px "Noto Sans CJK SC"', '改');
    }""")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_fits_in_both_languages(app, console, browser, admin, auditor, failures,
                                           language, size):
    SHOTS.mkdir(parents=True, exist_ok=True)
    viewport = SIZES[size]
    page = signed_in(browser, console, admin, viewport, LANGUAGES[language])
    paths = console_pages(app, failures)
    assert len(paths) >= 20
    crowded = []
    for path in paths:
        answer = page.goto(console + path)
        assert answer.status == 200, path
        name = path.strip("/").replace("/", "-") or "home"
        page.screenshot(path=str(SHOTS / f"{language}-{viewport['width']}-{name}.png"),
                        full_page=True)
        if not fits(page, viewport):
            crowded.append((path, overflowing(page)))
        lang = page.get_attribute("html", "lang")
        assert lang == ("zh-CN" if language == "zh" else "en"), (path, lang)
    assert not crowded, f"{language} at {viewport['width']} px scrolls sideways on {crowded}"
    if language == "zh":
        page.goto(console + "/overview")
        assert "总览" in page.inner_text("h1") and "退出登录" in page.inner_text(".who")
        assert cjk_face(page), "no CJK font: install fonts-noto-cjk"


def test_the_sign_in_page_follows_the_browser(console, browser):
    for locale, button in (("zh-CN", "登录"), ("en-US", "Sign in")):
        page = browser.new_page(viewport=PHONE, locale=locale)
        page.goto(f"{console}/login")
        assert page.inner_text("button[type=submit]") == button
        assert fits(page, PHONE)
        page.screenshot(path=str(SHOTS / f"login-{locale}.png"), full_page=True)
        page.close()
