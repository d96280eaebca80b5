"""Signed requests from integrations on the `keyturn.requests` queue (the wire format is in the
README, "Driving keyturn over the bus").

A message is a JSON object `{"integration", "payload", "signature"}`: `payload` is a string
holding the request as JSON, and `signature` the base64 Ed25519 signature of exactly the UTF-8
bytes of that string, so nobody has to agree on a JSON canonical form. A request is acted on
only if it is signed by the named, active integration's key, issued no later than now (give or
take `KEYTURN_CLOCK_SKEW`), not expired, valid for at most `KEYTURN_REQUEST_MAX_VALIDITY`,
never seen before (its id is kept until it expires, and taken in the transaction that acts),
within the integration's rate limit and inside its scopes. Anything else is refused: audited,
announced as `io.keyturn.request.refused`, answered, and dead-lettered, with nothing done.

The actions go through the console's own code (planning, verify) with its rules (secure mode,
one rotation per account); progress follows as events. Neither a request nor a reply carries
a secret."""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from peewee import IntegrityError
from pydantic import BaseModel, Field, ValidationError, model_validator

from controller import events
from controller.audit import audit
from controller.db import database
from controller.integrations import (account_in_scope, plan_in_scope, principal, scopes,
                                     signature_valid)
from controller.models import (Account, Asset, Execution, Integration, Plan,
                               RequestSeen, utcnow)
from controller.planning import account_rows, start_execution, under_node
from controller.runtime import Controller
from shared.broker import REQUESTS_QUEUE  # noqa: F401 - the queue this module serves
from shared.bounded import EPOCH_MAX, EPOCH_MIN, STRICT, ZONE_NAME, Id, Text, Username
from shared.errors import KeyturnError
from shared.messages import first_error
from shared.platforms import SecretType

logger = logging.getLogger(__name__)
MAX_MESSAGE = 64 * 1024
MAX_ACCOUNTS = 1000
IntegrationName = Annotated[str, Field(pattern=ZONE_NAME.pattern)]
RequestId = Annotated[str, Field(pattern=r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")]
EpochSeconds = Annotated[int, Field(ge=int(EPOCH_MIN), le=int(EPOCH_MAX))]
RATE_WINDOW = timedelta(minutes=1)
UNVOUCHED_PER_MINUTE = 120
REASON_CHARS = 300


class Refusal(KeyturnError):
    """Why a request is not acted on (said to the sender, audited)."""


class _Strict(BaseModel):
    model_config = STRICT


class Wire(_Strict):
    integration: IntegrationName
    payload: Text(MAX_MESSAGE)
    signature: Text(128, line=True)


class AccountRef(_Strict):
    asset: Text(128, line=True)
    username: Username


class Request(_Strict):
    """The signed payload. `rotate` and `verify` name `accounts`, or a `node` and `usernames`;
    `run_plan` a `plan`; `status` an `execution`."""

    v: Literal[1]
    integration: IntegrationName
    id: RequestId
    time: EpochSeconds
    expires: EpochSeconds
    action: Literal["rotate", "verify", "run_plan", "status"]
    accounts: list[AccountRef] | None = None
    node: Text(512, line=True) | None = None
    usernames: list[Username] | None = None
    plan: Text(128, line=True) | None = None
    execution: Id | None = None

    @model_validator(mode="after")
    def _fields_of_its_action(self):
        given = {name for name in ("accounts", "node", "usernames", "plan", "execution")
                 if getattr(self, name) is not None}
        wanted = {"rotate": [{"accounts"}, {"node", "usernames"}],
                  "verify": [{"accounts"}, {"node", "usernames"}],
                  "run_plan": [{"plan"}], "status": [{"execution"}]}[self.action]
        if given not in wanted:
            raise ValueError(f"{self.action} takes " + " or ".join(
                " and ".join(sorted(names)) for names in wanted))
        for name in ("accounts", "usernames"):
            value = getattr(self, name)
            if value is not None and not 1 <= len(value) <= MAX_ACCOUNTS:
                raise ValueError(f"{name}: 1 to {MAX_ACCOUNTS} entries")
        return self


class RequestHandler:
    """`parse` and `apply` of the requests queue's `BatchConsumer` (one request per batch: each
    acts in its own transaction, and its reply follows its commit)."""

    def __init__(self, ctl: Controller):
        self.ctl = ctl

    def parse(self, delivery):
        return delivery

    def apply(self, deliveries: list) -> dict[int, str]:
        refused = {}
        for index, delivery in enumerate(deliveries):
            answer = handle(self.ctl, delivery.body, delivery.redelivered)
            delivery.reply(answer)
            if answer["outcome"] != "accepted":
                refused[index] = f"request refused: {answer['reason']}"
        return refused


def handle(ctl: Controller, body: bytes, redelivered: bool = False) -> dict:
    """Check and act on one request message; returns the reply."""
    integration = request = None
    vouched = False
    try:
        wire = parse_wire(body)
        integration = Integration.get_or_none(Integration.name == wire.integration)
        if integration is None:
            raise Refusal("unknown integration")
        if not integration.active:
            raise Refusal("the integration is disabled")
        payload = wire.payload.encode()   # pydantic's JSON parser refuses lone surrogates
        if not signature_valid(integration, payload, decode_signature(wire.signature)):
            raise Refusal("bad signature")
        vouched = True
        request = parse_request(payload)
        if request.integration != integration.name:
            raise Refusal("the payload names another integration")
        check_times(ctl, request)
    except Refusal as refusal:
        return refuse(integration, request, str(refusal), vouched)
    return act(ctl, integration, request, hashlib.sha256(payload).hexdigest(), redelivered)


def parse_wire(body: bytes) -> Wire:
    if len(body) > MAX_MESSAGE:
        raise Refusal(f"malformed: larger than {MAX_MESSAGE} bytes")
    try:
        return Wire.model_validate_json(body)
    except ValidationError as exc:
        raise Refusal(f"malformed: {first_error(exc)}") from None


def decode_signature(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("bad signature") from None


def parse_request(payload: bytes) -> Request:
    try:
        return Request.model_validate_json(payload)
    except ValidationError as exc:
        raise Refusal(f"malformed payload: {first_error(exc)}") from None


def check_times(ctl: Controller, request: Request) -> None:
    now = time.time()
    skew = ctl.settings.clock_skew
    if request.time > now + skew:
        raise Refusal("issued in the future (check the sender's clock)")
    if request.expires <= now:
        raise Refusal("expired")
    if request.expires - request.time > ctl.settings.request_max_validity:
        raise Refusal(f"valid for longer than {ctl.settings.request_max_validity} s "
                      f"(KEYTURN_REQUEST_MAX_VALIDITY)")


def act(ctl: Controller, integration: Integration, request: Request, digest: str,
        redelivered: bool) -> dict:
    """Take the request's id and act, in one transaction: a second copy finds the id taken."""
    expires = datetime.fromtimestamp(request.expires + ctl.settings.clock_skew,
                                     timezone.utc).replace(tzinfo=None)
    with database.atomic():
        recent = RequestSeen.select().where((RequestSeen.integration == integration)
                                            & (RequestSeen.seen_at > utcnow() - RATE_WINDOW)).count()
        try:
            with database.atomic():
                seen = RequestSeen.create(integration=integration, request_id=request.id,
                                          digest=digest, expires_at=expires)
        except IntegrityError:
            seen = None
        if seen is None:
            earlier = RequestSeen.get((RequestSeen.integration == integration)
                                      & (RequestSeen.request_id == request.id))
            if redelivered and earlier.digest == digest and earlier.reply:
                return earlier.reply        # RabbitMQ gave us our own message again
            return refuse(integration, request, "replayed: this request id was seen before")
        try:
            if recent >= integration.rate_limit:
                raise Refusal(f"rate limit: at most {integration.rate_limit} requests a minute")
            with database.atomic():         # a refusal half-way leaves nothing behind
                answer = perform(ctl, integration, request)
        except KeyturnError as refusal:     # ours, or planning's (an operator's error text)
            answer = refuse(integration, request, str(refusal))
        else:
            audit("request.accepted", f"request/{request.id}", actor=principal(integration),
                  detail=f"{request.action}"
                                     + (f": execution {answer['execution']}"
                                        if "execution" in answer else ""))
        seen.reply = answer
        seen.save(only=[RequestSeen.reply])
        Integration.update(last_used_at=utcnow()).where(Integration.id == integration.id).execute()
    return answer


class Budget:
    """How many refusals of messages no key vouches for (forged, unknown, malformed) are
    audited and announced a minute. Past it (a flood from anyone with bus access) they are
    still answered and dead-lettered, and counted in one audit line when the minute ends, so a
    flood fills neither the audit log nor the outbox. Per process."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window_end = 0.0
        self._used = self._over = 0

    def take(self) -> bool:
        """True: audit this refusal one by one."""
        with self._lock:
            now = time.monotonic()
            if now >= self._window_end:
                over, self._over, self._used = self._over, 0, 0
                self._window_end = now + 60
                if over:
                    audit("request.refused", "request/?", f"{over} more messages no key "
                          f"vouches for were refused in a minute, not recorded one by one",
                          actor="integration:?", refused=True)
            self._used += 1
            if self._used > self.per_minute:
                self._over += 1
                return False
            return True


UNVOUCHED = Budget(UNVOUCHED_PER_MINUTE)


def refuse(integration: Integration | None, request: Request | None, reason: str,
           vouched: bool = True) -> dict:
    """Audit and announce a refusal; returns the reply. Not `vouched`: no valid signature
    stands behind the message, so it is recorded only within the `UNVOUCHED` budget."""
    reason = reason[:REASON_CHARS]
    name = integration.name if integration is not None else None
    request_id = request.id if request is not None else None
    action = request.action if request is not None else None
    answer = {"request": request_id, "outcome": "refused", "reason": reason}
    if not vouched and not UNVOUCHED.take():
        return answer
    with database.atomic():
        audit("request.refused", f"request/{request_id or '?'}",
              f"{action or 'unknown action'}: {reason}", actor=f"integration:{name or '?'}",
              refused=True)
        events.request_refused(name, request_id, action, reason)
    logger.warning("refused a request (integration %s, id %s): %s", name or "?",
                   request_id or "?", reason)
    return answer


def perform(ctl: Controller, integration: Integration, request: Request) -> dict:
    held = scopes(integration, request.action)
    if not held:
        raise Refusal(f"{request.action} is not allowed for this integration")
    started_by = principal(integration)
    if request.action == "status":
        return {"request": request.id} | status(integration, held, request.execution)
    if request.action == "run_plan":
        plan = Plan.get_or_none(Plan.name == request.plan)
        if plan is None or not plan_in_scope(held, plan.name):
            raise Refusal(f"plan {request.plan} is not in this integration's scope")
        execution = start_execution(ctl, plan, trigger="api", started_by=started_by)
        return accepted(request, execution)
    rows = requested_accounts(request)
    outside = [row for row in rows if not account_in_scope(held, row)]
    if outside:
        raise Refusal(f"{len(outside)} of the accounts are not in this integration's scope")
    if request.action == "verify":
        from controller.actions import verify_accounts

        accounts = list(Account.select(Account, Asset).join(Asset).where(
            Account.id.in_([row.id for row in rows])))
        return accepted(request, verify_accounts(ctl, accounts, started_by))
    rules = Plan(name=f"request {request.id}"[:128],
                 usernames=sorted({row.username for row in rows}))
    return accepted(request, start_execution(ctl, rules, trigger="api", started_by=started_by,
                                             accounts=rows))


def requested_accounts(request: Request) -> list:
    """The accounts a rotate or verify names (password accounts), all of which must exist."""
    if request.accounts is not None:
        pairs = {(ref.asset, ref.username) for ref in request.accounts}
        condition = None
        for asset, username in pairs:
            one = (Asset.name == asset) & (Account.username == username)
            condition = one if condition is None else condition | one
        rows = account_rows(condition & (Account.secret_type == SecretType.PASSWORD))
        missing = len(pairs) - len(rows)
        if missing:
            raise Refusal(f"{missing} of the accounts do not exist (or have no password)")
        return rows
    rows = account_rows(under_node(request.node) & Account.username.in_(request.usernames)
                        & (Account.secret_type == SecretType.PASSWORD))
    if not rows:
        raise Refusal(f"no password account {', '.join(request.usernames[:5])} under {request.node}")
    return rows


def status(integration: Integration, held: list, execution_id: int) -> dict:
    execution = Execution.get_or_none(Execution.id == execution_id)
    visible = execution is not None and (
        (None in held and execution.started_by == principal(integration))
        or plan_in_scope(held, execution.plan_name))
    if not visible:
        raise Refusal(f"execution {execution_id} is not in this integration's scope")
    return {"outcome": "accepted", "execution": execution.id, "state": {
        "status": execution.status, "total": execution.total, "succeeded": execution.succeeded,
        "failed": execution.failed, "unverified": execution.unverified,
        "skipped": execution.skipped}}


def accepted(request: Request, execution: Execution) -> dict:
    return {"request": request.id, "outcome": "accepted", "execution": execution.id}


def prune_seen() -> int:
    """Forget request ids past their expiry: a copy of one is refused as expired anyway."""
    return RequestSeen.delete().where(RequestSeen.expires_at < utcnow()).execute()
