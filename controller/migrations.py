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


def keep_history_of_deleted(migrator) -> list:
    """9: records outlive their accounts (`Record.account` nullable, set to NULL when the
    account is deleted, whose names go in `Record.asset_name` and `account_name`), and the
    audit log says from which address, with what outcome, and the non-secret fields before
    and after a change. Runs again harmlessly."""
    from controller.models import AuditEvent, Record

    if is_postgres():
        loosen_record_account()
    else:
        loosen_sqlite_record_account()
    return (missing_columns(migrator, Record, {"asset_name": CharField(max_length=128, null=True),
                                               "account_name": CharField(max_length=64, null=True)})
            + missing_columns(migrator, AuditEvent, {
                "address": CharField(max_length=64, null=True),
                "outcome": CharField(max_length=8, default="done"),
                "before": JSONField(null=True), "after": JSONField(null=True)}))


def loosen_record_account() -> None:
    """PostgreSQL: `record.account_id` nullable, with ON DELETE SET NULL."""
    database.execute_sql('ALTER TABLE "record" ALTER COLUMN "account_id" DROP NOT NULL')
    for (name,) in database.execute_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'record'::regclass "
            "AND contype = 'f' AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE "
            "attrelid = 'record'::regclass AND attname = 'account_id')]").fetchall():
        database.execute_sql(f'ALTER TABLE "record" DROP CONSTRAINT "{name}"')
    database.execute_sql('ALTER TABLE "record" ADD CONSTRAINT "record_account_id_fkey" FOREIGN KEY '
                         '("account_id") REFERENCES "account" ("id") ON DELETE SET NULL')


def loosen_sqlite_record_account() -> None:
    """SQLite cannot change a foreign key in place: the record table is made anew from its own
    CREATE statement with the account column loosened (so it keeps every column other steps
    gave it), and its rows and indexes copied."""
    (sql,) = database.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                  "AND name = 'record'").fetchone()
    loosened = (sql.replace('"account_id" INTEGER NOT NULL', '"account_id" INTEGER')
                .replace('REFERENCES "account" ("id") ON DELETE CASCADE',
                         'REFERENCES "account" ("id") ON DELETE SET NULL'))
    if loosened == sql:
        return
    indexes = database.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                   "AND tbl_name = 'record' AND sql IS NOT NULL").fetchall()
    columns = ", ".join(f'"{c.name}"' for c in database.get_columns("record"))
    database.execute_sql('ALTER TABLE "record" RENAME TO "record_old"')
    for name, _ in indexes:
        database.execute_sql(f'DROP INDEX "{name}"')
    database.execute_sql(loosened)
    database.execute_sql(f'INSERT INTO "record" ({columns}) SELECT {columns} FROM "record_old"')
    database.execute_sql('DROP TABLE "record_old"')
    for _, index in indexes:
        database.execute_sql(index)


def missing_columns(migrator, model, fields: dict) -> list:
    """Adding the columns (name: field) `model`'s table lacks."""
    table = model._meta.table_name
    have = {c.name for c in database.get_columns(table)}
    return [migrator.add_column(table, name, field) for name, field in fields.items()
            if name not in have]


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


def index_record_lists(migrator) -> list:
    """10: indexes the records page filters by at 1,000,000 records: `account (username, id)`
    instead of `account (username)`, and `record (account_id, execution_id)` instead of
    `record (account_id)`, so the records of the accounts with a name (in a plan's executions)
    are found and counted from the indexes alone. Runs again harmlessly."""
    wanted = {"account": (("username", "id"), "account_username"),
              "record": (("account_id", "execution_id"), "record_account_id")}
    operations = []
    for table, (columns, replaced) in wanted.items():
        have = {index.name for index in database.get_indexes(table)}
        if f"{table}_{'_'.join(columns)}" not in have:
            operations.append(migrator.add_index(table, columns, False))
        if replaced in have:
            operations.append(migrator.drop_index(table, replaced))
    return operations


def add_live_log(migrator) -> list:
    """11: the execution log tells each account's story (`controller.executions`): the record
    a line is about (`LogLine.record`, indexed, for the page's account filter) and when a
    record's "silent past its timeout" line was written (`Record.silent_at`, so it is written
    once per dispatch by any number of daemons)."""
    from controller.models import LogLine, Record

    operations = (missing_columns(migrator, LogLine, {"record": IntegerField(null=True)})
                  + missing_columns(migrator, Record, {"silent_at": DateTimeField(null=True)}))
    indexed = {tuple(index.columns) for index in database.get_indexes("logline")}
    if ("record",) not in indexed:
        operations.append(migrator.add_index("logline", ("record",)))
    return operations


def add_user_language(migrator) -> list:
    """12: the console language a user chose on their profile (`User.language`; none: the
    browser's, `controller.web.i18n`)."""
    from controller.models import User

    return missing_columns(migrator, User, {"language": CharField(null=True, max_length=16)})


# How step 5 renames the events still queued in the old format (the rest get the prefix).
OLD_EVENT_TYPES = {"record.success": "io.keyturn.record.succeeded"}


# Step N upgrades a version N-1 database to version N. Append; never edit a released step.
STEPS: list = [add_token_scopes, add_asset_params, add_asset_refusals, add_integrations,
               add_worker_schema, key_workers_by_zone, add_rollout, keep_history_of_deleted,
               index_record_lists, add_live_log, add_user_language]
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
