"""Sign-in (password, then TOTP; enrolment on first sign-in), sign-out and who is asking.

A session is a signed cookie naming the user and when they signed in. Sign-out writes an
`auth.signout` audit event, and a session whose user signed out after it began is refused on
its next request, so a copied cookie dies with the sign-out even though it is client-side.
"""
from __future__ import annotations

import time
from datetime import datetime

from flask import (Blueprint, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from peewee import fn

from controller.models import AuditEvent, User, utcnow
from controller.web import users
from controller.web.security import (Throttled, check_csrf, guard_attempt, mark_mfa,
                                     record_attempt, throttle_keys)

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
PENDING_SECONDS = 300        # between the password and the TOTP code
PUBLIC_ENDPOINTS = {"auth.login", "auth.code", "auth.enrol", "static"}


class ConsoleUser(UserMixin):
    """The signed-in user as flask-login sees it (a plain copy: no open database row)."""

    def __init__(self, row: User):
        self.id = row.id
        self.username = row.username
        self.role = row.role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def row(self) -> User:
        return User.get_by_id(self.id)


@login_manager.user_loader
def load_session_user(user_id: str) -> ConsoleUser | None:
    """The session's user, in one query: active, and not signed out since the session began."""
    started = session.get("signed_in_at")
    if not started:
        return None
    signed_out = AuditEvent.select(AuditEvent.id).where(
        (AuditEvent.at >= datetime.fromisoformat(started)) & (AuditEvent.actor == User.username)
        & (AuditEvent.action == "auth.signout"))
    row = User.get_or_none((User.id == int(user_id)) & User.active & ~fn.EXISTS(signed_out))
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
    return ConsoleUser(row)


@login_manager.unauthorized_handler
def unauthorized():
    if request.blueprint == "api":
        return {"error": "sign in or send 'Authorization: Bearer <token>'"}, 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def guard_request():
    """Every request: signed in (except the sign-in pages) and, for changes, a CSRF token."""
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        return login_manager.unauthorized()
    check_csrf()
    return None


def safe_next(target: str | None) -> str:
    """Follow `next` only within this site."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("overview.index")


def audit(actor: str, action: str, target: str, detail: str = "") -> None:
    AuditEvent.create(actor=actor, action=action, target=target, detail=detail)


# ---- the steps ----------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("auth/login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()
    keys = throttle_keys(username)
    try:
        guard_attempt(*keys)
    except Throttled as exc:
        return render_template("auth/login.html", error=str(exc), username=username), 429
    row = users.authenticate(username, request.form.get("password", ""))
    if row is None:
        record_attempt(False, *keys)
        audit(username or "?", "auth.failed", f"user/{username}", f"from {request.remote_addr}")
        return render_template("auth/login.html", error="wrong user name or password",
                               username=username), 401
    session.clear()
    session.update(pending_user=row.id, pending_at=time.time(),
                   next=safe_next(request.form.get("next")))
    return redirect(url_for("auth.code" if row.totp_enrolled else "auth.enrol"))


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
    if row is None or row.totp_enrolled == enrolling:
        flash("sign in again", "error")
        return redirect(url_for("auth.login"))
    ctl = current_app.extensions["keyturn.ctl"]
    template = "auth/enrol.html" if enrolling else "auth/code.html"
    context = {}
    if enrolling:
        uri = users.provisioning_uri(ctl, row)
        context = {"otpauth": uri, "qr": users.qr_svg(uri)}
    if request.method == "GET":
        return render_template(template, **context)
    keys = throttle_keys(row.username)
    try:
        guard_attempt(*keys)
    except Throttled as exc:
        return render_template(template, error=str(exc), **context), 429
    if not users.check_totp(ctl, row, request.form.get("code", "")):
        record_attempt(False, *keys)
        audit(row.username, "auth.failed", f"user/{row.username}", "wrong or reused TOTP code")
        return render_template(template, error="wrong or already used code", **context), 401
    if enrolling:
        users.finish_enrolment(row)
        audit(row.username, "auth.enrol", f"user/{row.username}")
    return sign_in(row)


def sign_in(row: User):
    record_attempt(True, throttle_keys(row.username)[0])
    target = session.get("next") or url_for("overview.index")
    session.clear()
    session.permanent = True
    login_user(ConsoleUser(row))
    session["signed_in_at"] = utcnow().isoformat()
    mark_mfa()
    audit(row.username, "auth.signin", f"user/{row.username}", f"from {request.remote_addr}")
    return redirect(target)


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session here and for any copy of its cookie."""
    audit(current_user.username, "auth.signout", f"user/{current_user.username}")
    logout_user()
    session.clear()
    flash("signed out", "info")
    return redirect(url_for("auth.login"))
