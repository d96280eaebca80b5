"""The versioned message schema between the controller and the workers.

On the bus every message is an `Envelope`: routing facts in the clear (zone, record, attempt) and
the body sealed to the zone (`shared.zonecrypto`). Inside, secrets are `SecretStr`, so a repr,
a log line or an exception never shows them; only sealing serialises their values.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.bounded import STRICT, Attempt, Epoch, ErrorCode, Id, Secret, Text, ZoneName
from shared.errors import KeyturnError
from shared.platforms import PLATFORMS, SecretType, platform
from shared.zonecrypto import Channel, SealError

SCHEMA_VERSION = 1
MAX_SCHEMA_VERSION = 1000        # a bound for the versions a message may claim
MAX_BOX = 1024 * 1024            # characters of a sealed body
Status = Literal["success", "failed", "unverified"]


class BadMessage(KeyturnError):
    """A message that does not parse, has an unknown version, or cannot be opened."""


class _Strict(BaseModel):
    model_config = STRICT


class RotationLimits(_Strict):
    """Limits of the plan a command belongs to, which its worker honours beside the
    dispatcher: rotations in flight at once on its asset and in its zone, and new SSH
    connections per second in its zone."""

    asset_in_flight: int | None = Field(default=None, ge=1, le=1000)
    zone_in_flight: int | None = Field(default=None, ge=1, le=100_000)
    connects_per_second: float | None = Field(default=None, gt=0, le=10_000)


class AssetTarget(_Strict):
    name: Text(128, line=True)
    address: Text(255, line=True)
    port: int = Field(ge=1, le=65535)
    platform: Text(32, line=True)        # a name in shared.platforms.PLATFORMS
    host_key: Text(16 * 1024, line=True) | None = None   # pinned OpenSSH public key line; None: not pinned yet
    trust_first_use: bool = False        # may a worker accept and report an unpinned key?

    @field_validator("platform")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in PLATFORMS:
            raise ValueError(f"unknown platform (known: {', '.join(PLATFORMS)})")
        return name


class RotateCommand(_Strict):
    """Rotate (or, with action `verify`, test) one account's secret on one asset."""

    v: Literal[1] = SCHEMA_VERSION
    action: Literal["rotate", "verify"] = "rotate"
    record_id: Id
    attempt: Attempt
    zone: ZoneName
    asset: AssetTarget
    login_username: Text(80, line=True)
    login_secrets: list[Secret] = Field(min_length=1, max_length=4)   # current first, then pending
    login_secret_type: SecretType = SecretType.PASSWORD
    username: Text(80, line=True)
    secret_type: SecretType = SecretType.PASSWORD
    new_secret: Secret | None = None     # rotate: the value to set
    old_secret: Secret | None = None     # rotate: the secret we hold as current (None: unknown)
    candidates: list[Secret] = Field(default=[], max_length=4)   # verify: the values to try
    params: Any = None                   # the asset's platform's params model (validated below)
    # Secure mode: a connector that can see privilege on the target (a PostgreSQL superuser)
    # refuses to change such an account, beyond the names the controller already skips.
    secure_mode: bool = True
    # The controller saw this target refuse a random wrong secret of this secret type lately
    # (a result's `refusal_seen`, within a day): the worker need not check it again.
    refusal_known: bool = False
    timeout: float = Field(default=15.0, gt=0, le=600)
    limits: RotationLimits | None = None
    # The command's validity (controller clock, epoch seconds): no worker sends anything that
    # may change a secret after it, and the account is not rotated again until it has passed
    # (see `controller.planning.command_expiry`), so a replayed copy can never set a secret
    # that is not the controller's intent.
    not_after: Epoch

    @model_validator(mode="after")
    def _fits_its_platform(self) -> "RotateCommand":
        """The schema's union on `asset.platform`: that platform's account names, secret types
        and params model."""
        kind = platform(self.asset.platform)
        for field, name in (("username", self.username), ("login_username", self.login_username)):
            if not kind.account_name.match(name):
                raise ValueError(f"{field}: not {kind.account_rule}")
        if self.secret_type not in kind.secret_types:
            raise ValueError(f"secret_type: {kind.title} takes {', '.join(kind.secret_types)}")
        params = self.params
        if not isinstance(params, kind.params):
            params = kind.params.model_validate(params or {})
        object.__setattr__(self, "params", params)   # frozen: set once, while validating
        return self


class RotateResult(_Strict):
    """What a worker learned. Never carries a secret."""

    v: Literal[1] = SCHEMA_VERSION
    record_id: Id
    attempt: Attempt
    zone: ZoneName
    worker_id: Text(255, line=True)
    status: Status
    error_code: ErrorCode | None = None
    error: Text(4000) | None = None
    host_key: Text(16 * 1024, line=True) | None = None   # the key the asset presented (first use)
    login_index: int | None = Field(default=None, ge=0, le=3)     # which login candidate worked
    working_index: int | None = Field(default=None, ge=0, le=3)   # verify: which candidate logs in
    expired_not_after: Epoch | None = None   # error_code `expired`: the validity that had passed
    note: Text(300, line=True) | None = None  # what a person should know (how a change was kept)
    refusal_seen: bool = False    # the target refused a random wrong secret during this command
    started_at: Epoch
    finished_at: Epoch


class RotateProgress(_Strict):
    """A worker started a command: sent before it talks to the asset, so the execution log can
    say who picked the record up and the controller can tell a silent host from a command still
    waiting in its queue. Informational only: it never changes a record's status, so a replay,
    duplicate or late copy is harmless. Workers of earlier releases never send it. Never carries
    a secret."""

    v: Literal[1] = SCHEMA_VERSION
    record_id: Id
    attempt: Attempt
    zone: ZoneName
    worker_id: Text(255, line=True)
    stage: Literal["started"] = "started"
    at: Epoch                    # the worker's clock when it started the command


class Heartbeat(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    worker_id: Text(255, line=True)
    zone: ZoneName
    host: Text(255, line=True)
    version: Text(64, line=True)
    in_flight: int = Field(ge=0, le=1_000_000)
    sent_at: Epoch


class ForeignHeartbeat(BaseModel):
    """What a controller reads of a heartbeat of a schema version it does not speak: who the
    worker is and which schema it speaks (newer fields ignored), so the zones page can say so
    rather than drop its heartbeats. Sealed like any heartbeat: only the zone's key makes one."""

    model_config = ConfigDict(extra="ignore", frozen=True, regex_engine="python-re")
    v: int = Field(ge=1, le=MAX_SCHEMA_VERSION)
    worker_id: Text(255, line=True)
    zone: ZoneName
    host: Text(255, line=True)
    version: Text(64, line=True)


class ForeignEnvelope(BaseModel):
    """The envelope of a heartbeat of any schema version (the fields every version keeps)."""

    model_config = ConfigDict(extra="ignore", frozen=True, regex_engine="python-re")
    v: int = Field(ge=1, le=MAX_SCHEMA_VERSION)
    kind: Literal["heartbeat"]
    zone: ZoneName
    box: Annotated[str, Field(max_length=MAX_BOX)]


class Envelope(_Strict):
    """What travels on the bus: routing facts in the clear, the body sealed."""

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["rotate", "result", "progress", "heartbeat"]
    zone: ZoneName
    record_id: Id | None = None
    attempt: Attempt | None = None
    box: Annotated[str, Field(max_length=MAX_BOX)]


_KINDS = {"rotate": RotateCommand, "result": RotateResult, "progress": RotateProgress,
          "heartbeat": Heartbeat}


def seal(kind: str, body: BaseModel, channel: Channel) -> dict:
    """Seal `body` into an envelope dict ready to be a dramatiq message argument (the fields of
    `Envelope`, built directly: every value here is ours, and this runs once per account)."""
    return {"v": SCHEMA_VERSION, "kind": kind, "zone": body.zone,
            "record_id": getattr(body, "record_id", None), "attempt": getattr(body, "attempt", None),
            "box": channel.seal(body.model_dump_json(exclude=unset_later(body)).encode())}


# Fields added to a schema after some of its workers were released; left out while unset, so
# those workers (whose models forbid unknown fields) still open every message that has none.
LATER_FIELDS = ("limits",)


def unset_later(body: BaseModel) -> set[str]:
    return {name for name in LATER_FIELDS if getattr(body, name, ...) is None}


def parse_envelope(data: object) -> Envelope:
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        version = claimed_version(data)
        if version not in (None, SCHEMA_VERSION):
            raise BadMessage(f"message schema {version}: this keyturn speaks "
                             f"{SCHEMA_VERSION}") from None
        raise BadMessage(f"not a keyturn envelope: {first_error(exc)}") from None


def claimed_version(data: object) -> int | None:
    """The schema version a message says it has, if it says one within bounds."""
    version = data.get("v") if isinstance(data, dict) else None
    return version if type(version) is int and 1 <= version <= MAX_SCHEMA_VERSION else None


def open_foreign_heartbeat(data: object, channel_for_zone) -> ForeignHeartbeat:
    """A heartbeat of another schema version, opened with its zone's key (`channel_for_zone`
    looks it up); BadMessage unless it is one."""
    try:
        envelope = ForeignEnvelope.model_validate(data)
    except ValidationError as exc:
        raise BadMessage(f"not a heartbeat of another schema: {first_error(exc)}") from None
    if envelope.v == SCHEMA_VERSION:
        raise BadMessage("not a heartbeat of another schema")
    try:
        body = ForeignHeartbeat.model_validate_json(channel_for_zone(envelope.zone).open(envelope.box))
    except SealError as exc:
        raise BadMessage(str(exc)) from None
    except ValidationError as exc:
        raise BadMessage(f"bad heartbeat of schema {envelope.v}: {first_error(exc)}") from None
    if (body.zone, body.v) != (envelope.zone, envelope.v):
        raise BadMessage("envelope routing does not match its sealed body")
    return body


def open_envelope(envelope: Envelope, channel: Channel):
    """Open and validate the body; the clear routing facts must match the sealed ones."""
    try:
        body = _KINDS[envelope.kind].model_validate_json(channel.open(envelope.box))
    except SealError as exc:
        raise BadMessage(str(exc)) from None
    except ValidationError as exc:
        raise BadMessage(f"bad {envelope.kind} body: {first_error(exc)}") from None
    if body.zone != envelope.zone or getattr(body, "record_id", None) != envelope.record_id:
        raise BadMessage("envelope routing does not match its sealed body")
    return body


def first_error(exc: ValidationError) -> str:
    """Name the field and the problem, never the (possibly secret) input value."""
    error = exc.errors(include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "message"
    return f"{where}: {error['msg']}"
