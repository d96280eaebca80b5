"""`keyturn init` creates the schema once and upgrades it in place, keeping the data."""
import peewee
import pytest

from controller import migrations
from controller.db import database
from controller.models import Zone
from shared.errors import KeyturnError


def test_init_is_idempotent_and_records_the_version(ctl):
    assert migrations.current_version() == migrations.LATEST
    assert migrations.migrate() == (migrations.LATEST, migrations.LATEST)


def test_a_new_step_upgrades_in_place_and_keeps_rows(ctl, monkeypatch):
    Zone.create(name="kept", public_key="k")

    def add_column(migrator):
        return [migrator.add_column("zone", "note", peewee.CharField(null=True))]

    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS + [add_column])
    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST + 1)
    before, after = migrations.migrate()
    assert after == before + 1
    columns = {c.name for c in database.get_columns("zone")}
    assert "note" in columns
    assert Zone.get(Zone.name == "kept").public_key == "k"
    assert migrations.migrate() == (after, after)


def test_a_newer_schema_is_refused(ctl, monkeypatch):
    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST - 1)
    with pytest.raises(KeyturnError, match="newer than this keyturn"):
        migrations.migrate()


OLD_BODY = {"record": 1, "execution": 1, "asset": "web-1", "account": "alice", "action": "rotate",
            "status": "success", "error_code": None, "error": None, "worker": "w", "attempt": 1,
            "at": "2026-01-01T00:00:00"}


def test_step_5_adds_integrations_and_renames_queued_events(ctl):
    """A version 4 database (events queued in the old format) upgrades to claimed CloudEvents."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate as run

    from controller.db import is_postgres
    from controller.events import cloudevent
    from tests.event_schemas import validate
    from controller.models import (Integration, OutboxEvent, RequestSeen, SchemaVersion,
                                   WebhookDelivery, WebhookSubscription)

    database.drop_tables([WebhookDelivery, WebhookSubscription, RequestSeen, Integration])
    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
    run(migrator.drop_index("outboxevent", "outboxevent_relayed_at"),
        *[migrator.drop_column("outboxevent", c) for c in ("subject", "relayed_at", "claimed_until")],
        migrator.drop_column("workerseen", "lost_at"),
        migrator.drop_column("workerseen", "message_schema"))     # step 6's
    OutboxEvent.insert(routing_key="record.success", body=OLD_BODY).execute()   # old columns only
    SchemaVersion.update(version=4).execute()
    assert migrations.migrate() == (4, migrations.LATEST)
    assert {"subject", "relayed_at", "claimed_until"} <= {c.name for c in database.get_columns("outboxevent")}
    assert "lost_at" in {c.name for c in database.get_columns("workerseen")}
    event = OutboxEvent.get()
    assert (event.routing_key, event.relayed_at, event.subject) == (
        "io.keyturn.record.succeeded", None, "web-1/alice")
    validate(cloudevent(ctl, event))
    assert Integration.select().count() == 0 and WebhookDelivery.select().count() == 0


def test_step_6_records_which_message_schema_each_worker_speaks(ctl):
    """A version 5 database (workers without a schema, 32-character versions) upgrades in place."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate as run

    from controller.db import is_postgres
    from controller.models import SchemaVersion, WorkerSeen

    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
    run(migrator.drop_column("workerseen", "message_schema"),
        migrator.alter_column_type("workerseen", "version", peewee.CharField(max_length=32)))
    database.execute_sql("INSERT INTO workerseen (worker_id, zone, host, version, in_flight, "
                         "last_seen) VALUES ('w1', 'dmz', 'h', '0.1.0', 0, '2026-01-01 00:00:00')")
    SchemaVersion.update(version=5).execute()
    assert migrations.migrate() == (5, migrations.LATEST)
    old = WorkerSeen.get(WorkerSeen.worker_id == "w1")
    assert (old.message_schema, old.version) == (1, "0.1.0")
    WorkerSeen.update(version="v" * 64).execute()        # a heartbeat's version fits
    assert WorkerSeen.get(WorkerSeen.worker_id == "w1").version == "v" * 64


def test_step_7_keeps_a_row_per_worker_and_zone(ctl):
    """A version 6 database (one row per worker) upgrades with its rows; a worker then has a
    row in each zone it beats for."""
    from controller.daemon import record_heartbeats
    from controller.models import SchemaVersion, WorkerSeen
    from shared.messages import Heartbeat

    database.drop_tables([WorkerSeen])
    database.execute_sql("CREATE TABLE workerseen (worker_id VARCHAR(128) PRIMARY KEY, "
                         "zone VARCHAR(63) NOT NULL, host VARCHAR(255) NOT NULL, "
                         "version VARCHAR(64) NOT NULL, message_schema INTEGER NOT NULL, "
                         "in_flight INTEGER NOT NULL, last_seen TIMESTAMP NOT NULL, "
                         "lost_at TIMESTAMP)")
    database.execute_sql("INSERT INTO workerseen VALUES ('w1', 'dmz', 'h', '0.1.0', 1, 2, "
                         "'2026-01-01 00:00:00', NULL)")
    SchemaVersion.update(version=6).execute()
    assert migrations.migrate() == (6, migrations.LATEST)
    kept = WorkerSeen.get(WorkerSeen.worker_id == "w1")
    assert (kept.zone, kept.in_flight, kept.last_seen.year) == ("dmz", 2, 2026)
    beats = [Heartbeat(worker_id="w1", zone=zone, host="h", version="0.1.0", in_flight=0,
                       sent_at=1_800_000_000) for zone in ("dmz", "lab", "dmz")]
    record_heartbeats(beats)
    assert sorted(WorkerSeen.select(WorkerSeen.zone).where(WorkerSeen.worker_id == "w1")
                  .tuples()) == [("dmz",), ("lab",)]


def test_the_records_list_indexes_replace_the_single_column_ones(ctl):
    """A database from before the records list's composite indexes (`account (username)`,
    `record (account_id)`) upgrades to `account (username, id)` and `record (account_id,
    execution_id)`, with its rows; running the step again changes nothing."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate as run

    from controller.db import is_postgres
    from controller.models import SchemaVersion

    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
    run(migrator.drop_index("account", "account_username_id"),
        migrator.drop_index("record", "record_account_id_execution_id"),
        migrator.add_index("account", ("username",), False),
        migrator.add_index("record", ("account_id",), False))
    Zone.create(name="kept", public_key="k")
    before = migrations.STEPS.index(migrations.index_record_lists) + 1
    SchemaVersion.update(version=before).execute()

    def indexes(table):
        return {index.name: index.columns for index in database.get_indexes(table)}

    assert migrations.migrate() == (before, migrations.LATEST)
    assert indexes("account")["account_username_id"] == ["username", "id"]
    assert indexes("record")["record_account_id_execution_id"] == ["account_id", "execution_id"]
    assert "account_username" not in indexes("account")
    assert "record_account_id" not in indexes("record")
    assert Zone.get(Zone.name == "kept").public_key == "k"
    run(*migrations.index_record_lists(migrator))
    assert indexes("record")["record_account_id_execution_id"] == ["account_id", "execution_id"]


def test_step_11_ties_log_lines_to_records_and_keeps_the_old_lines(ctl):
    """A version 10 database (log lines without a record, records without `silent_at`)."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate as run

    from controller.db import is_postgres
    from controller.models import Execution, LogLine, Record, SchemaVersion

    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
    run(migrator.drop_index("logline", "logline_record"),
        migrator.drop_column("logline", "record"), migrator.drop_column("record", "silent_at"))
    execution = Execution.insert(plan_name="old").execute()
    database.execute_sql('INSERT INTO logline (execution_id, at, level, message) '
                         "VALUES (%s, '2026-01-01 00:00:00', 'info', 'an old line')"
                         .replace("%s", str(execution)))
    SchemaVersion.update(version=10).execute()
    assert migrations.migrate() == (10, migrations.LATEST)
    assert {"record"} <= {c.name for c in database.get_columns("logline")}
    assert {"silent_at"} <= {c.name for c in database.get_columns("record")}
    assert ("record",) in {tuple(i.columns) for i in database.get_indexes("logline")}
    old = LogLine.get(LogLine.message == "an old line")
    assert old.record is None and old.execution_id == execution
    assert Record.select().where(Record.silent_at.is_null(False)).count() == 0
    assert migrations.migrate() == (migrations.LATEST, migrations.LATEST)
