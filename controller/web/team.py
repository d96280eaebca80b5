"""People: the users page (admins add, deactivate, change roles, reset authenticators) and each
user's own page (mail address, result-file password, password, API token). What could hand
someone a way to secrets (a new user, a role, an authenticator reset, an API token) needs the
same fresh TOTP check as a reveal."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, url_for
from flask_babel import gettext, refresh
from flask_login import current_user

from controller.audit import audit
from controller.models import User
from controller.web import auth, forms, i18n, serialize, shapes, users
from controller.web.i18n import N_
from controller.web.security import admin_required, step_up_required
from controller.web.views import Done, action, form_data, is_api, page
from shared.errors import KeyturnError

bp = Blueprint("team", __name__)


@page(bp, "/users", "team/users.html", response=shapes.Users)
@admin_required
def index():
    return {"users": [serialize.user_row(u) for u in User.select().order_by(User.username)],
            "roles": users.ROLES}


@action(bp, "/users/new", response=shapes.UserSaved, body=forms.NewUser, statuses=(201,))
@admin_required
@step_up_required(N_("add a user"), "team.index")
def add():
    data = form_data(forms.NewUser)
    created = users.create_user(str(data.get("username", "")).strip(),
                                str(data.get("password", "")), str(data.get("role", "")),
                                str(data.get("email") or "").strip() or None)
    return Done(gettext("user %(name)s added; they enrol an authenticator at first sign-in",
                        name=created.username),
                url_for("team.index"), {"user": serialize.user_row(created)}, 201)


def found_user(user_id: int) -> User:
    found = User.get_or_none(User.id == user_id)
    if found is None:
        abort(404, f"no user {user_id}")
    return found


@action(bp, "/users/<int:user_id>/active", response=shapes.UserSaved)
@admin_required
def toggle_active(user_id: int):
    """Deactivate (ends their sessions and token at once) or reactivate a user."""
    found = found_user(user_id)
    if found.id == current_user.id:
        raise KeyturnError(N_("you cannot deactivate yourself"))
    found.active = not found.active
    found.save(only=[User.active])
    audit("user.activate" if found.active else "user.deactivate", f"user/{found.username}",
          before={"active": not found.active}, after={"active": found.active})
    return Done(gettext("user %(name)s activated", name=found.username) if found.active
                else gettext("user %(name)s deactivated", name=found.username),
                url_for("team.index"), {"user": serialize.user_row(found)})


@action(bp, "/users/<int:user_id>/role", response=shapes.UserSaved, body=forms.Role)
@admin_required
@step_up_required(N_("change a user's role"), "team.index")
def change_role(user_id: int):
    found = found_user(user_id)
    role = str(form_data(forms.Role).get("role", ""))
    if found.id == current_user.id and role != found.role:
        raise KeyturnError(N_("you cannot change your own role"))
    users.set_role(found, role)
    return Done(gettext("user %(name)s is now %(role)s", name=found.username, role=role),
                url_for("team.index"),
                {"user": serialize.user_row(found_user(user_id))})


@action(bp, "/users/<int:user_id>/reset-mfa", response=shapes.Message, body=forms.StepUp)
@admin_required
@step_up_required(N_("reset a user's authenticator"), "team.index")
def reset_mfa(user_id: int):
    """Forget the user's authenticator and end their sessions: they enrol again at sign-in."""
    found = found_user(user_id)
    users.reset_totp(found)
    auth.end_sessions(current_user.username, "user.reset_mfa", found)
    return Done(gettext("user %(name)s enrols a new authenticator at next sign-in",
                        name=found.username),
                url_for("team.index"))


# ---- one's own page -----------------------------------------------------------------------

@page(bp, "/me", "team/me.html", response=shapes.Me)
def me():
    row = current_user.row()
    return {"user": serialize.user_row(row), "has_file_password": row.file_password is not None,
            "language": row.language}


@action(bp, "/me/profile", response=shapes.Message, body=forms.Profile)
def profile():
    """Mail address, the password that opens mailed result archives, and the console's
    language (blank: the browser's; left out: kept)."""
    data = form_data(forms.Profile)
    row = current_user.row()
    before = {"email": row.email, "file_password": row.file_password, "language": row.language}
    row.email = users.mail_address(str(data.get("email") or "").strip())
    if data.get("file_password"):
        row.file_password = current_app.extensions["keyturn.ctl"].vault.encrypt(
            str(data["file_password"]))
    if data.get("language") is not None:
        row.language = chosen_language(str(data["language"]).strip())
    row.save(only=[User.email, User.file_password, User.language])
    audit("user.profile", f"user/{row.username}", before=before,
          after={"email": row.email, "file_password": row.file_password,
                 "language": row.language})
    current_user.language = row.language       # this answer's flash in the new language
    refresh()
    return Done(gettext("profile saved"), url_for("team.me"))


def chosen_language(value: str) -> str | None:
    """A language of the console's, or None (blank: follow the browser)."""
    if value and value not in i18n.LANGUAGES:
        raise KeyturnError("language must be one of %(languages)s or blank",
                           languages=", ".join(i18n.LANGUAGES))
    return value or None


@action(bp, "/me/password", response=shapes.Message, body=forms.PasswordChange)
def change_password():
    data = form_data(forms.PasswordChange)
    row = current_user.row()
    if users.authenticate(row.username, str(data.get("current", ""))) is None:
        raise KeyturnError(N_("the current password is wrong"))
    users.set_password(row, str(data.get("new", "")))
    auth.end_sessions(row.username, "user.password", row)
    return Done(gettext("password changed; your other sessions are signed out"),
                url_for("team.me"))


@action(bp, "/me/token", response=shapes.TokenCreated, body=forms.Token, statuses=(201,))
@step_up_required(N_("create an API token"), "team.me")
def new_token():
    """A new API token, shown once; it replaces the previous one. An admin may let it reveal
    secrets without a TOTP code (`scope=reveal`), for scripts that must."""
    scope = str(form_data(forms.Token).get("scope") or "").strip()
    token = users.new_api_token(current_user.row(), (scope,) if scope else ())
    if is_api():
        return {"token": token}, 201
    return render_template("team/token.html", token=token)


@action(bp, "/me/token/revoke", response=shapes.Message)
def revoke_token():
    users.revoke_api_token(current_user.row())
    return Done(gettext("API token revoked"), url_for("team.me"))
