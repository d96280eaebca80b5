"""Console users: passwords (scrypt), TOTP enrolment with replay protection, API tokens.
Shared by `keyturn init`, `keyturn user` and the console, so every path hashes the same way."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno
from email_validator import EmailNotValidError, validate_email
from werkzeug.security import check_password_hash, generate_password_hash

from controller.audit import audit
from controller.models import User
from controller.runtime import Controller
from shared.errors import KeyturnError
from shared.bounded import USERNAME

ROLES = ("admin", "auditor")
MIN_PASSWORD = 10
TOTP_ISSUER = "keyturn"
TOTP_PERIOD = 30
TOKEN_PREFIX = "kt_"
TOKEN_SCOPES = ("reveal",)      # `reveal`: the token reveals secrets without a TOTP code
# Checked against when a username is unknown, so a wrong name costs as long as a wrong password.
PASSWORD_HASH = "scrypt"      # werkzeug's scrypt at N=2^15, r=8, p=1: about 0.1 s a hash
_DUMMY_HASH = generate_password_hash("keyturn-dummy-password", method=PASSWORD_HASH)


def check_password(password: str) -> str:
    """`password` if a console user may have it (asked before hashing, so a prompt can ask
    again)."""
    if len(password) < MIN_PASSWORD:
        raise KeyturnError("password: too short (use at least %(min_length)s characters)",
                           min_length=MIN_PASSWORD)
    return password


def hash_password(password: str) -> str:
    """A slow salted hash (`PASSWORD_HASH`) that werkzeug can check."""
    return generate_password_hash(check_password(password), method=PASSWORD_HASH)


def authenticate(username: str, password: str) -> User | None:
    """The active user with this name and password, else None (in about constant time)."""
    user = User.get_or_none(User.username == username) if USERNAME.match(username) else None
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    return user if ok and user is not None and user.active else None


def existing_name(username: str) -> str | None:
    """`username` if it names a user, else None: what a failed sign-in may record (a password
    typed into the name field is never kept)."""
    if USERNAME.match(username) and User.select().where(User.username == username).exists():
        return username
    return None


def create_user(username: str, password: str, role: str, email: str | None = None) -> User:
    check_new_name(username)
    check_role(role)
    email = mail_address(email)
    created = User.create(username=username, password_hash=hash_password(password), role=role,
                          email=email)
    audit("user.add", f"user/{username}", after={"username": username, "role": role,
                                                  "email": email})
    return created


def check_new_name(username: str) -> None:
    """A name a new user may take (checked before anyone is asked for a password)."""
    if not USERNAME.match(username):
        raise KeyturnError("user name %(name)s is not valid (use 1-32 ASCII letters, "
                           "digits, _ . -, starting with a letter or _)", name=repr(username))
    if User.select().where(User.username == username).exists():
        raise KeyturnError("user %(name)s exists already", name=username)


def check_role(role: str) -> None:
    if role not in ROLES:
        raise KeyturnError("role %(role)s: one of %(roles)s", role=repr(role), roles=", ".join(ROLES))


def set_role(user: User, role: str) -> None:
    """A new role; the API token loses its scopes, which were granted for the old one."""
    check_role(role)
    User.update(role=role, api_token_scopes=None).where(User.id == user.id).execute()
    audit("user.role", f"user/{user.username}", before={"role": user.role},
          after={"role": role})


def mail_address(address: str | None) -> str | None:
    """An address for result mail, normalised, or None for none; refuses what is not one
    address (a CR/LF, a second address, a display name). Syntax only: no DNS lookup."""
    if not address:
        return None
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise KeyturnError("email: %(problem)s", problem=str(exc)) from None


def set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    user.save(only=[User.password_hash])


# ---- TOTP ---------------------------------------------------------------------------------

def new_totp_seed(ctl: Controller, user: User) -> str:
    """A fresh TOTP seed for an enrolment attempt, stored encrypted: a seed shown during an
    attempt that was not finished is never used again."""
    seed = pyotp.random_base32()
    user.totp_secret, user.totp_last_step = ctl.vault.encrypt(seed), 0
    user.save(only=[User.totp_secret, User.totp_last_step])
    return seed


def provisioning_uri(ctl: Controller, user: User) -> str:
    """The otpauth text of the user's current enrolment attempt."""
    return pyotp.TOTP(ctl.vault.decrypt(user.totp_secret)).provisioning_uri(
        name=user.username, issuer_name=TOTP_ISSUER)


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


def new_api_token(user: User, scopes: tuple[str, ...] = ()) -> str:
    """A fresh token replacing the user's previous one; only its hash is stored. `scopes`
    (`TOKEN_SCOPES`) let it do what otherwise needs a TOTP code; `reveal` is for admins."""
    for scope in scopes:
        if scope not in TOKEN_SCOPES:
            raise KeyturnError("scope %(scope)s: one of %(scopes)s", scope=repr(scope),
                               scopes=", ".join(TOKEN_SCOPES))
    if "reveal" in scopes and user.role != "admin":
        raise KeyturnError("scope reveal: %(name)s is not an admin", name=user.username)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    User.update(api_token_hash=_token_hash(token),
                api_token_scopes=" ".join(sorted(set(scopes))) or None).where(
        User.id == user.id).execute()
    audit("user.token", f"user/{user.username}",
          f"scope {' '.join(scopes)}" if scopes else "")
    return token


def token_scopes(user: User) -> frozenset[str]:
    return frozenset((user.api_token_scopes or "").split())


def revoke_api_token(user: User) -> None:
    User.update(api_token_hash=None, api_token_scopes=None).where(User.id == user.id).execute()
    audit("user.token_revoke", f"user/{user.username}")


def user_for_token(token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    return User.get_or_none((User.api_token_hash == _token_hash(token)) & User.active)


def user_by_name(username: str) -> User:
    found = User.get_or_none(User.username == username)
    if found is None:
        raise KeyturnError("no user named %(name)s", name=username)
    return found
