"""worker.rotate on a real Samba AD domain controller of the tests' own (tests.samba_dc):
`unicodePwd` replaced over LDAPS (and StartTLS) by the domain's Administrator, the domain's
password policy applied (its refusals in words), proven by fresh binds, secure mode seeing
administrators by RID and by (nested) group."""
from __future__ import annotations

import logging
import time
import uuid

import pytest

from shared.messages import AssetTarget, RotateCommand
from tests.samba_dc import ADMIN, BASE_DN
from worker.rotate import rotate

HOSTILE = 'Pa(ss)*\\,=+<>;"# wörd 密码 {{x}} $(id) 1', " Leading and trailing 1 "


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def password() -> str:
    return f"Pw-{uuid.uuid4().hex[:12]}!"          # meets the domain's complexity rules


def command(dc, username: str, new: str, old: str | None = None, *, login=ADMIN, port=None,
            params=None, **fields) -> RotateCommand:
    asset = AssetTarget(name="dc-1", address=dc.address, port=port or dc.port, platform="ad")
    return RotateCommand(record_id=7, zone="a", asset=asset, login_username=login[0],
                         login_secrets=list(login[1:]), username=username, new_secret=new,
                         old_secret=old,
                         params={"tls_ca": str(dc.ca), "base_dn": BASE_DN} | (params or {}),
                         **{"timeout": 10, "attempt": 1, "not_after": time.time() + 600} | fields)


@pytest.fixture
def user(samba_dc):
    """A fresh domain user: (sAMAccountName, dn, password)."""
    name, secret = fresh("u"), password()
    return name, samba_dc.add_user(name, secret), secret


@pytest.mark.parametrize("naming", ["sAMAccountName", "userPrincipalName"])
def test_rotation_resets_unicodepwd_and_the_old_password_is_refused(samba_dc, user, targets,
                                                                    naming, caplog):
    name, dn, old = user
    bystander, bystander_pw = samba_dc.add_user(fresh("b"), "Bystander-pw-1"), "Bystander-pw-1"
    new = password()
    caplog.set_level(logging.DEBUG)
    username = name if naming == "sAMAccountName" else f"{name}@keyturn.test"

    result = rotate(command(samba_dc, username, new, old), targets, "w1", False)

    assert (result.status, result.error_code, result.error, result.login_index) == \
        ("success", None, None, 0)
    assert samba_dc.logs_in(dn, new) and samba_dc.logs_in(f"{name}@keyturn.test", new)
    assert not samba_dc.logs_in(dn, old)
    assert samba_dc.logs_in(bystander, bystander_pw)
    for secret in (new, old):
        assert secret not in samba_dc.log_text() and secret not in caplog.text


def test_starttls_and_the_naming_context_from_the_rootdse(samba_dc, user, targets):
    """No base_dn: the Administrator binds as Administrator@keyturn.test, the DNS domain read
    from an anonymous rootDSE; port 389 with StartTLS."""
    name, dn, old = user
    new = password()
    result = rotate(command(samba_dc, name, new, old, port=389,
                            params={"transport": "starttls", "base_dn": None}),
                    targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert samba_dc.logs_in(dn, new)


@pytest.mark.parametrize("new, words", [
    ("Sh0rt!", "too short"), ("alllowercaseletters", "complexity")])
def test_a_policy_refusal_fails_with_the_reason_in_words(samba_dc, user, targets, new, words):
    name, dn, old = user
    result = rotate(command(samba_dc, name, new, old), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "policy_refused")
    assert "does not meet the domain's password policy" in result.error
    assert words in result.error and "nothing was changed" in result.error
    assert new not in result.error
    assert samba_dc.logs_in(dn, old)


@pytest.mark.parametrize("new", HOSTILE)
def test_a_password_full_of_metacharacters_rotates(samba_dc, user, targets, new):
    name, dn, old = user
    result = rotate(command(samba_dc, name, new, old), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert samba_dc.logs_in(dn, new) and not samba_dc.logs_in(dn, old)


def test_a_wrong_privileged_password_fails_and_changes_nothing(samba_dc, user, targets):
    name, dn, old = user
    result = rotate(command(samba_dc, name, password(), old, login=(ADMIN[0], "Not-the-pw-1")),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "login_failed")
    assert "Not-the-pw-1" not in result.error
    assert samba_dc.logs_in(dn, old)


def test_no_such_account_fails(samba_dc, targets):
    result = rotate(command(samba_dc, fresh("ghost"), password()), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "no_such_account")


def test_secure_mode_keeps_administrators_by_rid_and_by_nested_group(samba_dc, targets):
    admin = samba_dc.add_user(fresh("da"), "Domain-admin-pw-1", groups=("Domain Admins",))
    nested_group = samba_dc.add_group(fresh("g"), member_of="Enterprise Admins")
    nested = fresh("n")
    samba_dc.add_user(nested, "Nested-admin-pw-1", groups=(nested_group.split(",")[0][3:],))
    for username in ("Administrator", "krbtgt", admin.split(",")[0][3:], nested):
        result = rotate(command(samba_dc, username, password()), targets, "w1", False)
        assert (result.status, result.error_code) == ("failed", "protected"), username
    assert samba_dc.logs_in(admin, "Domain-admin-pw-1")

    off = rotate(command(samba_dc, nested, "Nested-admin-pw-2", "Nested-admin-pw-1",
                         secure_mode=False), targets, "w1", False)
    assert (off.status, off.error) == ("success", None)


def test_a_message_seen_before_whose_new_password_works_is_a_success(samba_dc, user, targets):
    name, dn, old = user
    new = password()
    assert rotate(command(samba_dc, name, new, old), targets, "w1", False).status == "success"
    again = rotate(command(samba_dc, name, new, old), targets, "w1", True)
    assert (again.status, again.error) == ("success", None)


def test_an_account_without_the_reset_right_fails_in_words(samba_dc, user, targets):
    name, dn, old = user
    helpdesk = (fresh("h"), password())
    samba_dc.add_user(*helpdesk)
    result = rotate(command(samba_dc, name, password(), old, login=helpdesk), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "privilege_failed"), result.error
    assert "needs the Reset Password right" in result.error
    assert samba_dc.logs_in(dn, old)


def test_a_help_desk_account_with_the_reset_right_rotates(samba_dc, user, targets):
    """The privileged account need not be an administrator: the Reset Password right on the
    account is enough (given the way a domain delegates it)."""
    name, dn, old = user
    helpdesk = (fresh("h"), password())
    samba_dc.add_user(*helpdesk)
    samba_dc.grant_reset_password(helpdesk[0], dn)
    new = password()
    result = rotate(command(samba_dc, name, new, old, login=helpdesk), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert samba_dc.logs_in(dn, new) and not samba_dc.logs_in(dn, old)
