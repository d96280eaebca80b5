"""The controller's data model (peewee). Secret columns hold `controller.vault` ciphertext only."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import peewee as pw

from controller.db import database
from shared.platforms import DEFAULT_PLATFORM, RecordStatus, SecretType


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class JSONField(pw.TextField):
    """JSON in a text column, portable across SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database


class SchemaVersion(BaseModel):
    version = pw.IntegerField()


class Zone(BaseModel):
    name = pw.CharField(unique=True, max_length=63)
    public_key = pw.CharField(null=True)          # base64 Curve25519; None: zone cannot be used yet
    trust_first_use = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)


class Node(BaseModel):
    """A folder of the asset tree, named by its path (`/prod/web`)."""

    path = pw.CharField(unique=True, max_length=512)


class Asset(BaseModel):
    name = pw.CharField(unique=True, max_length=128)
    address = pw.CharField(max_length=255)
    port = pw.IntegerField(default=22)
    platform = pw.CharField(max_length=16, default=DEFAULT_PLATFORM)
    zone = pw.ForeignKeyField(Zone, backref="assets", on_delete="RESTRICT")
    node = pw.ForeignKeyField(Node, backref="assets", null=True, on_delete="SET NULL")
    host_key = pw.TextField(null=True)            # pinned OpenSSH public key line
    params = JSONField(default=dict)              # its platform's params (a plan's win over them)
    refusals = JSONField(null=True)               # secret type -> when it refused a wrong one (epoch)
    created_at = pw.DateTimeField(default=utcnow)


class Account(BaseModel):
    """A user on an asset with its secret versions: current, pending (in rotation) and previous."""

    asset = pw.ForeignKeyField(Asset, backref="accounts", on_delete="CASCADE")
    username = pw.CharField(max_length=64)
    secret_type = pw.CharField(max_length=16, default=SecretType.PASSWORD)
    privileged = pw.BooleanField(default=False)
    secret_current = pw.BlobField(null=True)
    secret_pending = pw.BlobField(null=True)
    secret_previous = pw.BlobField(null=True)
    current_since = pw.DateTimeField(null=True)
    pending_since = pw.DateTimeField(null=True)
    previous_since = pw.DateTimeField(null=True)
    busy_execution = pw.IntegerField(null=True, index=True)   # the execution rotating it now (one at a time)

    class Meta:
        # (username, id): the records page's "accounts named u007" is read from the index
        # alone, not from 20,000 rows all over the table.
        indexes = ((("asset", "username"), True), (("username", "id"), False))


class Plan(BaseModel):
    name = pw.CharField(unique=True, max_length=128)
    usernames = JSONField(default=list)
    strategy = pw.CharField(max_length=16, default="random")          # random | specific
    secret_type = pw.CharField(max_length=16, default=SecretType.PASSWORD)   # a SecretType
    key_type = pw.CharField(max_length=16, default="ed25519")            # ssh_key: ed25519 | rsa
    given_secret = pw.BlobField(null=True)                             # strategy "specific"
    length = pw.IntegerField(default=16)
    lowercase = pw.BooleanField(default=True)
    uppercase = pw.BooleanField(default=True)
    digits = pw.BooleanField(default=True)
    symbols = pw.BooleanField(default=True)
    exclude_symbols = pw.CharField(default="", max_length=64)
    params = JSONField(default=dict)                                   # any platform's params
    ssh_timeout = pw.FloatField(null=True)                             # None: KEYTURN_SSH_TIMEOUT
    interval_hours = pw.IntegerField(null=True)
    crontab = pw.CharField(null=True, max_length=128)
    next_run_at = pw.DateTimeField(null=True, index=True)
    recipients = JSONField(default=list)
    active = pw.BooleanField(default=True)
    rollout = JSONField(null=True)    # waves, brake, window, limits (`controller.rollout`)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class PlanAsset(BaseModel):
    plan = pw.ForeignKeyField(Plan, backref="asset_links", on_delete="CASCADE")
    asset = pw.ForeignKeyField(Asset, on_delete="CASCADE")

    class Meta:
        indexes = ((("plan", "asset"), True),)


class PlanNode(BaseModel):
    plan = pw.ForeignKeyField(Plan, backref="node_links", on_delete="CASCADE")
    node = pw.ForeignKeyField(Node, on_delete="CASCADE")

    class Meta:
        indexes = ((("plan", "node"), True),)


class Execution(BaseModel):
    plan = pw.ForeignKeyField(Plan, backref="executions", null=True, on_delete="SET NULL")
    plan_name = pw.CharField(max_length=128)            # kept when the plan is deleted
    trigger = pw.CharField(max_length=16, default="manual")   # manual | schedule | retry | api
    started_by = pw.CharField(max_length=128, default="cli")
    retry_of = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    # running | paused | success | failed | empty | cancelled
    status = pw.CharField(max_length=16, default="running", index=True)
    created_at = pw.DateTimeField(default=utcnow, index=True)
    finished_at = pw.DateTimeField(null=True)
    notified_at = pw.DateTimeField(null=True, index=True)       # result mail handled (or claimed)
    total = pw.IntegerField(default=0)
    succeeded = pw.IntegerField(default=0)
    failed = pw.IntegerField(default=0)
    unverified = pw.IntegerField(default=0)
    skipped = pw.IntegerField(default=0)
    rollout = JSONField(null=True)      # its plan's rollout when it started, waves as counts
    wave = pw.IntegerField(default=0)   # the last wave opened to the dispatcher (1-based)
    paused_by = pw.CharField(max_length=16, null=True)    # brake | operator | window
    pause_reason = pw.TextField(null=True)

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.unverified


class LogLine(BaseModel):
    execution = pw.ForeignKeyField(Execution, backref="log_lines", on_delete="CASCADE")
    at = pw.DateTimeField(default=utcnow)
    level = pw.CharField(max_length=8, default="info")
    message = pw.TextField()
    # The record a line is about (None: the execution's own), so the page can show one
    # account's story out of a 10,000-account log. A plain id: lines outlive nothing.
    record = pw.IntegerField(null=True, index=True)


class Record(BaseModel):
    """One account's rotation inside an execution. Old and new secret are set before dispatch."""

    execution = pw.ForeignKeyField(Execution, backref="records", on_delete="CASCADE")
    # None once the account was deleted: the history stays, with the names it had then.
    account = pw.ForeignKeyField(Account, backref="records", null=True, on_delete="SET NULL",
                                 index=False)           # (account, execution) below
    asset_name = pw.CharField(max_length=128, null=True)       # set when the account is deleted
    account_name = pw.CharField(max_length=64, null=True)
    retry_of = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    action = pw.CharField(max_length=8, default="rotate")          # rotate | verify
    status = pw.CharField(max_length=16, default=RecordStatus.PENDING, index=True)
    old_secret = pw.BlobField(null=True)
    new_secret = pw.BlobField(null=True)
    error_code = pw.CharField(max_length=32, null=True)
    error = pw.TextField(null=True)
    worker_id = pw.CharField(max_length=128, null=True)
    attempt = pw.IntegerField(default=1)               # dispatches so far (the reaper re-dispatches)
    created_at = pw.DateTimeField(default=utcnow)
    dispatched_at = pw.DateTimeField(null=True)
    deadline = pw.DateTimeField(null=True, index=True)
    started_at = pw.DateTimeField(null=True)      # a worker picked it up (progress), then its result's
    finished_at = pw.DateTimeField(null=True)
    silent_at = pw.DateTimeField(null=True)       # its "no result past the timeout" line was written
    ignored = pw.BooleanField(default=False)
    wave = pw.IntegerField(null=True)                 # its wave (1-based); None: no waves

    class Meta:
        # The records of some accounts (in a plan's executions) counted from the index alone.
        indexes = ((("account", "execution"), False),)

    def names(self) -> tuple[str, str]:
        """(asset, account) it rotated: its account's now, or those kept at its deletion (the
        account and asset must have been selected with it)."""
        if self.account_id is None:
            return self.asset_name or "?", self.account_name or "?"
        return self.account.asset.name, self.account.username


class User(BaseModel):
    """A console/API user. Secrets of the user (TOTP seed, file password) are vault ciphertext."""

    username = pw.CharField(unique=True, max_length=64)
    email = pw.CharField(null=True, max_length=255)
    role = pw.CharField(max_length=16, default="auditor")        # admin | auditor
    password_hash = pw.CharField(max_length=255)
    totp_secret = pw.BlobField(null=True)
    totp_enrolled = pw.BooleanField(default=False)
    totp_last_step = pw.BigIntegerField(default=0)               # replay protection
    api_token_hash = pw.CharField(null=True, max_length=128, index=True)
    api_token_scopes = pw.CharField(null=True, max_length=64)   # users.TOKEN_SCOPES, spaced
    file_password = pw.BlobField(null=True)                      # opens mailed result archives
    language = pw.CharField(null=True, max_length=16)   # the console's; None: the browser's
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)


class AuditEvent(BaseModel):
    """A change, reveal or refused attempt by a person, token or process (`controller.audit`)."""

    at = pw.DateTimeField(default=utcnow, index=True)
    actor = pw.CharField(max_length=128)
    action = pw.CharField(max_length=64)
    target = pw.CharField(max_length=255)
    detail = pw.TextField(default="")
    address = pw.CharField(max_length=64, null=True)       # the client's, for a web request
    outcome = pw.CharField(max_length=8, default="done")   # done | refused (detail: why)
    before = JSONField(null=True)                          # the non-secret fields it changed
    after = JSONField(null=True)


class OutboxEvent(BaseModel):
    """An event written in the same transaction as the change it reports, and relayed to the
    `keyturn.events` exchange by the daemon afterwards, so no event is lost or invented."""

    at = pw.DateTimeField(default=utcnow)
    routing_key = pw.CharField(max_length=64)     # the CloudEvents type (`controller.events`)
    body = JSONField()                            # its data
    subject = pw.CharField(max_length=255, null=True)
    relayed_at = pw.DateTimeField(null=True, index=True)   # confirmed by RabbitMQ
    claimed_until = pw.DateTimeField(null=True)   # a relay's lease (`controller.claims`)


class WorkerSeen(BaseModel):
    """The latest heartbeat of a worker in one zone: a worker serving several zones beats for
    each, and has a row in each."""

    worker_id = pw.CharField(max_length=128)
    zone = pw.CharField(max_length=63, index=True)
    host = pw.CharField(max_length=255)
    version = pw.CharField(max_length=64)
    message_schema = pw.IntegerField(default=1)   # the message schema version it speaks
    in_flight = pw.IntegerField(default=0)
    last_seen = pw.DateTimeField(default=utcnow)
    lost_at = pw.DateTimeField(null=True)         # when its silence was announced (worker.lost)

    class Meta:
        indexes = ((("worker_id", "zone"), True),)


class Integration(BaseModel):
    """Another system allowed to send signed requests over the bus (`controller.integrations`)."""

    name = pw.CharField(unique=True, max_length=64)
    public_key = pw.CharField(max_length=64)      # base64 Ed25519 verify key
    grants = JSONField(default=list)              # [{"action": ..., "scope": "node:/prod"}, ...]
    rate_limit = pw.IntegerField(default=60)      # signed requests per minute
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_used_at = pw.DateTimeField(null=True)


class RequestSeen(BaseModel):
    """A signed request's id, kept until it expires: a second copy is a replay."""

    integration = pw.ForeignKeyField(Integration, on_delete="CASCADE")
    request_id = pw.CharField(max_length=128)
    digest = pw.CharField(max_length=64)          # sha256 of the signed payload
    expires_at = pw.DateTimeField(index=True)
    seen_at = pw.DateTimeField(default=utcnow)
    reply = JSONField(default=dict)               # what it was answered (for a redelivery)

    class Meta:
        indexes = ((("integration", "request_id"), True), (("integration", "seen_at"), False))


class WebhookSubscription(BaseModel):
    """An HTTP endpoint that receives the events of some types, signed with its own secret."""

    name = pw.CharField(unique=True, max_length=64)
    url = pw.CharField(max_length=2048)
    event_types = JSONField(default=list)         # exact types or prefixes ending in `*`
    secret = pw.BlobField()                       # vault ciphertext of the HMAC key
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)


class WebhookDelivery(BaseModel):
    """One event for one subscription: written with the event, sent by the relay."""

    subscription = pw.ForeignKeyField(WebhookSubscription, backref="deliveries", on_delete="CASCADE")
    event = pw.ForeignKeyField(OutboxEvent, on_delete="CASCADE")
    status = pw.CharField(max_length=16, default="pending", index=True)   # pending|delivered|dead
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField(default=utcnow, index=True)
    claimed_until = pw.DateTimeField(null=True)
    last_status = pw.IntegerField(null=True)      # the receiver's HTTP status
    last_error = pw.CharField(max_length=300, null=True)
    delivered_at = pw.DateTimeField(null=True)


MODELS = [SchemaVersion, Zone, Node, Asset, Account, Plan, PlanAsset, PlanNode, Execution, LogLine,
          Record, User, AuditEvent, OutboxEvent, WorkerSeen, Integration, RequestSeen,
          WebhookSubscription, WebhookDelivery]

TERMINAL = (RecordStatus.SUCCESS, RecordStatus.FAILED, RecordStatus.UNVERIFIED)
IN_FLIGHT = (RecordStatus.PENDING, RecordStatus.DISPATCHED)
