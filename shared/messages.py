"""The versioned message schema between the controller and the workers.

On the bus every message is an `Envelope`: routing facts in the clear (zone, record, attempt) and
the body sealed to the zone (`shared.zonecrypto`). Inside, secrets are `SecretStr`, so a repr,
a log line or an exception never shows them; only sealing serialises their values.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, SecretStr,
                      StringConstraints, ValidationError)

from shared.errors import KeyturnError
from shared.zonecrypto import Channel, SealError

SCHEMA_VERSION = 1
PLATFORMS = ("linux", "unix", "aix")
# Whole-string patterns: `\A...\Z`, so `.match` never lets a trailing newline through (`$` would).
ZONE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
# POSIX-portable user names (plus the `$` of machine accounts); no `:` or newline can reach chpasswd.
USERNAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")
ERROR_CODE = re.compile(r"\A[a-z][a-z0-9_]{0,63}\Z")

# Every number and string that crosses the bus is bounded: a message that does not fit is
# refused when it is parsed, before it can reach the database or a host.
MAX_ID = 2**63 - 1                       # ids fit a signed 64-bit column
MAX_SECRET = 16 * 1024                   # an RSA-4096 private key in PEM is ~3.3 KiB
EPOCH_MIN, EPOCH_MAX = 946_684_800.0, 7_258_118_400.0   # 2000-01-01 .. 2200-01-01 (UTC)


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    return text


def Text(max_length: int, *, line: bool = False):
    """A bounded string without NUL; `line`: without any control character either."""
    pattern = r"\A[^\x00-\x1f\x7f]*\Z" if line else None
    return Annotated[str, StringConstraints(max_length=max_length, pattern=pattern),
                     AfterValidator(_no_nul)]


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Attempt = Annotated[int, Field(ge=1, le=1000)]
Epoch = Annotated[float, Field(ge=EPOCH_MIN, le=EPOCH_MAX, allow_inf_nan=False)]
ZoneName = Annotated[str, Field(pattern=ZONE_NAME.pattern)]
Username = Annotated[str, Field(pattern=USERNAME.pattern)]
ErrorCode = Annotated[str, Field(pattern=ERROR_CODE.pattern)]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=MAX_SECRET), AfterValidator(
    lambda value: SecretStr(_no_nul(value.get_secret_value()))),
    PlainSerializer(lambda value: value.get_secret_value(), when_used="json")]
Status = Literal["success", "failed", "unverified"]


class BadMessage(KeyturnError):
    """A message that does not parse, has an unknown version, or cannot be opened."""


class _Strict(BaseModel):
    # python-re: the patterns above use `\A`/`\Z`, which the default (Rust) engine lacks.
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


class AssetTarget(_Strict):
    name: Text(128, line=True)
    address: Text(255, line=True)
    port: int = Field(ge=1, le=65535)
    platform: Literal["linux", "unix", "aix"]
    host_key: Text(16 * 1024, line=True) | None = None   # pinned OpenSSH public key line; None: not pinned yet
    trust_first_use: bool = False        # may a worker accept and report an unpinned key?


class Params(_Strict):
    """Per-plan parameters for UNIX, AIX and Linux assets (the seed product's, plus how to
    become root and the SSH timeout). Secrets never live here; `become_secret` travels sealed."""

    become: Literal["auto", "sudo", "su", "none"] = "auto"   # auto: root logs in as root, else sudo
    become_secret: Secret | None = None      # su: root's password (from the asset's root account)
    create_user: bool = False                # create the account when it does not exist
    shell: Text(255, line=True) | None = None   # default /bin/bash (/usr/bin/ksh on AIX)
    home: Text(1024, line=True) | None = None   # default /home/<user>
    group: Text(64, line=True) | None = None
    groups: list[Text(64, line=True)] = Field(default=[], max_length=64)
    uid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    modify_sudo: bool = False                # install a sudoers line for the account
    sudo_commands: list[Text(1024, line=True)] = Field(default=["/bin/whoami"], max_length=64)
    key_strategy: Literal["add", "set", "set_managed"] = "set_managed"   # ssh_key secrets


class RotateCommand(_Strict):
    """Rotate (or, with action `verify`, test) one account's secret on one asset."""

    v: Literal[1] = SCHEMA_VERSION
    action: Literal["rotate", "verify"] = "rotate"
    record_id: Id
    attempt: Attempt
    zone: ZoneName
    asset: AssetTarget
    login_username: Username
    login_secrets: list[Secret] = Field(min_length=1, max_length=4)   # current first, then pending
    login_secret_type: Literal["password", "ssh_key"] = "password"
    username: Username
    secret_type: Literal["password", "ssh_key"] = "password"
    new_secret: Secret | None = None     # rotate: the value to set
    old_secret: Secret | None = None     # rotate: the secret we hold as current (None: unknown)
    candidates: list[Secret] = Field(default=[], max_length=4)   # verify: the values to try
    params: Params = Params()
    timeout: float = Field(default=15.0, gt=0, le=600)
    # The command's validity (controller clock, epoch seconds): no worker sends anything that
    # may change a secret after it, and the account is not rotated again until it has passed
    # (see `controller.planning.command_expiry`), so a replayed copy can never set a secret
    # that is not the controller's intent.
    not_after: Epoch


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
    started_at: Epoch
    finished_at: Epoch


class Heartbeat(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    worker_id: Text(255, line=True)
    zone: ZoneName
    host: Text(255, line=True)
    version: Text(64, line=True)
    in_flight: int = Field(ge=0, le=1_000_000)
    sent_at: Epoch


class Envelope(_Strict):
    """What travels on the bus: routing facts in the clear, the body sealed."""

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["rotate", "result", "heartbeat"]
    zone: ZoneName
    record_id: Id | None = None
    attempt: Attempt | None = None
    box: Annotated[str, Field(max_length=1024 * 1024)]


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
