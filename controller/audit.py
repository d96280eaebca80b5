"""The audit log's one writer: every change by a person, token, integration or zone, every
reveal and every refused attempt goes through `audit`, with who, from where, on what, and the
non-secret fields before and after. Secrets never reach it: fields named like one are said
to have changed, never with their value."""
from __future__ import annotations

import getpass
from datetime import datetime

from flask import g, has_request_context, request

from controller.models import AuditEvent

SECRET_FIELDS = frozenset({"secret", "password", "secret_current", "secret_pending",
                           "secret_previous", "given_secret", "passphrase", "file_password",
                           "totp_secret", "api_token", "token", "code", "old_secret",
                           "new_secret", "become_secret"})
CHANGED = "(changed)"             # what the log says of a secret field that changed
MAX_TEXT = 255                    # of a target, actor or value: the log is bounded too
MAX_DETAIL = 2000


def audit(action: str, target: str, detail: str = "", *, before: dict | None = None,
          after: dict | None = None, actor: str | None = None, refused: bool = False) -> None:
    """Write one row. `actor` None: the signed-in user of the web request (`name (token)`
    for an API token), else the CLI's operator. Of `before` and `after` only the fields that
    differ are kept; a refused attempt gives its reason as `detail`."""
    before, after = differences(before, after)
    AuditEvent.create(actor=(actor or current_actor())[:128], action=action[:64],
                      target=target[:MAX_TEXT], detail=detail[:MAX_DETAIL],
                      address=client_address(), outcome="refused" if refused else "done",
                      before=before, after=after)


def current_actor() -> str:
    """Who is asking: the console's or API's user, or `cli:<login>` outside a request."""
    if has_request_context():
        from flask_login import current_user

        if current_user and current_user.is_authenticated:
            return current_user.username + (" (token)" if g.get("token_auth") else "")
        return "?"
    return cli_operator()


def cli_operator() -> str:
    return f"cli:{getpass.getuser()}"


def client_address() -> str | None:
    return request.remote_addr if has_request_context() else None


def differences(before: dict | None, after: dict | None) -> tuple[dict | None, dict | None]:
    """The fields whose values differ (all of them when one side is missing), secrets said
    only to have changed."""
    if before is None and after is None:
        return None, None
    old, new = before or {}, after or {}
    keys = [key for key in {**old, **new} if before is None or after is None
            or old.get(key) != new.get(key)]
    return (None if before is None else {key: shown(key, old.get(key)) for key in keys},
            None if after is None else {key: shown(key, new.get(key)) for key in keys})


def shown(key: str, value: object) -> object:
    if key in SECRET_FIELDS:
        return None if value is None else CHANGED
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + " …"
    return value
