"""Integrations: other systems as principals of their own. Each has an Ed25519 public key (its
requests are signed with the private key, which never leaves it), the actions it may ask for,
each limited to a scope, a rate limit and an active flag. Every change is audited.

A grant is `ACTION[:SCOPE]`: `rotate` and `verify` take `asset:NAME`, `node:/PATH` (that node
and below), `zone:NAME` or `*`; `run_plan` takes `plan:NAME` or `*`; `status` takes
`plan:NAME` or `*`, and without a scope sees the executions the integration started."""
from __future__ import annotations

import base64
import binascii

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from controller.audit import audit
from controller.db import database
from controller.models import Integration
from shared.bounded import ZONE_NAME
from shared.errors import KeyturnError

NAME = ZONE_NAME        # as `keyturn broker-account integration NAME` takes it (no dots)
ACTIONS = ("rotate", "verify", "run_plan", "status")
SCOPE_KINDS = {"rotate": ("asset", "node", "zone"), "verify": ("asset", "node", "zone"),
               "run_plan": ("plan",), "status": ("plan",)}
MAX_GRANTS = 64
MAX_SCOPE = 512
MAX_RATE = 10_000


class IntegrationError(KeyturnError):
    """A bad name, key or grant."""


def principal(integration: Integration) -> str:
    """How an integration appears as an actor (audit) and as `started_by` (executions)."""
    return f"integration:{integration.name}"


# ---- keys ---------------------------------------------------------------------------------

def keygen() -> tuple[str, str]:
    """A new key pair for the other side: (private seed, public key), both base64."""
    key = SigningKey.generate()
    return (base64.b64encode(bytes(key)).decode(),
            base64.b64encode(bytes(key.verify_key)).decode())


def verify_key(text: str) -> VerifyKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrationError("public key: not base64") from None
    if len(raw) != 32:
        raise IntegrationError("public key: an Ed25519 public key is 32 bytes (base64, 44 characters)")
    return VerifyKey(raw)


def signing_key(text: str) -> SigningKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrationError("private key: not base64") from None
    if len(raw) != 32:
        raise IntegrationError("private key: an Ed25519 private key (seed) is 32 bytes")
    return SigningKey(raw)


def signature_valid(integration: Integration, payload: bytes, signature: bytes) -> bool:
    try:
        verify_key(integration.public_key).verify(payload, signature)
        return True
    except (BadSignatureError, ValueError, IntegrationError):
        return False


# ---- grants -------------------------------------------------------------------------------

def parse_grant(text: str) -> dict:
    """`ACTION[:KIND:VALUE]` or `ACTION:*` as {"action": ..., "scope": "kind:value" | "*" | None}."""
    action, _, scope = (text or "").strip().partition(":")
    if action not in ACTIONS:
        raise IntegrationError("grant %(grant)s: the action is one of %(actions)s",
                               grant=repr(text[:80]), actions=", ".join(ACTIONS))
    if not scope:
        if action != "status":
            raise IntegrationError("grant %(grant)s: %(action)s needs a scope (%(scopes)s or *)",
                                   grant=repr(text[:80]), action=action,
                                   scopes=", ".join(k + ":..." for k in SCOPE_KINDS[action]))
        return {"action": action, "scope": None}
    if scope == "*":
        return {"action": action, "scope": "*"}
    kind, _, value = scope.partition(":")
    if kind not in SCOPE_KINDS[action] or not value or len(value) > MAX_SCOPE \
            or not value.isprintable():
        raise IntegrationError("grant %(grant)s: %(action)s takes a scope of %(scopes)s or *",
                               grant=repr(text[:80]), action=action,
                               scopes=", ".join(k + ":NAME" for k in SCOPE_KINDS[action]))
    if kind == "node" and not value.startswith("/"):
        raise IntegrationError("grant %(grant)s: a node is a path such as /prod/web",
                               grant=repr(text[:80]))
    return {"action": action, "scope": f"{kind}:{value}"}


def grant_text(grant: dict) -> str:
    return grant["action"] + (f":{grant['scope']}" if grant["scope"] else "")


def scopes(integration: Integration, action: str) -> list[str | None]:
    """The scopes the integration holds for `action` (empty: not allowed at all)."""
    return [g["scope"] for g in integration.grants if g["action"] == action]


def account_in_scope(held: list[str | None], row) -> bool:
    """Whether an account row (`planning.account_rows`) is inside one of the scopes."""
    node = row.node_path or ""
    for scope in held:
        kind, _, value = (scope or "").partition(":")
        if (scope == "*" or (kind == "asset" and value == row.asset_name)
                or (kind == "zone" and value == row.zone)
                or (kind == "node" and (node == value or node.startswith(value.rstrip("/") + "/")))):
            return True
    return False


def plan_in_scope(held: list[str | None], plan_name: str) -> bool:
    return any(scope == "*" or scope == f"plan:{plan_name}" for scope in held)


# ---- the registry -------------------------------------------------------------------------

def add_integration(name: str, public_key: str, grants: list[str], rate_limit: int,
                    actor: str) -> Integration:
    if not NAME.match(name or ""):
        raise IntegrationError("name: 1-63 lower-case letters, digits, '_' or '-'")
    verify_key(public_key)
    if not grants or len(grants) > MAX_GRANTS:
        raise IntegrationError("give 1 to %(most)s grants (--allow ACTION[:SCOPE])", most=MAX_GRANTS)
    parsed = [parse_grant(text) for text in grants]
    if not 1 <= rate_limit <= MAX_RATE:
        raise IntegrationError("rate limit: 1 to %(most)s requests per minute", most=MAX_RATE)
    if Integration.get_or_none(Integration.name == name):
        raise IntegrationError("an integration named %(name)s exists", name=name)
    with database.atomic():
        created = Integration.create(name=name, public_key=public_key.strip(), grants=parsed,
                                     rate_limit=rate_limit)
        audit("integration.add", f"integration/{name}", actor=actor,
              detail=", ".join(grant_text(g) for g in parsed) + f"; {rate_limit} per minute")
    return created


def integration_by_name(name: str) -> Integration:
    found = Integration.get_or_none(Integration.name == name)
    if found is None:
        raise IntegrationError("no integration named %(name)s", name=name)
    return found


def set_active(name: str, active: bool, actor: str) -> Integration:
    found = integration_by_name(name)
    found.active = active
    found.save(only=[Integration.active])
    audit("integration.enable" if active else "integration.disable", f"integration/{name}",
          actor=actor)
    return found
