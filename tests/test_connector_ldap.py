"""worker.rotate on a real slapd of the tests' own (tests.slapd_server): the Password Modify
extended operation by the root DN or a delegated password admin, over LDAPS or StartTLS, with
the account named by its DN, by `user_dn` or found by `user_filter`; checked on the server
itself (fresh binds, the stored hash, slapd's own log)."""
from __future__ import annotations

import logging
import time
import uuid

import pytest
from pydantic import ValidationError

from shared.messages import AssetTarget, RotateCommand
from tests.certs import make_certificates
from tests.slapd_server import PEOPLE, PWADMIN, ROOT, SUFFIX
from worker.rotate import rotate

HOSTILE = ['pa(ss)*\\,=+<>;"# wörd 密码 {{x}} $(id)', " leading and trailing ", "#hash\\5c00"]


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def command(server, username: str, new: str, old: str | None = None, *, login=ROOT,
            port=None, params=None, **fields) -> RotateCommand:
    asset = AssetTarget(name="dir-1", address=server.address, port=port or server.port,
                        platform="ldap")
    return RotateCommand(record_id=7, zone="a", asset=asset, login_username=login[0],
                         login_secrets=list(login[1:]), username=username, new_secret=new,
                         old_secret=old,
                         params={"tls_ca": str(server.ca), "base_dn": SUFFIX} | (params or {}),
                         **{"timeout": 5, "attempt": 1, "not_after": time.time() + 600} | fields)


@pytest.fixture
def person(slapd):
    """A fresh person entry: (uid, dn, password)."""
    uid, password = fresh("u"), fresh("old")
    return uid, slapd.add_user(uid, password), password


@pytest.mark.parametrize("naming", ["search", "dn", "user_dn"])
def test_rotation_sets_a_hash_by_password_modify_and_the_old_password_is_refused(
        slapd, person, targets, naming, caplog):
    uid, dn, old = person
    bystander = slapd.add_user(fresh("b"), "bystander-pw")
    new = fresh("new")
    username, params = {"search": (uid, {}), "dn": (dn, {}),
                        "user_dn": (uid, {"user_dn": f"uid={{username}},{PEOPLE}",
                                          "base_dn": None})}[naming]
    caplog.set_level(logging.DEBUG)

    result = rotate(command(slapd, username, new, old, params=params), targets, "w1", False)

    assert (result.status, result.error_code, result.error, result.login_index) == \
        ("success", None, None, 0)
    assert slapd.logs_in(dn, new) and not slapd.logs_in(dn, old)
    assert slapd.password_of(dn).startswith("{SSHA}")           # the server hashed it
    assert slapd.logs_in(bystander, "bystander-pw")
    assert f'PASSMOD id="{dn}" new' in slapd.log_text()
    for secret in (new, old):
        assert secret not in slapd.log_text() and secret not in caplog.text


def test_starttls_on_the_plain_port_by_a_delegated_password_admin(slapd, person, targets):
    """slapd refuses a simple bind before TLS here, so a success proves StartTLS ran."""
    uid, dn, old = person
    new = fresh("new")
    result = rotate(command(slapd, uid, new, old, login=PWADMIN, port=slapd.plain_port,
                            params={"transport": "starttls"}), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert slapd.logs_in(dn, new) and not slapd.logs_in(dn, old)


@pytest.mark.parametrize("new", HOSTILE)
def test_a_password_full_of_ldap_and_shell_metacharacters_rotates(slapd, person, targets, new):
    uid, dn, old = person
    result = rotate(command(slapd, uid, new, old), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert slapd.logs_in(dn, new) and not slapd.logs_in(dn, old)
    assert new not in slapd.log_text()


def test_an_escaped_dn_is_found_and_rotated(slapd, targets):
    """A uid holding DN metacharacters lives at an escaped DN; named by that DN it rotates."""
    dn = slapd.add_user("o'brien,+x", "obrien-old")
    assert dn == f"uid=o'brien\\,\\+x,{PEOPLE}"
    result = rotate(command(slapd, dn, "obrien-new", "obrien-old"), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert slapd.logs_in(dn, "obrien-new")


def test_a_wrong_privileged_password_fails_and_changes_nothing(slapd, person, targets):
    uid, dn, old = person
    result = rotate(command(slapd, uid, fresh("new"), old, login=(ROOT[0], "not-the-root-pw")),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "login_failed")
    assert "cannot log in as cn=admin" in result.error and "not-the-root-pw" not in result.error
    assert slapd.logs_in(dn, old)


def test_no_such_account_fails_before_anything_is_sent(slapd, targets):
    result = rotate(command(slapd, fresh("ghost"), fresh("new")), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "no_such_account")
    assert "no entry under dc=keyturn,dc=test matches ghost-" in result.error


def test_secure_mode_keeps_the_administrator_and_the_bind_dn(slapd, targets):
    admin = rotate(command(slapd, ROOT[0], fresh("new"), login=PWADMIN), targets, "w1", False)
    itself = rotate(command(slapd, PWADMIN[0], fresh("new"), login=PWADMIN), targets, "w1", False)
    assert (admin.status, admin.error_code) == ("failed", "protected")
    assert (itself.status, itself.error_code) == ("failed", "protected")
    assert slapd.logs_in(*PWADMIN)


def test_a_certificate_of_another_ca_is_refused_before_any_password_is_sent(slapd, person,
                                                                           targets, tmp_path):
    uid, dn, old = person
    other_ca = make_certificates(tmp_path).ca
    result = rotate(command(slapd, uid, fresh("new"), old, params={"tls_ca": str(other_ca)}),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "unreachable")
    assert "certificate verify failed" in result.error.lower()
    assert slapd.logs_in(dn, old)


def test_a_message_seen_before_whose_new_password_works_is_a_success(slapd, person, targets):
    uid, dn, old = person
    new = fresh("new")
    assert rotate(command(slapd, uid, new, old), targets, "w1", False).status == "success"
    again = rotate(command(slapd, uid, new, old), targets, "w1", True)
    assert (again.status, again.error) == ("success", None)
    assert slapd.logs_in(dn, new)


def test_verify_finds_the_working_candidate(slapd, person, targets):
    uid, dn, old = person
    verify = command(slapd, uid, None, action="verify", candidates=[fresh("no"), old])
    result = rotate(verify, targets, "w1", False)
    assert (result.status, result.working_index) == ("success", 1)


def test_a_forged_command_with_filter_metacharacters_is_refused_when_parsed(slapd):
    """The bus schema applies the registry's rules: no name or filter can widen a search."""
    with pytest.raises(ValidationError, match="username: not a DN, or a name"):
        command(slapd, "*)(uid=*", "x")
    with pytest.raises(ValidationError, match="not an LDAP filter with one {username}"):
        command(slapd, "alice", "x", params={"user_filter": "(uid=*)"})
