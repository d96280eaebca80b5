"""The console in a real browser (Debian's chromium under Playwright) against real sshd hosts,
with the daemon, an in-process worker and the web server of `keyturn serve` running in this
process: enrol TOTP, register the zone, assets and accounts, create a random-strategy plan,
run it and watch it finish in the page, reveal a new secret after a TOTP prompt, and check
that an auditor cannot reveal.
Screenshots of the overview and the plan form land in artifacts/ (git-ignored)."""
from __future__ import annotations

import html
import re

import pytest

from controller.embedded import services
from controller.models import Account, Asset, Record
from controller.web import users
from tests.browser.conftest import ARTIFACTS, sign_in
from tests.web_support import PASSWORD, Person, make_person, next_code

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

OLD = {"alice": "alice-old-pw-1", "bob": "bob-old-pw-1"}


@pytest.fixture
def hosts(ssh_farm):
    """Two sshd hosts with alice and bob, and a root password each."""
    started = ssh_farm.start_hosts(2, users=OLD)
    for index, host in enumerate(started):
        host.set_password("root", f"root-pw-{index}")
    yield {f"box-{index}": host for index, host in enumerate(started)}
    for host in started:
        host.close()


@pytest.fixture
def console(ctl, hosts):
    """What `keyturn serve` runs (daemon, embedded worker, web server on a free port)."""
    running = services(ctl, "127.0.0.1", 0)
    for service in running:
        service.start()
    yield running[-1].url
    for service in reversed(running):
        service.stop()


def add_inventory(page, base: str, hosts: dict) -> None:
    """Zone `local` (its key made here, so the in-process worker serves it), the two assets
    and their accounts, all through the console's forms."""
    page.click("text=Zones & workers")
    page.fill("#z-name", "local")
    page.click("button:has-text('Add zone')")
    page.wait_for_selector("text=zone local saved")
    for index, (name, host) in enumerate(hosts.items()):
        page.goto(f"{base}/assets")
        page.fill("#a-name", name)
        page.fill("#a-address", host.address)
        page.select_option("#a-zone", "local")
        page.fill("#a-node", "/lab")
        page.click("button:has-text('Add asset')")
        page.wait_for_selector(f"text=asset {name} added")
        for username, secret, privileged in [("root", f"root-pw-{index}", True)] + [
                (user, password, False) for user, password in OLD.items()]:
            page.fill("#c-user", username)
            page.fill("#c-secret", secret)
            page.set_checked("#c-privileged", privileged)
            page.click("button:has-text('Save account')")
            page.wait_for_selector(f"text=account {username}: secret set")


def test_operator_rotates_and_reveals_in_the_browser(ctl, hosts, console, browser, monkeypatch):
    ARTIFACTS.mkdir(exist_ok=True)
    users.create_user("ada", PASSWORD, "admin")
    auditor = make_person(ctl, "otto", "auditor")
    page = browser.new_page(viewport={"width": 1360, "height": 900})

    # first sign-in: password, then enrol the authenticator from the otpauth text shown
    page.goto(f"{console}/overview")
    page.fill("#username", "ada")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console}/login/enrol")
    assert page.locator(".qr svg").count() == 1
    uri = html.unescape(page.inner_text("#otpauth"))
    admin = Person("ada", PASSWORD, re.search(r"secret=([A-Z2-7]+)", uri).group(1), "admin")
    page.fill("#code", next_code(admin))
    page.click("button[type=submit]")
    page.wait_for_url(f"{console}/overview")
    add_inventory(page, console, hosts)
    assert Account.select().where(Account.privileged).count() == 2

    # "test connection": the zone's worker logs in to box-0 with its privileged account
    page.goto(f"{console}/assets/{Asset.get(Asset.name == 'box-0').id}")
    page.click("button:has-text('Test connection')")
    page.wait_for_url(re.compile(r".*/executions/\d+$"))
    page.wait_for_selector('#live [data-field="status"]:not(.running)', timeout=120_000)
    assert page.inner_text('#live [data-field="status"]') == "success", page.inner_text("#log")

    # a random-strategy plan for alice on both hosts
    page.click("text=Plans")
    page.click("text=New plan")
    page.fill("#f-name", "browser-plan")
    page.fill("#f-usernames", "alice")
    page.fill("input[data-filter=f-assets]", "box")
    page.select_option("#f-assets", ["box-0", "box-1"])
    page.check("input[name=strategy][value=random]")
    page.fill("#f-length", "20")
    page.uncheck("input[name=symbols]")
    assert page.is_hidden("#f-secret-password")          # the specific secret box is hidden
    page.screenshot(path=str(ARTIFACTS / "plan-form.png"), full_page=True)
    page.click("text=Save plan")
    page.wait_for_url(re.compile(r".*/plans/\d+$"))

    # run it and watch the execution finish without reloading the page
    page.click("text=Execute now")
    page.wait_for_url(re.compile(r".*/executions/\d+$"))
    page.evaluate("window.__stayed = true")
    page.wait_for_selector('#live [data-field="status"]:not(.running)', timeout=120_000)
    assert page.inner_text('#live [data-field="status"]') == "success", page.inner_text("#log")
    assert page.evaluate("window.__stayed") is True
    assert page.inner_text('[data-field="succeeded"]') == "2"
    assert "finished: success" in page.inner_text("#log")
    page.wait_for_selector("#report .badge.success")
    new = {a.asset.name: ctl.vault.decrypt(a.secret_current) for a in
           Account.select(Account, Asset).join(Asset).where(Account.username == "alice")}
    for name, host in hosts.items():
        assert new[name] != OLD["alice"] and host.password_works("alice", new[name])
        assert not host.password_works("alice", OLD["alice"])
        assert new[name] not in page.content()
    assert len(new[name]) == 20

    # open a record; `view` asks for a TOTP code (step-up window closed), then shows both secrets
    monkeypatch.setattr(ctl.settings, "step_up_window", 0)
    record = Record.select().join(Account).join(Asset).where(Asset.name == "box-1").get()
    page.click(f"#report a[href='/records/{record.id}']")
    page.wait_for_url(f"{console}/records/{record.id}")
    page.click("button:has-text('view')")
    page.wait_for_selector("#code")
    page.fill("#code", next_code(admin))
    page.click("button:has-text('Confirm')")
    assert page.inner_text("#new-secret") == new["box-1"]
    assert page.inner_text("#old-secret") == OLD["alice"]

    # delete bob on box-1 (the page asks first); the records stay
    page.goto(f"{console}/assets/{Asset.get(Asset.name == 'box-1').id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("tr:has(td:text-is('bob')) button:has-text('delete')")
    page.wait_for_selector("text=account bob@box-1 deleted")
    assert not Account.select().join(Asset).where((Asset.name == "box-1")
                                                  & (Account.username == "bob")).exists()

    page.goto(f"{console}/overview")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # an auditor sees the record but no `view`, and the server refuses a forged reveal
    other = browser.new_page()
    sign_in(other, console, auditor)
    other.goto(f"{console}/records/{record.id}")
    assert other.locator("button:has-text('view')").count() == 0
    status = other.evaluate("""async (id) => {
        const token = document.querySelector('meta[name=csrf-token]').content;
        const answer = await fetch(`/records/${id}/reveal`, {method: 'POST',
            headers: {'X-CSRF-Token': token}});
        return answer.status; }""", record.id)
    assert status == 403
    assert new["box-1"] not in other.content()
