"""Request guards: CSRF tokens, sign-in throttling, roles and step-up MFA."""
from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time

from flask import abort, current_app, g, request, session
from flask_login import current_user

from controller.web import users
from shared.errors import KeyturnError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


# ---- CSRF ---------------------------------------------------------------------------------

def csrf_token() -> str:
    """The session's CSRF token (made on first use), for forms and the console's scripts."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def check_csrf() -> None:
    """Refuse a state-changing request that carries no matching token. Requests authenticated
    by an API token are exempt: they carry no cookie a third-party site could ride on."""
    if request.method in SAFE_METHODS or g.get("token_auth"):
        return
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
    expected = session.get(CSRF_FIELD)
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, "the form expired or did not come from this console; reload and try again")


# ---- throttling ---------------------------------------------------------------------------

class Throttle:
    """Failed attempts per key (a username, an address): after `free` failures each further
    one doubles a lock-out, up to `longest` seconds. Kept in memory, so it counts per process
    (several gunicorn workers each keep their own count)."""

    def __init__(self, free: int = 5, longest: float = 900.0):
        self.free = free
        self.longest = longest
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}

    def wait_seconds(self, *keys: str, now: float | None = None) -> float:
        """How long the most restricted key must still wait (0: may try now)."""
        now = now or time.monotonic()
        with self._lock:
            return max([0.0] + [until - now for _, until in
                                (self._failures.get(key, (0, 0.0)) for key in keys)])

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = now or time.monotonic()
        with self._lock:
            for key in keys:
                count = self._failures.get(key, (0, 0.0))[0] + 1
                delay = 0.0 if count < self.free else min(2.0 ** (count - self.free), self.longest)
                self._failures[key] = (count, now + delay)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class Throttled(KeyturnError):
    def __init__(self, seconds: float):
        super().__init__(f"too many failed attempts: try again in {int(seconds) + 1} s")


def throttle_keys(username: str) -> tuple[str, str]:
    return f"user:{username.lower()}", f"addr:{request.remote_addr}"


def guard_attempt(*keys: str) -> None:
    """Raise `Throttled` while any of the keys is locked out."""
    wait = current_app.extensions["keyturn.throttle"].wait_seconds(*keys)
    if wait > 0:
        raise Throttled(wait)


def record_attempt(ok: bool, *keys: str) -> None:
    throttle = current_app.extensions["keyturn.throttle"]
    if ok:
        throttle.succeeded(*keys)
    else:
        throttle.failed(*keys)


# ---- roles and step-up --------------------------------------------------------------------

def admin_required(view):
    """Only administrators may change anything or see a secret; auditors get 403."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if current_user.role != "admin":
            abort(403, "this needs the admin role")
        return view(*args, **kwargs)

    return guarded


def mark_mfa() -> None:
    """Remember that this session just gave a valid TOTP code (starts the step-up window)."""
    session["mfa_at"] = time.time()


def mfa_fresh() -> bool:
    """Whether a TOTP code was given within the step-up window (API calls have no window)."""
    if g.get("token_auth"):
        return False
    window = current_app.extensions["keyturn.ctl"].settings.step_up_window
    return time.time() - session.get("mfa_at", 0) < window


def step_up(code: str | None) -> bool:
    """Whether the user may see or restore a secret now: within the step-up window, or on a
    valid fresh TOTP code (which opens the window). Wrong codes are throttled per user."""
    if mfa_fresh():
        return True
    if not code:
        return False
    key = f"user:{current_user.username.lower()}"
    guard_attempt(key)
    ok = users.check_totp(current_app.extensions["keyturn.ctl"], current_user.row(), code)
    record_attempt(ok, key)
    if ok and not g.get("token_auth"):
        mark_mfa()
    return ok
