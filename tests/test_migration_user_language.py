"""Step `add_user_language`: a database from before the console spoke Chinese (no
`User.language`) upgrades in place, its users kept and following their browser."""
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate as run

from controller import migrations
from controller.db import database, is_postgres
from controller.models import SchemaVersion, User


def test_an_older_database_gains_the_users_language(ctl):
    before = migrations.STEPS.index(migrations.add_user_language) + 1   # the version it upgrades
    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
    run(migrator.drop_column("user", "language"))
    database.execute_sql('INSERT INTO "user" (username, role, password_hash, totp_enrolled, '
                         "totp_last_step, active, created_at) VALUES ('old', 'admin', 'x', "
                         "TRUE, 0, TRUE, '2026-01-01 00:00:00')")
    assert "language" not in {c.name for c in database.get_columns("user")}
    SchemaVersion.update(version=before).execute()
    assert migrations.migrate() == (before, migrations.LATEST)
    assert User.get(User.username == "old").language is None
    User.update(language="zh_CN").where(User.username == "old").execute()
    assert User.get(User.username == "old").language == "zh_CN"
    assert migrations.migrate() == (migrations.LATEST, migrations.LATEST)
