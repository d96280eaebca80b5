"""Create or upgrade the schema: `keyturn init` runs `migrate()`.

A new database gets the current tables and the latest version at once. An existing one runs,
in order, every step newer than its recorded version; each step is a function of a
`playhouse.migrate` migrator, so columns are added in place and no data is dropped.
"""
from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, TextField
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate as run_operations

from controller.db import database, is_postgres
from controller.models import MODELS, JSONField, SchemaVersion
from shared.errors import KeyturnError


def add_token_scopes(migrator) -> list:
    """2: what an API token may do without a TOTP code (`User.api_token_scopes`)."""
    return [migrator.add_column("user", "api_token_scopes", CharField(null=True, max_length=64))]


def add_asset_params(migrator) -> list:
    """3: each asset's own platform params (`Asset.params`; existing assets get none)."""
    return [migrator.add_column("asset", "params", JSONField(default=dict))]


def add_asset_refusals(migrator) -> list:
    """4: when each asset was last seen to refuse a wrong secret (`Asset.refusals`)."""
    return [migrator.add_column("asset", "refusals", JSONField(null=True))]


def add_integrations(migrator) -> list:
    """5: events as CloudEvents from a claimed outbox (`OutboxEvent.subject`, `relayed_at`,
    `claimed_until`; events still queued get their `io.keyturn.` type), announced lost workers
    (`WorkerSeen.lost_at`), integrations, seen requests, webhook subscriptions and deliveries."""
    from controller.models import (Integration, OutboxEvent, RequestSeen, WebhookDelivery,
                                   WebhookSubscription)

    database.create_tables([Integration, RequestSeen, WebhookSubscription, WebhookDelivery])
    run_operations(migrator.add_column("outboxevent", "subject", CharField(null=True, max_length=255)),
                   migrator.add_column("outboxevent", "relayed_at", DateTimeField(null=True)),
                   migrator.add_column("outboxevent", "claimed_until", DateTimeField(null=True)),
                   migrator.add_index("outboxevent", ("relayed_at",)))
    for event in OutboxEvent.select().where(~OutboxEvent.routing_key.startswith("io.keyturn.")):
        body = {key: value for key, value in event.body.items() if key != "at"}
        kind = OLD_EVENT_TYPES.get(event.routing_key, "io.keyturn." + event.routing_key)
        subject = (f"{body.get('asset')}/{body.get('account')}" if kind.startswith("io.keyturn.record.")
                   else f"execution/{body.get('execution')}")
        OutboxEvent.update(routing_key=kind, body=body, subject=subject).where(
            OutboxEvent.id == event.id).execute()
    return [migrator.add_column("workerseen", "lost_at", DateTimeField(null=True))]


def add_worker_schema(migrator) -> list:
    """6: the message schema version each worker speaks (`WorkerSeen.message_schema`), and room
    for the 64 characters a heartbeat's version may have."""
    return [migrator.add_column("workerseen", "message_schema", IntegerField(default=1)),
            migrator.alter_column_type("workerseen", "version", CharField(max_length=64))]


def key_workers_by_zone(migrator) -> list:
    """7: a row per worker and zone (`WorkerSeen`, unique on both): a worker serving two zones
    beat for each into one row, so the zones page showed one of them without it. The table
    is made anew and its rows copied."""
    from controller.models import WorkerSeen

    fields = [WorkerSeen.worker_id, WorkerSeen.zone, WorkerSeen.host, WorkerSeen.version,
              WorkerSeen.message_schema, WorkerSeen.in_flight, WorkerSeen.last_seen,
              WorkerSeen.lost_at]
    rows = database.execute_sql("SELECT " + ", ".join(f.column_name for f in fields)
                                + " FROM workerseen").fetchall()
    database.drop_tables([WorkerSeen])
    database.create_tables([WorkerSeen])
    if rows:
        WorkerSeen.insert_many(rows, fields=fields).execute()
    return []


def add_rollout(migrator) -> list:
    """8: rolling a plan out under control (`controller.rollout`): its waves, failure brake,
    maintenance window and rate limits (`Plan.rollout`, copied to `Execution.rollout`), the
    wave each record is in and the last one opened, and why an execution is paused."""
    from controller.models import Execution, Plan, Record

    wanted = {Plan: {"rollout": JSONField(null=True)},
              Execution: {"rollout": JSONField(null=True), "wave": IntegerField(default=0),
                          "paused_by": CharField(max_length=16, null=True),
                          "pause_reason": TextField(null=True)},
              Record: {"wave": IntegerField(null=True)}}
    operations = []
    for model, fields in wanted.items():
        table = model._meta.table_name
        have = {column.name for column in database.get_columns(table)}
        operations += [migrator.add_column(table, name, field) for name, field in fields.items()
                       if name not in have]
    return operations


# How step 5 renames the events still queued in the old format (the rest get the prefix).
OLD_EVENT_TYPES = {"record.success": "io.keyturn.record.succeeded"}


# Step N upgrades a version N-1 database to version N. Append; never edit a released step.
STEPS: list = [add_token_scopes, add_asset_params, add_asset_refusals, add_integrations,
               add_worker_schema, key_workers_by_zone, add_rollout]
LATEST = 1 + len(STEPS)


def current_version() -> int | None:
    if not database.table_exists(SchemaVersion._meta.table_name):
        return None
    row = SchemaVersion.select().first()
    return row.version if row else None


def migrate() -> tuple[int | None, int]:
    """Bring the schema to LATEST; returns (version before, version after)."""
    with database.atomic():
        before = current_version()
        if before is None:
            database.create_tables(MODELS)
            SchemaVersion.create(version=LATEST)
            return before, LATEST
        if before > LATEST:
            raise KeyturnError(f"database schema {before} is newer than this keyturn ({LATEST})")
        migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
        for step in STEPS[before - 1:]:
            run_operations(*step(migrator))
        SchemaVersion.update(version=LATEST).execute()
        return before, LATEST
