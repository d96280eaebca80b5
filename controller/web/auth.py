"""Sign-in (password, then TOTP; enrolment on first sign-in), sign-out and who is asking.

A session is a signed cookie naming the user and when they signed in. Sign-out, a password
change and an authenticator reset write an audit event on the user, and a session that began
before such an event is refused on its next request, so a copied cookie dies with them even
though it is client-side (`end_sessions`).
"""
from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import urlsplit

from flask import (Blueprint, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_babel import gettext
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from peewee import Value, fn

from controller.audit import audit
from controller.models import AuditEvent, User, utcnow
from controller.web import health, users
from controller.web.forms import Login
from controller.web.views import form_data, is_api
from controller.web.security import (AttemptKeys, Throttled, check_csrf, guard_attempt,
                                     mark_mfa, record_attempt, throttle)

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
PENDING_SECONDS = 300        # between the password and the TOTP code
PUBLIC_ENDPOINTS = {"auth.login", "auth.code", "auth.enrol", "static"} | health.ENDPOINTS
# Audit actions on `user/<name>` that end every session the user began before them.
SESSION_ENDING = ("auth.signout", "user.password", "user.reset_mfa")


class ConsoleUser(UserMixin):
    """The signed-in user as flask-login sees it (a plain copy: no open database row)."""

    def __init__(self, row: User):
        self.id = row.id
        self.username = row.username
        self.role = row.role
        self.language = row.language        # None: the browser's (`controller.web.i18n`)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def row(self) -> User:
        return User.get_by_id(self.id)


@login_manager.user_loader
def load_session_user(user_id: str) -> ConsoleUser | None:
    """The session's user, in one query: active, and with no session-ending event (sign-out,
    password change, authenticator reset) since the session began."""
    started = session.get("signed_in_at")
    if not started:
        return None
    ended = AuditEvent.select(AuditEvent.id).where(
        (AuditEvent.at >= datetime.fromisoformat(started))
        & (AuditEvent.target == Value("user/").concat(User.username))
        & AuditEvent.action.in_(SESSION_ENDING))
    row = User.get_or_none((User.id == int(user_id)) & User.active & ~fn.EXISTS(ended))
    return ConsoleUser(row) if row else None


@login_manager.request_loader
def load_token_user(req) -> ConsoleUser | None:
    """A script's user from `Authorization: Bearer <token>`."""
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    row = users.user_for_token(token.strip())
    if row is None:
        return None
    g.token_auth = True
    g.token_scopes = users.token_scopes(row)
    return ConsoleUser(row)


@login_manager.unauthorized_handler
def unauthorized():
    if is_api():
        return {"error": "sign in or send 'Authorization: Bearer <token>'"}, 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def guard_request():
    """Every request: signed in (except the sign-in pages) and, for changes, a CSRF token."""
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        return login_manager.unauthorized()
    check_csrf()
    return None


def safe_next(target: str | None) -> str:
    """Follow `next` only to a path of this site, judged on the very string sent as Location:
    browsers drop tabs and newlines and read a backslash as `/`, so `/<tab>/evil.example`
    would leave the site; a target with any of them is refused, not cleaned."""
    home = url_for("overview.index")
    if not target or not target.isprintable() or any(c in target for c in " \\"):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or target.startswith("//"):
        return home
    return target


def end_sessions(actor: str, action: str, row: User) -> None:
    """Audit `action` (one of SESSION_ENDING) on the user: every session of theirs begun
    before it ends, except the one asking, which goes on."""
    audit(action, f"user/{row.username}", actor=actor)
    if current_user.is_authenticated and current_user.id == row.id and not g.get("token_auth"):
        session["signed_in_at"] = utcnow().isoformat()


def audit_failed(username: str, reason: str) -> None:
    """A failed step, under the user's name only if it names a user (people type passwords
    into the name field)."""
    name = users.existing_name(username) or "?"
    audit("auth.failed", f"user/{name}", reason, actor=name, refused=True)


# ---- the steps ----------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    """The password step. While the user, or the address, has had too many failures, the code
    must come with the password and only both together succeed, so guesses learn nothing and
    the real user still gets in; the (user, address) pair alone is locked out."""
    if request.method == "GET":
        return render_template("auth/login.html", next=request.args.get("next", ""))
    username = form_data(Login)["username"]
    keys = AttemptKeys.of(username)
    try:
        guard_attempt(keys.pair)
    except Throttled as exc:
        return login_form(exc.shown(), 429, keys)
    together = code_with_password(keys)
    row = users.authenticate(username, request.form.get("password", ""))
    if together and row is not None and not (row.totp_enrolled and users.check_totp(
            current_app.extensions["keyturn.ctl"], row, request.form.get("code", ""))):
        row = None
    if row is None:
        record_attempt(False, *keys)
        audit_failed(username, "wrong user name, password or code" if together
                     else "wrong user name or password")
        return login_form(gettext("wrong user name, password or code") if together
                          else gettext("wrong user name or password"), 401, keys)
    target = safe_next(request.form.get("next"))
    if together:
        return sign_in(row, target)
    if not row.totp_enrolled:
        users.new_totp_seed(current_app.extensions["keyturn.ctl"], row)
    session.clear()
    session.update(pending_user=row.id, pending_at=time.time(), next=target)
    return redirect(url_for("auth.code" if row.totp_enrolled else "auth.enrol"))


def code_with_password(keys: AttemptKeys) -> bool:
    """Whether sign-in must take the TOTP code together with the password."""
    return throttle().wait_seconds(keys.user, keys.addr) > 0


def login_form(error: str, status: int, keys: AttemptKeys):
    """The sign-in form again. The name typed is not shown back: it may be a password."""
    return render_template("auth/login.html", error=error, next=request.form.get("next", ""),
                           together=code_with_password(keys)), status


def pending_user() -> User | None:
    """The user who gave the right password moments ago and still owes a TOTP code."""
    if time.time() - session.get("pending_at", 0) > PENDING_SECONDS:
        return None
    return User.get_or_none((User.id == session.get("pending_user", 0)) & User.active)


@bp.route("/login/code", methods=["GET", "POST"])
def code():
    return totp_step(enrolling=False)


@bp.route("/login/enrol", methods=["GET", "POST"])
def enrol():
    return totp_step(enrolling=True)


def totp_step(enrolling: bool):
    """Ask for the code; on enrolment also show the new seed (QR and otpauth text)."""
    row = pending_user()
    if row is None or row.totp_enrolled == enrolling or row.totp_secret is None:
        flash(gettext("sign in again"), "error")
        return redirect(url_for("auth.login"))
    ctl = current_app.extensions["keyturn.ctl"]
    template = "auth/enrol.html" if enrolling else "auth/code.html"
    context = {}
    if enrolling:
        uri = users.provisioning_uri(ctl, row)
        context = {"otpauth": uri, "qr": users.qr_svg(uri)}
    if request.method == "GET":
        return render_template(template, **context)
    keys = AttemptKeys.of(row.username)
    try:
        guard_attempt(keys.pair)
    except Throttled as exc:
        return render_template(template, error=exc.shown(), **context), 429
    if not users.check_totp(ctl, row, request.form.get("code", "")):
        record_attempt(False, *keys)
        audit_failed(row.username, "wrong or reused TOTP code")
        return render_template(template, error=gettext("wrong or already used code"),
                               **context), 401
    if enrolling:
        users.finish_enrolment(row)
        audit("auth.enrol", f"user/{row.username}", actor=row.username)
    return sign_in(row, session.get("next"))


def sign_in(row: User, target: str | None):
    """Start the session of a user who gave password and code; the user's failures are
    forgotten, not the address's (one good account must not clear a guessing address)."""
    keys = AttemptKeys.of(row.username)
    record_attempt(True, keys.pair, keys.user)
    target = safe_next(target)
    session.clear()
    session.permanent = True
    login_user(ConsoleUser(row))
    session["signed_in_at"] = utcnow().isoformat()
    mark_mfa()
    audit("auth.signin", f"user/{row.username}", actor=row.username)
    return redirect(target)


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session here and for any copy of its cookie."""
    audit("auth.signout", f"user/{current_user.username}")
    logout_user()
    session.clear()
    flash(gettext("signed out"), "info")
    return redirect(url_for("auth.login"))
