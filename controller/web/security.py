"""Request guards: CSRF tokens, sign-in throttling, roles and step-up MFA."""
from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from flask import abort, current_app, g, jsonify, render_template, request, session, url_for
from flask_babel import gettext
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

from controller.audit import audit
from controller.web import users
from controller.web.i18n import N_
from controller.web.views import form_data, is_api
from shared.errors import KeyturnError, Said
from shared.bounded import USERNAME

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SECRET_FIELDS = {"password", "file_password", "current", "new"}   # never echoed into a page


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
        abort(400, N_("the form expired or did not come from this console; reload and try "
                      "again"))


# ---- throttling ---------------------------------------------------------------------------

# Failures a key may have before it is throttled, by kind. The (address, user) pair is the
# strictest and locks that pair out. A user or an address alone allows more, and throttling
# one does not lock anyone out: sign-in then asks for the code together with the password
# (`auth.login`), so guesses from many addresses learn nothing and the real user, who knows
# both, still gets in; many people may share one address behind a proxy or NAT.
FREE_FAILURES = {"pair": 5, "user": 20, "addr": 50}
MAX_KEYS = 10_000                 # keys kept before the forgotten ones are dropped


class Throttle:
    """Failed attempts per key (`kind:value`): after the kind's free failures each further
    one doubles a lock-out, up to `longest` seconds; a key quiet for `longest` after its last
    lock-out ends starts afresh. Kept in memory, so it counts per process (several gunicorn
    workers each keep their own count)."""

    def __init__(self, free: dict[str, int] | None = None, longest: float = 900.0):
        self.free = free or FREE_FAILURES
        self.longest = longest
        self.clock = time.monotonic
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}

    def wait_seconds(self, *keys: str, now: float | None = None) -> float:
        """How long the most restricted key must still wait (0: may try now)."""
        now = now or self.clock()
        with self._lock:
            return max([0.0] + [until - now for _, until in
                                (self._failures.get(key, (0, 0.0)) for key in keys)])

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = now or self.clock()
        with self._lock:
            if len(self._failures) > MAX_KEYS:
                self._forget(now)
            for key in keys:
                count, until = self._failures.get(key, (0, now))
                count = 1 if now > until + self.longest else count + 1
                free = self.free[key.partition(":")[0]]
                delay = 0.0 if count < free else min(2.0 ** (count - free), self.longest)
                self._failures[key] = (count, now + delay)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _forget(self, now: float) -> None:
        self._failures = {key: value for key, value in self._failures.items()
                          if now <= value[1] + self.longest}


class Throttled(KeyturnError):
    def __init__(self, seconds: float):
        self.seconds = int(seconds) + 1
        super().__init__(f"too many failed attempts: try again in {self.seconds} s")

    def shown(self) -> str:
        """The message in the page's language (the API and the audit log say `str(self)`)."""
        return gettext("too many failed attempts: try again in %(seconds)s s",
                       seconds=self.seconds)


@dataclass(frozen=True)
class AttemptKeys:
    """The throttle keys of one sign-in attempt. A name that cannot be a user's counts as
    `?`, so made-up names share one key and fill no memory."""

    pair: str
    user: str
    addr: str

    @classmethod
    def of(cls, username: str) -> "AttemptKeys":
        name = username.lower() if USERNAME.match(username) else "?"
        addr = request.remote_addr
        return cls(f"pair:{addr}|{name}", f"user:{name}", f"addr:{addr}")

    def __iter__(self):
        return iter((self.pair, self.user, self.addr))


def throttle() -> Throttle:
    return current_app.extensions["keyturn.throttle"]


def guard_attempt(key: str) -> None:
    """Raise `Throttled` while `key` is locked out."""
    wait = throttle().wait_seconds(key)
    if wait > 0:
        raise Throttled(wait)


def record_attempt(ok: bool, *keys: str) -> None:
    if ok:
        throttle().succeeded(*keys)
    else:
        throttle().failed(*keys)


def trust_proxies(app, hops: int) -> None:
    """Take the client's address (and scheme) from the `hops` reverse proxies in front of
    the console, so throttling sees people, not the proxy. 0: trust no header."""
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)


# ---- roles and step-up --------------------------------------------------------------------

def admin_required(view):
    """Only administrators may change anything or see a secret; auditors get 403."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if current_user.role != "admin":
            audit(request.endpoint or view.__name__, request.path, "this needs the admin role",
                  refused=True)
            abort(403, N_("this needs the admin role"))
        return view(*args, **kwargs)

    guarded.admin_only = True         # what the API document says (`views.describe`)
    return guarded


def mark_mfa() -> None:
    """Remember that this session just gave a valid TOTP code (starts the step-up window)."""
    session["mfa_at"] = time.time()


def step_up_proof(scope: str | None = None) -> str | None:
    """How this request shows a fresh TOTP check, or None: the session's step-up window, a
    valid code sent as `code` (it opens the window for a session), or an API token's `scope`
    that an admin granted after a step-up. API tokens have no window. Wrong codes are
    throttled per user and address."""
    if g.get("token_auth"):
        if scope and scope in g.token_scopes:
            return f"token scope {scope}"
    elif time.time() - session.get("mfa_at", 0) < (
            current_app.extensions["keyturn.ctl"].settings.step_up_window):
        return "step-up window"
    code = form_data().get("code")
    if not code or not isinstance(code, str):
        return None
    key = AttemptKeys.of(current_user.username).pair
    guard_attempt(key)
    ok = users.check_totp(current_app.extensions["keyturn.ctl"], current_user.row(), code)
    record_attempt(ok, key)
    if not ok:
        return None
    if not g.get("token_auth"):
        mark_mfa()
    return "TOTP code"


def step_up_gate(purpose: str, back: str, scope: str | None = None, shown: str | None = None):
    """None when the request shows a fresh TOTP check (how: `g.step_up`, for the audit); else
    the answer asking for a code: 401 for a script, or a page posting the same form again
    with the code. A form holding a password is never copied into that page: it fails with
    a message instead, to be sent again with a code. `purpose` (English) goes to the audit
    log and the API; the page says `shown`, else `purpose` in its language."""
    if (proof := step_up_proof(scope)):
        g.step_up = proof
        return None
    error = "wrong or already used code" if form_data().get("code") else None
    if error:
        audit(request.endpoint or "step_up", request.path, f"to {purpose}: {error}",
              refused=True)
    if is_api():
        return jsonify(error=error or "send a fresh TOTP code as 'code'"), 401
    fields = {name: value for name, value in request.form.items()
              if name not in (CSRF_FIELD, "code")}
    if SECRET_FIELDS & fields.keys():
        raise KeyturnError("%(problem)s to %(purpose)s", purpose=Said(purpose),
                           problem=Said(error or N_("enter a code from your authenticator")))
    return render_template("auth/step_up.html", purpose=shown or gettext(purpose),
                           error=error and gettext(error), back=back,
                           target=request.path, fields=fields), 401 if error else 200


def step_up_required(purpose: str, back_endpoint: str):
    """A view that needs the same fresh TOTP check as a secret reveal."""

    def wrap(view):
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            return step_up_gate(purpose, url_for(back_endpoint)) or view(*args, **kwargs)

        guarded.step_up = purpose
        return guarded

    return wrap
