"""The browser the console's browser tests drive: Debian's chromium under Playwright, one per
test, closed after it; screenshots go to artifacts/ at the checkout's top."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.web_support import next_code

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield launched
        launched.close()


def sign_in(page, base: str, person) -> None:
    """Sign `person` in through the console's own forms (password, then a TOTP code)."""
    page.goto(f"{base}/login")
    page.fill("#username", person.username)
    page.fill("#password", person.password)
    page.click("button[type=submit]")
    page.fill("#code", next_code(person))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/overview")
