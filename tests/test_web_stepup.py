"""Step-up MFA beyond reveals: adding users, changing roles, resetting authenticators and
creating API tokens need the same fresh TOTP code; an API token reveals only with a code in
the request or the `reveal` scope an admin granted it, and the audit says which."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from controller.models import AuditEvent, Record, User
from controller.web import users
from controller.web.cli import user as user_cli
from tests.web_support import PASSWORD, next_code

NEW_ADMIN = {"username": "mallory", "password": PASSWORD, "role": "admin"}


@pytest.fixture
def window_closed(ctl, monkeypatch):
    monkeypatch.setattr(ctl.settings, "step_up_window", 0)


def user_id(name):
    return User.get(User.username == name).id


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_admin_changes_over_the_api_need_a_fresh_code(window_closed, as_admin, auditor, admin):
    otto = user_id(auditor.username)
    changes = [("/api/v1/users/new", NEW_ADMIN),
               (f"/api/v1/users/{otto}/role", {"role": "admin"}),
               (f"/api/v1/users/{otto}/reset-mfa", {}),
               ("/api/v1/me/token", {})]
    for path, body in changes:
        asked = as_admin.post_json(path, body)
        assert asked.status_code == 401 and "code" in asked.json["error"], path
        wrong = as_admin.post_json(path, body | {"code": "000000"})
        assert wrong.status_code == 401 and "wrong" in wrong.json["error"], path
    otto_row = User.get_by_id(otto)
    assert not User.select().where(User.username == "mallory").exists()
    assert (otto_row.role, otto_row.totp_enrolled) == ("auditor", True)
    assert User.get(User.username == admin.username).api_token_hash is None
    for path, body in changes:
        done = as_admin.post_json(path, body | {"code": next_code(admin)})
        assert done.status_code in (200, 201), (path, done.json)
    otto_row = User.get_by_id(otto)
    assert User.get(User.username == "mallory").role == "admin"
    assert (otto_row.role, otto_row.totp_enrolled) == ("admin", False)
    assert User.get(User.username == admin.username).api_token_hash is not None


def test_an_admin_token_cannot_add_an_admin_without_a_code(ctl, app, admin):
    token = users.new_api_token(User.get(User.username == admin.username))
    api = app.test_client()
    refused = api.post("/api/v1/users/new", json=NEW_ADMIN, headers=bearer(token))
    assert refused.status_code == 401
    assert not User.select().where(User.username == "mallory").exists()
    done = api.post("/api/v1/users/new", json=NEW_ADMIN | {"code": next_code(admin)},
                    headers=bearer(token))
    assert done.status_code == 201


def test_the_console_asks_for_the_code_and_never_echoes_a_password(window_closed, as_admin,
                                                                  auditor):
    otto = user_id(auditor.username)
    asked = as_admin.post(f"/users/{otto}/role", {"role": "admin"})
    assert asked.status_code == 200 and 'name="code"' in asked.text
    assert 'name="role" value="admin"' in asked.text           # the form goes on with the code
    assert User.get_by_id(otto).role == "auditor"
    done = as_admin.post(f"/users/{otto}/role", {"role": "admin", "code": next_code(as_admin.person)})
    assert done.location == "/users" and User.get_by_id(otto).role == "admin"

    refused = as_admin.post("/users/new", NEW_ADMIN)
    assert refused.status_code == 302
    assert PASSWORD not in refused.text
    assert "enter a code from your authenticator to add a user" in as_admin.get("/users").text
    assert not User.select().where(User.username == "mallory").exists()
    added = as_admin.post("/users/new", NEW_ADMIN | {"code": next_code(as_admin.person)})
    assert added.location == "/users"
    assert User.select().where(User.username == "mallory").exists()


def test_within_the_window_the_console_asks_nothing(as_admin, auditor):
    otto = user_id(auditor.username)
    assert as_admin.post(f"/users/{otto}/reset-mfa").location == "/users"
    assert not User.get_by_id(otto).totp_enrolled


def test_api_reveals_need_a_code_or_the_reveal_scope(ctl, app, admin, auditor, ran,
                                                     monkeypatch):
    record = Record.select().where(Record.execution == ran.id).first()
    url = f"/api/v1/records/{record.id}/reveal"
    api = app.test_client()
    plain = users.new_api_token(User.get(User.username == auditor.username))
    assert api.post(url, json={}, headers=bearer(plain)).status_code == 403

    plain = users.new_api_token(User.get(User.username == admin.username))
    assert api.post(url, json={}, headers=bearer(plain)).status_code == 401
    assert api.post(url, json={"code": next_code(admin)}, headers=bearer(plain)).status_code \
        == 200

    monkeypatch.setenv("KEYTURN_DATA_DIR", str(ctl.settings.data_dir))
    monkeypatch.setenv("KEYTURN_DATABASE_URL", ctl.settings.effective_database_url)
    granted = CliRunner().invoke(user_cli, ["token", admin.username, "--scope", "reveal"],
                                 catch_exceptions=False)
    scoped = granted.output.strip()
    shown = api.post(url, json={}, headers=bearer(scoped))
    assert shown.status_code == 200
    assert shown.json["new_secret"] == ctl.vault.decrypt(record.new_secret)
    assert api.post(url, json={}, headers=bearer(plain)).status_code == 401   # replaced
    restore = api.post(f"/api/v1/records/{record.id}/restore", json={}, headers=bearer(scoped))
    assert restore.status_code == 401                       # the scope is for reveals only
    reveals = [e.detail for e in AuditEvent.select().where(AuditEvent.action == "secret.reveal")
               .order_by(AuditEvent.id)]
    assert reveals == ["by TOTP code", "by token scope reveal"]
    tokens = [e.detail for e in AuditEvent.select().where(AuditEvent.action == "user.token")
              .order_by(AuditEvent.id)]
    assert tokens == ["", "", "scope reveal"]         # every token made is audited, its scope said


def test_only_admins_get_the_reveal_scope_and_a_role_change_drops_it(ctl, as_admin, admin,
                                                                     auditor):
    from shared.errors import KeyturnError

    with pytest.raises(KeyturnError, match="not an admin"):
        users.new_api_token(User.get(User.username == auditor.username), ("reveal",))
    with pytest.raises(KeyturnError, match="scope"):
        users.new_api_token(User.get(User.username == admin.username), ("everything",))
    page = as_admin.post("/me/token", {"scope": "reveal"})
    assert page.status_code == 200 and 'id="token"' in page.text
    row = User.get(User.username == admin.username)
    assert users.token_scopes(row) == {"reveal"}
    users.set_role(row, "auditor")
    assert users.token_scopes(User.get_by_id(row.id)) == set()


def test_window_reveals_are_audited_as_such(as_admin, ran):
    record = Record.select().where(Record.execution == ran.id).first()
    assert as_admin.post(f"/records/{record.id}/reveal").status_code == 200
    assert AuditEvent.get(AuditEvent.action == "secret.reveal").detail == "by step-up window"
