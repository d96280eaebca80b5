"""The versioned message schema between the controller and the workers.

On the bus every message is an `Envelope`: routing facts in the clear (zone, record, attempt) and
the body sealed to the zone (`shared.zonecrypto`). Inside, secrets are `SecretStr`, so a repr,
a log line or an exception never shows them; only sealing serialises their values.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SecretStr, ValidationError

from shared.errors import KeyturnError
from shared.zonecrypto import Channel, SealError

SCHEMA_VERSION = 1
PLATFORMS = ("linux", "unix", "aix")
ZONE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# POSIX-portable user names (plus the `$` of machine accounts); no `:` or newline can reach chpasswd.
USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")

Secret = Annotated[SecretStr, PlainSerializer(lambda value: value.get_secret_value(), when_used="json")]
Status = Literal["success", "failed", "unverified"]


class BadMessage(KeyturnError):
    """A message that does not parse, has an unknown version, or cannot be opened."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetTarget(_Strict):
    name: str
    address: str
    port: int = Field(ge=1, le=65535)
    platform: Literal["linux", "unix", "aix"]
    host_key: str | None = None          # pinned OpenSSH public key line; None: not pinned yet
    trust_first_use: bool = False        # may a worker accept and report an unpinned key?


class Params(_Strict):
    """Per-plan parameters for UNIX, AIX and Linux assets (the seed product's, plus how to
    become root and the SSH timeout). Secrets never live here; `become_secret` travels sealed."""

    become: Literal["auto", "sudo", "su", "none"] = "auto"   # auto: root logs in as root, else sudo
    become_secret: Secret | None = None      # su: root's password (from the asset's root account)
    create_user: bool = False                # create the account when it does not exist
    shell: str | None = None                 # default /bin/bash (/usr/bin/ksh on AIX)
    home: str | None = None                  # default /home/<user>
    group: str | None = None
    groups: list[str] = []
    uid: int | None = Field(default=None, ge=0)
    modify_sudo: bool = False                # install a sudoers line for the account
    sudo_commands: list[str] = ["/bin/whoami"]
    key_strategy: Literal["add", "set", "set_managed"] = "set_managed"   # ssh_key secrets


class RotateCommand(_Strict):
    """Rotate (or, with action `verify`, test) one account's secret on one asset."""

    v: Literal[1] = SCHEMA_VERSION
    action: Literal["rotate", "verify"] = "rotate"
    record_id: int
    attempt: int = Field(ge=1)
    zone: str
    asset: AssetTarget
    login_username: str = Field(pattern=USERNAME.pattern)
    login_secrets: list[Secret] = Field(min_length=1)   # candidates: current first, then pending
    login_secret_type: Literal["password", "ssh_key"] = "password"
    username: str = Field(pattern=USERNAME.pattern)
    secret_type: Literal["password", "ssh_key"] = "password"
    new_secret: Secret | None = None     # rotate: the value to set
    old_secret: Secret | None = None     # rotate: the secret we hold as current (None: unknown)
    candidates: list[Secret] = []        # verify: the values to try
    params: Params = Params()
    timeout: float = Field(default=15.0, gt=0)


class RotateResult(_Strict):
    """What a worker learned. Never carries a secret."""

    v: Literal[1] = SCHEMA_VERSION
    record_id: int
    attempt: int
    zone: str
    worker_id: str
    status: Status
    error_code: str | None = None
    error: str | None = None
    host_key: str | None = None          # the key the asset presented (for pinning on first use)
    login_index: int | None = None       # which login candidate worked
    working_index: int | None = None     # verify: which candidate logs in (None: none did)
    started_at: float
    finished_at: float


class Heartbeat(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    worker_id: str
    zone: str
    host: str
    version: str
    in_flight: int
    sent_at: float


class Envelope(_Strict):
    """What travels on the bus: routing facts in the clear, the body sealed."""

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["rotate", "result", "heartbeat"]
    zone: str
    record_id: int | None = None
    attempt: int | None = None
    box: str


_KINDS = {"rotate": RotateCommand, "result": RotateResult, "heartbeat": Heartbeat}


def seal(kind: str, body: BaseModel, channel: Channel) -> dict:
    """Seal `body` into an envelope dict ready to be a dramatiq message argument (the fields of
    `Envelope`, built directly: every value here is ours, and this runs once per account)."""
    return {"v": SCHEMA_VERSION, "kind": kind, "zone": body.zone,
            "record_id": getattr(body, "record_id", None), "attempt": getattr(body, "attempt", None),
            "box": channel.seal(body.model_dump_json().encode())}


def parse_envelope(data: object) -> Envelope:
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        raise BadMessage(f"not a keyturn envelope: {first_error(exc)}") from None


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
