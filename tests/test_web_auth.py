"""Sign-in with password and TOTP, enrolment, throttling, sessions, CSRF and API tokens."""
from __future__ import annotations

import html
import re

import pyotp
import pytest

from controller.models import AuditEvent, User
from controller.web import users
from tests.web_support import PASSWORD, Console, make_person, next_code



def test_pages_need_a_session(app):
    client = Console(app)
    answer = client.get("/plans")
    assert answer.status_code == 302 and answer.location.startswith("/login?next=/plans")
    assert client.get("/api/v1/plans").status_code == 401
    assert client.get("/login").status_code == 200


@pytest.mark.full_password_cost
def test_first_sign_in_enrols_an_authenticator(ctl, app):
    users.create_user("root-admin", PASSWORD, "admin")
    client = Console(app)
    answer = client.post("/login", {"username": "root-admin", "password": PASSWORD})
    assert answer.location == "/login/enrol"
    page = client.get("/login/enrol").text
    assert "<svg" in page                                   # the QR code, drawn inline
    uri = html.unescape(re.search(r'id="otpauth">([^<]+)<', page).group(1))
    assert uri.startswith("otpauth://totp/keyturn:root-admin?")
    seed = re.search(r"secret=([A-Z2-7]+)", uri).group(1)
    assert client.post("/login/enrol", {"code": "000000"}).status_code == 401
    answer = client.post("/login/enrol", {"code": pyotp.TOTP(seed).now()})
    assert answer.status_code == 302 and answer.location == "/overview"
    assert User.get(User.username == "root-admin").totp_enrolled
    assert client.get("/overview").status_code == 200
    stored = User.get(User.username == "root-admin")
    assert seed.encode() not in bytes(stored.totp_secret)   # the seed is kept encrypted
    assert stored.password_hash.startswith("scrypt:32768:8:1$")    # werkzeug's full cost


def test_sign_in_asks_for_the_code_and_refuses_a_replay(app, admin):
    client = Console(app)
    client.post("/login", {"username": admin.username, "password": PASSWORD})
    code = next_code(admin)
    assert client.post("/login/code", {"code": code}).location == "/overview"
    other = Console(app)
    other.post("/login", {"username": admin.username, "password": PASSWORD})
    answer = other.post("/login/code", {"code": code})
    assert answer.status_code == 401 and "already used" in answer.text


def test_wrong_password_and_unknown_user_look_the_same(app, admin):
    client = Console(app)
    wrong = client.post("/login", {"username": admin.username, "password": "nope-nope-nope"})
    unknown = client.post("/login", {"username": "nobody", "password": "nope-nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong user name or password" in wrong.text and "wrong user name or password" in unknown.text
    assert client.get("/login/code").location == "/login"      # no half-signed-in state
    assert AuditEvent.select().where(AuditEvent.action == "auth.failed").count() == 2


def test_session_cookie_is_secure_httponly_samesite(app, admin):
    client = Console(app)
    client.post("/login", {"username": admin.username, "password": PASSWORD})
    answer = client.post("/login/code", {"code": next_code(admin)})
    cookie = answer.headers["Set-Cookie"]
    assert "keyturn_session=" in cookie
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/overview")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_sign_out_ends_the_session_even_for_a_copied_cookie(app, admin):
    client = Console(app, admin)
    stolen = client.client.get_cookie("keyturn_session").value
    assert client.post("/logout").location == "/login"
    assert client.get("/overview").status_code == 302
    thief = app.test_client()
    thief.set_cookie("keyturn_session", stolen)
    assert thief.get("/overview").status_code == 302
    assert thief.get("/api/v1/overview").status_code == 401
    assert Console(app, admin).get("/overview").status_code == 200   # a new sign-in works


def test_sign_out_needs_post_with_csrf(as_admin):
    assert as_admin.get("/logout").status_code == 405
    assert as_admin.client.post("/logout").status_code == 400
    assert as_admin.get("/overview").status_code == 200


def test_every_change_needs_the_csrf_token(ctl, as_admin):
    answer = as_admin.client.post("/nodes/new", data={"path": "/x"})
    assert answer.status_code == 400 and "reload" in answer.text
    answer = as_admin.client.post("/nodes/new", data={"path": "/x", "csrf_token": "forged"})
    assert answer.status_code == 400
    answer = as_admin.client.post("/api/v1/nodes/new", json={"path": "/x"})   # cookie, no token
    assert answer.status_code == 400
    answer = as_admin.client.post("/api/v1/nodes/new", json={"path": "/x"},
                                  headers={"X-CSRF-Token": as_admin.csrf()})
    assert answer.status_code == 201
    assert as_admin.post("/nodes/new", {"path": "/y"}).status_code == 302


def test_deactivated_users_lose_their_session_and_token(app, admin, auditor):
    client = Console(app, auditor)
    token = users.new_api_token(User.get(User.username == auditor.username))
    bearer = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get("/api/v1/plans", headers=bearer).status_code == 200
    boss = Console(app, admin)
    auditor_id = User.get(User.username == auditor.username).id
    assert boss.post(f"/users/{auditor_id}/active").status_code == 302
    assert client.get("/overview").status_code == 302
    assert app.test_client().get("/api/v1/plans", headers=bearer).status_code == 401
    answer = Console(app).post("/login", {"username": auditor.username, "password": PASSWORD})
    assert answer.status_code == 401


def test_api_token_authenticates_without_cookies_or_csrf(ctl, app, admin):
    client = Console(app, admin)
    page = client.post("/me/token")
    token = re.search(r'id="token">([^<]+)<', page.text).group(1)
    assert page.headers["Cache-Control"] == "no-store"
    api = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/overview", headers=bearer).status_code == 200
    created = api.post("/api/v1/nodes/new", json={"path": "/scripted"}, headers=bearer)
    assert created.status_code == 201 and created.json["node"] == "/scripted"
    assert "Set-Cookie" not in created.headers
    assert api.get("/api/v1/overview", headers={"Authorization": "Bearer kt_wrong"}).status_code == 401
    assert api.get("/api/v1/overview", headers={"Authorization": "Basic eDp5"}).status_code == 401
    stored = User.get(User.username == admin.username).api_token_hash
    assert token not in stored
    client.post("/me/token/revoke")
    assert api.get("/api/v1/overview", headers=bearer).status_code == 401


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example", "/\t/evil.example", "/\n/x", "/\r\n/x",
    "/\\evil.example", "\\\\evil.example", "/ /evil.example", "http:/evil.example",
    "javascript:alert(1)", "evil.example", "/\x7f/x", "/\u2028/x"])
def test_login_follows_next_only_within_the_site(app, admin, target):
    client = Console(app)
    client.post("/login", {"username": admin.username, "password": PASSWORD, "next": target})
    assert client.post("/login/code", {"code": next_code(admin)}).location == "/overview"


def test_login_follows_a_path_of_the_site(app, admin):
    client = Console(app)
    client.post("/login", {"username": admin.username, "password": PASSWORD,
                           "next": "/records?status=failed"})
    answer = client.post("/login/code", {"code": next_code(admin)})
    assert answer.location == "/records?status=failed"


def test_totp_codes_are_single_use_per_step(ctl, admin):
    row = User.get(User.username == admin.username)
    totp = pyotp.TOTP(admin.seed)
    now = 1_800_000_000.0
    assert users.check_totp(ctl, row, totp.at(now), now=now)
    assert not users.check_totp(ctl, row, totp.at(now), now=now)          # replay
    assert not users.check_totp(ctl, row, totp.at(now - 30), now=now)     # older step
    assert users.check_totp(ctl, row, totp.at(now + 30), now=now)         # drift ahead
    assert not users.check_totp(ctl, row, "12345", now=now)
    assert not users.check_totp(ctl, row, totp.at(now + 90), now=now)     # too far


def test_passwords_are_checked_for_length_and_hashed_slowly(ctl):
    import pytest

    from shared.errors import KeyturnError

    with pytest.raises(KeyturnError, match="at least 10"):
        users.create_user("shorty", "short", "admin")
    with pytest.raises(KeyturnError, match="role"):
        users.create_user("someone", PASSWORD, "root")
    make_person(ctl, "dup", "auditor")
    with pytest.raises(KeyturnError, match="exists"):
        users.create_user("dup", PASSWORD, "auditor")
    assert users.authenticate("dup", PASSWORD) is not None
    assert users.authenticate("dup", PASSWORD + "x") is None


# ---- what ends sessions, enrolment seeds, failed names --------------------------------------

def test_a_password_change_ends_the_users_other_sessions(app, admin):
    here, elsewhere = Console(app, admin), Console(app, admin)
    stolen = elsewhere.client.get_cookie("keyturn_session").value
    answer = here.post("/me/password", {"current": PASSWORD, "new": "a brand new password"})
    assert answer.location == "/me"
    assert here.get("/overview").status_code == 200              # the session that asked
    assert elsewhere.get("/overview").status_code == 302
    thief = app.test_client()
    thief.set_cookie("keyturn_session", stolen)
    assert thief.get("/api/v1/overview").status_code == 401


def test_an_authenticator_reset_ends_the_users_sessions(app, admin, auditor):
    victim = Console(app, auditor)
    boss = Console(app, admin)
    auditor_id = User.get(User.username == auditor.username).id
    assert boss.step_up(f"/users/{auditor_id}/reset-mfa").status_code == 302
    assert victim.get("/overview").status_code == 302
    assert boss.get("/overview").status_code == 200


def enrolment_seed(client) -> str:
    page = client.get("/login/enrol").text
    return re.search(r"secret=([A-Z2-7]+)", html.unescape(page)).group(1)


def test_each_enrolment_attempt_shows_a_new_seed(app):
    users.create_user("newbie", PASSWORD, "auditor")
    abandoned, client = Console(app), Console(app)
    abandoned.post("/login", {"username": "newbie", "password": PASSWORD})
    first = enrolment_seed(abandoned)
    assert client.post("/login", {"username": "newbie", "password": PASSWORD}).location \
        == "/login/enrol"
    second = enrolment_seed(client)
    assert second != first
    assert enrolment_seed(client) == second            # the same attempt keeps its seed
    assert client.post("/login/enrol", {"code": pyotp.TOTP(first).now()}).status_code == 401
    answer = client.post("/login/enrol", {"code": pyotp.TOTP(second).now()})
    assert answer.location == "/overview"


def test_a_failed_sign_in_keeps_a_typed_name_only_if_it_is_a_user(as_admin, app, admin):
    client = Console(app)
    typed = "my-Secret.Passw0rd"                      # a password typed as the name
    answer = client.post("/login", {"username": typed, "password": PASSWORD})
    assert answer.status_code == 401 and typed not in answer.text
    client.post("/login", {"username": admin.username, "password": "wrong-password"})
    events = [(e.actor, e.target) for e in
              AuditEvent.select().where(AuditEvent.action == "auth.failed").order_by(AuditEvent.id)]
    assert events == [("?", "user/?"), ("ada", "user/ada")]
    assert not AuditEvent.select().where(AuditEvent.actor.contains("Passw0rd")
                                         | AuditEvent.target.contains("Passw0rd")
                                         | AuditEvent.detail.contains("Passw0rd")).exists()
    assert typed not in as_admin.get("/audit").text
