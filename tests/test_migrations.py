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
