"""The console's layout measured in a real browser (Debian's chromium under Playwright) at a
desktop width (1440 px) and a phone's (390 px): element boxes, not screenshots, decide. Nothing
may need sideways scrolling to be reached (the records table's buttons included), the filter
form stays a strip above the table, a multi-select takes plain clicks and shows its choices
strongly, the plan form's node picker is a tree, and on a phone the navigation moves above
the page. Screenshots land in artifacts/."""
from __future__ import annotations


import pytest

from controller.models import Record
from controller.web.server import WebServer
from tests.browser.conftest import ARTIFACTS, sign_in
from tests.web_support import finish, save

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

DESKTOP, PHONE = {"width": 1440, "height": 900}, {"width": 390, "height": 844}
LONG_REASON = ("web-2: the host refused the privileged login (Permission denied, please try "
               "again; the account may be locked or its password changed out of band)")


@pytest.fixture
def console(ctl, app):
    server = WebServer(ctl, "127.0.0.1", 0)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def page_of(console, admin, browser):
    """A function giving a signed-in page of the given viewport size."""
    def open_page(viewport: dict):
        page = browser.new_page(viewport=viewport)
        sign_in(page, console, admin)
        return page

    yield open_page


@pytest.fixture
def failures(ctl, fleet):
    """Failed records with a long reason and a long worker id, as a busy fleet has them."""
    execution = start(ctl)
    finish(execution, {"bob@web-2": "failed", "alice@web-2": "unverified"})
    Record.update(error=LONG_REASON, worker_id="worker-dmz-7f3c9e21.prod.example.org:123456"
                  ).where(Record.status != "success").execute()
    return execution


def start(ctl):
    from controller.planning import start_execution

    return start_execution(ctl, save(ctl), started_by="ada")


def box(page, selector: str) -> dict:
    return page.eval_on_selector(selector, "e => e.getBoundingClientRect().toJSON()")


def sideways(page) -> int:
    """How far the page or any scrolling card reaches past what is shown, in pixels."""
    return page.evaluate("""() => Math.max(
        document.documentElement.scrollWidth - document.documentElement.clientWidth,
        ...[...document.querySelectorAll('.card')].map(c => c.scrollWidth - c.clientWidth))""")


def test_desktop_pages_fit_and_multi_select_takes_plain_clicks(console, page_of, failures):
    ARTIFACTS.mkdir(exist_ok=True)
    page = page_of(DESKTOP)
    page.goto(f"{console}/records")
    page.screenshot(path=str(ARTIFACTS / "records-1440.png"), full_page=True)
    assert sideways(page) == 0
    for button in page.query_selector_all("td.actions button"):
        right = button.bounding_box()["x"] + button.bounding_box()["width"]
        assert right <= DESKTOP["width"] - 20, right
    assert box(page, "form.filters")["height"] <= 90          # one strip, not half the screen
    assert box(page, "table")["top"] < 250
    page.goto(f"{console}/executions/{failures.id}")
    assert sideways(page) == 0

    page.goto(f"{console}/plans/new")
    page.click("#f-assets option[value='web-1']")
    page.click("#f-assets option[value='web-2']")            # no Ctrl: both chosen
    assert page.eval_on_selector("#f-assets", "s => [...s.selectedOptions].map(o => o.value)") \
        == ["web-1", "web-2"]
    page.click("#f-assets option[value='web-1']")            # a second click drops it
    assert page.eval_on_selector("#f-assets", "s => [...s.selectedOptions].map(o => o.value)") \
        == ["web-2"]
    page.click("#f-name")                                      # the select loses focus
    chosen = page.eval_on_selector("#f-assets option[value='web-2']",
                                   "o => getComputedStyle(o).backgroundColor")
    assert chosen == "rgb(36, 86, 199)", chosen               # the brand colour, not pale grey
    # the node picker is a tree: each node a box, a child indented under its parent
    page.check(".node-picker input[value='/prod/web']")
    assert page.eval_on_selector_all(".node-picker input:checked", "i => i.map(e => e.value)") \
        == ["/prod/web"]
    parent, child = (box(page, f".node-picker input[value='{path}']")
                     for path in ("/prod", "/prod/web"))
    assert child["left"] > parent["left"] and child["top"] > parent["top"]


def test_phone_pages_fit_with_the_navigation_above(console, page_of, failures):
    page = page_of(PHONE)
    for path in ("/overview", "/records", f"/executions/{failures.id}", "/plans/new", "/assets",
                 "/zones"):
        page.goto(console + path)
        page.screenshot(path=str(ARTIFACTS / f"phone{path.replace('/', '-')}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
        main, side = box(page, "main"), box(page, ".side")
        assert main["width"] >= PHONE["width"] - 2 and side["bottom"] <= main["top"] + 1, path
        assert side["height"] <= 120, path
