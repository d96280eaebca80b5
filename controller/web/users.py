"""Console users: passwords (scrypt), TOTP enrolment with replay protection, API tokens.
Shared by `keyturn init`, `keyturn user` and the console, so every path hashes the same way."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno
from werkzeug.security import check_password_hash, generate_password_hash

from controller.models import User
from controller.runtime import Controller
from shared.errors import KeyturnError
from shared.messages import USERNAME

ROLES = ("admin", "auditor")
MIN_PASSWORD = 10
TOTP_ISSUER = "keyturn"
TOTP_PERIOD = 30
TOKEN_PREFIX = "kt_"
# Checked against when a username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("keyturn-dummy-password", method="scrypt")


def hash_password(password: str) -> str:
    """A slow salted hash (scrypt, N=2^15) that werkzeug can check."""
    if len(password) < MIN_PASSWORD:
        raise KeyturnError(f"password: use at least {MIN_PASSWORD} characters")
    return generate_password_hash(password, method="scrypt")


def authenticate(username: str, password: str) -> User | None:
    """The active user with this name and password, else None (in about constant time)."""
    user = User.get_or_none(User.username == username)
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    return user if ok and user is not None and user.active else None


def create_user(username: str, password: str, role: str, email: str | None = None) -> User:
    if not USERNAME.match(username):
        raise KeyturnError(f"user name {username!r}: use letters, digits, _ . -")
    if role not in ROLES:
        raise KeyturnError(f"role {role!r}: one of {', '.join(ROLES)}")
    if User.select().where(User.username == username).exists():
        raise KeyturnError(f"user {username} exists already")
    return User.create(username=username, password_hash=hash_password(password), role=role,
                       email=email or None)


def set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    user.save(only=[User.password_hash])


# ---- TOTP ---------------------------------------------------------------------------------

def totp_seed(ctl: Controller, user: User) -> str:
    """The user's TOTP seed, made (and stored encrypted) on first use until enrolment ends."""
    if user.totp_secret is None:
        user.totp_secret = ctl.vault.encrypt(pyotp.random_base32())
        user.save(only=[User.totp_secret])
    return ctl.vault.decrypt(user.totp_secret)


def provisioning_uri(ctl: Controller, user: User) -> str:
    return pyotp.TOTP(totp_seed(ctl, user)).provisioning_uri(name=user.username,
                                                             issuer_name=TOTP_ISSUER)


def qr_svg(text: str) -> str:
    """The QR code of `text` as inline SVG (drawn here: the console loads nothing remote)."""
    return segno.make(text, error="m").svg_inline(scale=4, dark="#111", light="#fff")


def check_totp(ctl: Controller, user: User, code: str, now: float | None = None) -> bool:
    """Accept a code once: its time step (±1 for clock drift) must be newer than the last
    accepted one, claimed with a conditional update so two requests cannot both use it."""
    code = "".join(code.split())
    if user.totp_secret is None or not code.isdigit() or len(code) != 6:
        return False
    totp = pyotp.TOTP(ctl.vault.decrypt(user.totp_secret))
    step_now = int((now or time.time()) // TOTP_PERIOD)
    for step in (step_now - 1, step_now, step_now + 1):
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD), code):
            claimed = (User.update(totp_last_step=step)
                       .where((User.id == user.id) & (User.totp_last_step < step)).execute())
            if claimed:
                user.totp_last_step = step
            return bool(claimed)
    return False


def finish_enrolment(user: User) -> None:
    user.totp_enrolled = True
    user.save(only=[User.totp_enrolled])


def reset_totp(user: User) -> None:
    """Forget the authenticator: the user enrols a new one at next sign-in."""
    User.update(totp_secret=None, totp_enrolled=False, totp_last_step=0).where(
        User.id == user.id).execute()


# ---- API tokens ---------------------------------------------------------------------------

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token(user: User) -> str:
    """A fresh token replacing the user's previous one; only its hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    User.update(api_token_hash=_token_hash(token)).where(User.id == user.id).execute()
    return token


def revoke_api_token(user: User) -> None:
    User.update(api_token_hash=None).where(User.id == user.id).execute()


def user_for_token(token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    return User.get_or_none((User.api_token_hash == _token_hash(token)) & User.active)


def user_by_name(username: str) -> User:
    found = User.get_or_none(User.username == username)
    if found is None:
        raise KeyturnError(f"no user named {username}")
    return found
