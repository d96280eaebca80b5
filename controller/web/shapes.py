"""What the API answers, as pydantic models: each page's data, each action's answer and the
error shapes. The JSON face of a view builds its answer through its model (`views.answer`), so
the OpenAPI document (`controller.web.openapi`), made from the same models, cannot drift from
what is sent: a key a view adds and no model names fails there, in every test that reads it.

Rows mirror `controller.web.serialize`; times are UTC in ISO 8601 with a `Z` (the database
keeps naive UTC). No model here has a field for a secret except the answers that exist to
hand one over once (a reveal, a new token, a webhook's signing key)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

Moment = Annotated[datetime, PlainSerializer(lambda moment: moment.isoformat() + "Z",
                                             return_type=str, when_used="json"),
                   WithJsonSchema({"type": "string", "format": "date-time"})]
Id = Annotated[int, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Json = Annotated[Any, WithJsonSchema({})]        # any JSON value (a param's default, a grant)


class Shape(BaseModel):
    """An answer's fields, all of them: an unnamed key is an error, not a silent extra."""

    model_config = ConfigDict(extra="forbid")


Item = TypeVar("Item")
Key = TypeVar("Key")


class Page(Shape, Generic[Item, Key]):
    """One keyset page (`controller.web.paging.keyset`): pass `after` or `before` back as
    `?after=`/`?before=` for the neighbouring page; None at either end."""

    items: list[Item]
    total: Count
    after: Key | None
    before: Key | None
    size: Annotated[int, Field(ge=1, le=500)]


# ---- errors -------------------------------------------------------------------------------

class Problem(Shape):
    """A refused request: what is wrong, in words. A 400 for bad values also lists the
    fields it names (`fields`)."""

    error: str
    fields: list[str] | None = None


class PlanProblems(Shape):
    """A plan that cannot be saved: each bad field with what is wrong with it."""

    errors: dict[str, str]


# ---- rows ---------------------------------------------------------------------------------

class PlanRow(Shape):
    id: Id
    name: str
    usernames: list[str]
    strategy: str
    secret_type: str
    schedule: str
    interval_hours: int | None
    crontab: str | None
    next_run_at: Moment | None
    recipients: list[str]
    active: bool
    rollout: list[str] = Field(description="its waves, brake, window and limits in words")
    created_at: Moment
    updated_at: Moment


class ExecutionRow(Shape):
    id: Id
    plan_id: Id | None
    plan: str
    trigger: str
    started_by: str
    retry_of: Id | None
    status: str
    started_at: Moment
    finished_at: Moment | None
    duration: float | None = Field(description="seconds, once finished")
    total: Count
    succeeded: Count
    failed: Count
    unverified: Count
    skipped: Count
    ended: Count
    rollout: list[str] = Field(description="its waves, brake, window and limits in words")
    wave: Count = Field(description="the last wave opened (0: no waves)")
    waves: Count
    paused_by: str | None = Field(description="brake, window or operator")
    pause_reason: str | None
    waiting: str | None = Field(description="what its pending records wait on (rate limits)")
    state: str | None = Field(description="wave, pause reason and waiting, in words")


class RecordRow(Shape):
    id: Id
    execution: Id
    plan: str
    asset: str
    account: str
    account_deleted: bool = Field(description="its account was deleted (names as they were)")
    account_id: Id | None = Field(description="None once the account was deleted")
    action: str
    status: str
    error_code: str | None
    error: str | None
    worker: str | None
    attempt: Count
    retry_of: Id | None
    ignored: bool
    retryable: bool
    created_at: Moment
    started_at: Moment | None
    finished_at: Moment | None


class LogRow(Shape):
    id: Id
    at: Moment
    level: str
    message: str


class WorkerRow(Shape):
    id: str
    zone: str
    host: str
    version: str
    schema_: int = Field(alias="schema")
    in_flight: Count
    last_seen: Moment


class AccountRow(Shape):
    id: Id
    asset: str
    asset_id: Id
    username: str
    secret_type: str
    privileged: bool
    has_secret: bool
    in_rotation: Id | None = Field(description="the execution rotating it now")
    current_since: Moment | None
    pending_since: Moment | None


class UserRow(Shape):
    id: Id
    username: str
    role: str
    email: str | None
    active: bool
    totp_enrolled: bool
    has_token: bool
    created_at: Moment


class AuditRow(Shape):
    id: Id
    at: Moment
    actor: str
    address: str | None = Field(description="the client's address, for a web request")
    action: str
    outcome: str = Field(description="done, or refused (the detail says why)")
    target: str
    detail: str
    before: dict | None = Field(description="the non-secret fields it changed, before")
    after: dict | None = Field(description="and after (a secret is only said to change)")


class ZoneRow(Shape):
    id: Id
    name: str
    has_key: bool
    trust_first_use: bool
    assets: Count
    workers: list[WorkerRow]
    other_schemas: list[int] = Field(description="message schemas its workers speak besides ours")


class NodeRow(Shape):
    id: Id
    path: str
    name: str
    depth: Count
    assets: Count


class AssetRow(Shape):
    id: Id
    name: str
    address: str
    port: Annotated[int, Field(ge=1, le=65535)]
    platform: str
    zone: str
    node: str | None
    host_key: str | None
    params: dict[str, Json]
    accounts: Count | None = Field(description="in lists only")
    created_at: Moment


class ParamField(Shape):
    name: str
    input: Literal["check", "choice", "lines", "text"]
    default: Json
    choices: list[Json]
    hint: str | None


class PlatformRow(Shape):
    name: str
    title: str
    default_port: int
    host_keys: bool
    secret_types: list[str]
    account_rule: str
    params: list[ParamField]


class IntegrationRow(Shape):
    id: Id
    name: str
    public_key: str
    active: bool
    grants: list[str]
    rate_limit: Count
    last_used_at: Moment | None
    created_at: Moment


class WebhookRow(Shape):
    id: Id
    name: str
    url: str
    events: list[str]
    active: bool
    created_at: Moment


class DeliveryRow(Shape):
    id: Id
    webhook: str
    event: Id
    type: str
    status: str
    attempts: Count
    last_status: int | None
    last_error: str | None
    next_attempt_at: Moment | None
    delivered_at: Moment | None


# ---- pages --------------------------------------------------------------------------------

class Counts(Shape):
    plans: Count
    periodic_plans: Count
    assets_covered: Count
    executions: Count
    executions_succeeded: Count
    executions_failed: Count
    executions_running: Count
    records: Count
    records_succeeded: Count
    records_failed: Count


class Day(Shape):
    day: str = Field(description="YYYY-MM-DD (UTC)")
    succeeded: Count
    failed: Count


class FailedAccount(RecordRow):
    failures: Count = Field(description="its failed or unverified records in the window")


class Overview(Shape):
    days: int
    windows: list[int]
    counts: Counts
    daily: list[Day]
    running: list[ExecutionRow]
    recent: list[ExecutionRow]
    failed: list[FailedAccount]


class PlanListRow(PlanRow):
    assets: Count
    nodes: Count
    last_execution: ExecutionRow | None


class PlanList(Shape):
    q: str
    plans: Page[PlanListRow, str]


class PlanDetail(PlanRow):
    assets: list[str]
    nodes: list[str]
    params: dict[str, Json]
    length: int
    lowercase: bool
    uppercase: bool
    digits: bool
    symbols: bool
    exclude_symbols: str
    key_type: str
    ssh_timeout: float | None


class PlanPage(Shape):
    plan: PlanDetail
    executions: list[ExecutionRow]


class ExecutionList(Shape):
    filters: dict[str, str]
    statuses: list[str]
    triggers: list[str]
    executions: Page[ExecutionRow, int]


class ExecutionPage(Shape):
    execution: ExecutionRow
    retryable: bool
    log: list[LogRow]             # the latest 500 lines (or those before `log_before`)
    log_older: int | None         # `log_before` of the page of older lines (None: no more)
    log_paged: bool               # showing older lines (the page does not append new ones)
    log_after: int                # the newest line's id the page has seen (the poll's `after`)
    log_filter: dict[str, str]    # the `level` and `account` it is narrowed to
    records: Page[RecordRow, int]


class ExecutionLog(Shape):
    execution: ExecutionRow
    log: list[LogRow]


class RecordList(Shape):
    filters: dict[str, str]
    statuses: list[str]
    records: Page[RecordRow, int]


class RecordPage(Shape):
    record: RecordRow
    retries: list[RecordRow]


class Zones(Shape):
    schema_: int = Field(alias="schema", description="the message schema this controller speaks")
    zones: list[ZoneRow]


class Nodes(Shape):
    nodes: list[NodeRow]


class AssetList(Shape):
    q: str
    node: str
    platforms: list[PlatformRow]
    zone_names: list[str]
    assets: Page[AssetRow, str]


class AssetPage(Shape):
    asset: AssetRow
    platform: PlatformRow
    platforms: list[PlatformRow] = Field(description="what the edit form offers")
    zone_names: list[str]
    accounts: list[AccountRow]


class AccountList(Shape):
    filters: dict[str, str]
    accounts: Page[AccountRow, int]


class Users(Shape):
    users: list[UserRow]
    roles: list[str]


class Me(Shape):
    user: UserRow
    has_file_password: bool
    language: str | None          # the console's language chosen; None: the browser's


class Integrations(Shape):
    integrations: list[IntegrationRow]
    webhooks: list[WebhookRow]
    deliveries: list[DeliveryRow]
    actions: list[str]


class AuditLog(Shape):
    filters: dict[str, str]
    outcomes: list[str]
    events: Page[AuditRow, int]


# ---- answers to actions -------------------------------------------------------------------

class Message(Shape):
    """What an action did, in a line."""

    message: str


class Started(Message):
    execution: Id = Field(description="the execution started: follow it at /executions/{id}")


class MaybeStarted(Message):
    execution: Id | None = None


class Steered(Message):
    """An execution paused, resumed or cancelled."""

    execution: Id
    status: str = Field(description="running, paused or cancelled")
    cancelled: Count | None = Field(default=None, description="records cancelled, not sent")


class ZoneSaved(Message):
    zone: str


class NodeSaved(Message):
    node: str


class AssetAdded(Message):
    asset: AssetRow


class AssetsImported(Message):
    created: Count
    nodes: Count


class AccountSaved(Message):
    account: Id


class AssetSaved(Message):
    asset: AssetRow


class AssetDeleted(Message):
    asset: str
    accounts: Count = Field(description="its accounts deleted with it (their records stay)")


class AccountEdited(Message):
    account: AccountRow


class AccountDeleted(Message):
    account: Id


class NodeDeleted(Message):
    nodes: Count = Field(description="the node and those under it")
    assets: Count = Field(description="assets now in no node")


class UserSaved(Message):
    user: UserRow


class IntegrationSaved(Message):
    integration: IntegrationRow


class WebhookSaved(Message):
    webhook: WebhookRow


class WebhookCreated(Shape):
    """The new webhook and its signing key, shown this once."""

    webhook: WebhookRow
    secret: str


class TokenCreated(Shape):
    """The new API token, shown this once (only its hash is kept)."""

    token: str


class Revealed(Shape):
    record: Id
    old_secret: str | None
    new_secret: str | None


class PlanSaved(Shape):
    plan: PlanRow
    warnings: list[str] = Field(description="what secure mode will skip, mail that reaches no one")


class ApiDocument(BaseModel):
    """The OpenAPI document (`controller.web.openapi`)."""

    model_config = ConfigDict(extra="allow")

    openapi: Literal["3.1.0"]
    info: dict[str, Json]
    paths: dict[str, Json]
