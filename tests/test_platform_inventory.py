"""The inventory reads the platform registry: each platform's default port, params, account
names, secret types and protected names, through the CLI, the API and the console, and its
params (merged with a plan's) in the commands dispatched, on SQLite and PostgreSQL."""
from __future__ import annotations

import re

import pytest

from controller import inventory, migrations
from controller.db import database, is_postgres
from controller.dispatch import dispatch_pending, publish_planned
from controller.models import Asset
from controller.names import BadName
from controller.planning import plan_execution, start_execution
from controller.plans import parse_spec, save_plan
from shared.platforms import PLATFORMS, MysqlParams, PostgresParams, RedisParams
from tests.inventory_helpers import sent_commands
from tests.processes import ProcessGroup, keyturn_env

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def cli(settings, tmp_path):
    group = ProcessGroup(keyturn_env(settings, None), tmp_path)
    for step in (("init",), ("zone", "add", "z")):
        assert group.run(*step).returncode == 0, step
    return group


@pytest.fixture
def zone(ctl):
    inventory.add_zone(ctl, "dmz", None, True)
    return "dmz"


def add(name, platform, params=None, port=None):
    return inventory.add_asset(name, "127.0.0.1", port, platform, "dmz", "/db", None, params)


# ---- assets: default port and params ------------------------------------------------------

@only_sqlite
def test_asset_add_takes_params_and_the_platforms_default_port(cli, ctl):
    for name, platform, params in [("db-1", "postgresql", ["database=app", "tls=require"]),
                                   ("my-1", "mysql", ["account_host=10.0.0.%", "all_hosts=true"]),
                                   ("rd-1", "redis", []),
                                   ("lx-1", "linux", ["become=su", 'groups=["wheel"]'])]:
        args = [arg for param in params for arg in ("--param", param)]
        done = cli.run("asset", "add", name, "--platform", platform, "--address", "127.0.0.1",
                       "--zone", "z", *args)
        assert done.returncode == 0, done.stderr
    found = {a.name: (a.port, a.params) for a in Asset.select()}
    assert found == {"db-1": (5432, {"database": "app", "tls": "require"}),
                     "my-1": (3306, {"account_host": "10.0.0.%", "all_hosts": True}),
                     "rd-1": (6379, {}), "lx-1": (22, {"become": "su", "groups": ["wheel"]})}
    done = cli.run("asset", "add", "db-2", "--platform", "postgresql", "--address", "127.0.0.1",
                   "--port", "6543", "--zone", "z")
    assert done.returncode == 0 and Asset.get(Asset.name == "db-2").port == 6543


@only_sqlite
@pytest.mark.parametrize("args,words", [
    (("--platform", "postgresql", "--param", "become=su"),
     "params: become is not a parameter of PostgreSQL assets (use database, tls, tls_ca)"),
    (("--platform", "redis", "--param", "database=1"),
     "params: database is not a parameter of Redis (ACL users) assets (it has none)"),
    (("--platform", "postgresql", "--param", "tls=sometimes"), "params.tls: must be one of"),
    (("--platform", "mssql",), "'mssql' is not one of 'linux', 'unix', 'aix', 'postgresql'"),
    (("--platform", "postgresql", "--host-key", "ssh-ed25519 AAAA"),
     "host_key: PostgreSQL has no SSH host keys"),
])
def test_asset_add_refuses_what_its_platform_does_not_take(cli, args, words):
    done = cli.run("asset", "add", "db-1", "--address", "127.0.0.1", "--zone", "z", *args)
    assert done.returncode != 0 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode == 1:                      # ours; 2 is click's usage error
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@only_sqlite
def test_asset_trust_is_refused_for_a_database_asset(cli, ctl):   # ctl: this test's database
    assert cli.run("asset", "add", "db-1", "--platform", "postgresql", "--address", "127.0.0.1",
                   "--zone", "z").returncode == 0
    for extra in ((), ("--host-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA")):
        done = cli.run("asset", "trust", "db-1", *extra)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        pinning = ", ".join(kind.name for kind in PLATFORMS.values() if kind.host_keys)
        assert (f"asset db-1: PostgreSQL has no SSH host keys: only {pinning} assets pin "
                f"one") in done.stderr
    assert Asset.get(Asset.name == "db-1").host_key is None


def test_the_api_and_the_form_take_params(as_admin, fleet):
    answer = as_admin.post_json("/api/v1/assets/new", {
        "name": "db-1", "address": "127.0.0.1", "platform": "postgresql", "zone": "dmz",
        "params": {"database": "app"}})
    assert answer.status_code == 201, answer.json
    assert (answer.json["asset"]["port"], answer.json["asset"]["params"]) == (5432, {"database": "app"})
    form = {"name": "my-1", "address": "127.0.0.1", "platform": "mysql", "zone": "dmz", "port": "",
            "params.mysql.account_host": "localhost", "params.mysql.all_hosts": "on",
            "params.mysql.tls": "", "params.postgresql.database": "not mine"}
    assert as_admin.post("/assets/new", form).status_code == 302
    mysql = Asset.get(Asset.name == "my-1")
    assert (mysql.port, mysql.params) == (3306, {"account_host": "localhost", "all_hosts": True})
    page = as_admin.get("/assets").text
    assert '<option value="postgresql">PostgreSQL</option>' in page
    assert 'name="params.postgresql.database"' in page and 'name="params.mysql.all_hosts"' in page
    shown = as_admin.get(f"/assets/{mysql.id}").text
    assert "MySQL / MariaDB" in shown and "localhost" in shown and "SSH key" not in shown


@pytest.mark.parametrize("params,status,words", [
    ({"tls": "always"}, 409,
     "params.tls: must be one of 'disable', 'prefer', 'require' or 'verify-full'"),
    ({"database": "x" * 64}, 409, "params.database: at most 63 characters"),
    ({"account_host": "%"}, 409, "params: account_host is not a parameter of PostgreSQL assets"),
    ({"become_secret": "pw"}, 409, "params: become_secret is not a parameter of PostgreSQL assets"),
    ("[1]", 400, "params: must be an object"),     # not the shape the API documents: a 400
    ("{no", 400, "params: must be an object"),
])
def test_the_api_refuses_bad_params_by_name(as_admin, fleet, params, status, words):
    answer = as_admin.post_json("/api/v1/assets/new", {
        "name": "db-1", "address": "127.0.0.1", "platform": "postgresql", "zone": "dmz",
        "params": params})
    assert answer.status_code == status and words in answer.json["error"], answer.json
    assert not Asset.select().where(Asset.name == "db-1").exists()


def test_csv_import_takes_a_params_column(ctl, zone):
    data = ("name,address,zone,platform,port,params\n"
            'db-1,127.0.0.1,dmz,postgresql,,"{""database"": ""app""}"\n'
            "rd-1,127.0.0.1,dmz,redis,7000,\n").encode()
    assert inventory.import_assets(data).assets == 2
    assert {a.name: (a.port, a.params) for a in Asset.select()} == {
        "db-1": (5432, {"database": "app"}), "rd-1": (7000, {})}
    bad = b'name,address,zone,platform,params\ndb-2,127.0.0.1,dmz,redis,"{""tls"": ""require""}"\n'
    with pytest.raises(Exception, match="line 2: params: tls is not a parameter of Redis"):
        inventory.import_assets(bad)


def test_an_upgraded_database_gives_existing_assets_no_params(ctl, zone):
    add("db-1", "postgresql")
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
    migrate(migrator.drop_column("asset", "params"))          # as before step 3
    migrate(*migrations.add_asset_params(migrator))            # the step alone: later ones add more
    assert Asset.get(Asset.name == "db-1").params == {}


# ---- accounts: names and secret types per platform ----------------------------------------

@pytest.mark.parametrize("platform,good,bad,rule", [
    ("postgresql", "reporting$role_for_finance_2024", "bad:name", "PostgreSQL takes a role name"),
    ("mysql", "1app", "a/b", "MySQL / MariaDB takes a user name"),
    ("redis", "app:cache", "a b", "Redis (ACL users) takes an ACL user name"),
    ("linux", "app.user", "1app", "Linux takes a POSIX user name"),
])
def test_account_names_follow_the_assets_platform(ctl, zone, platform, good, bad, rule):
    add("host-1", platform)
    assert inventory.set_account(ctl, "host-1", good, "Secret-1234", False).username == good
    with pytest.raises(BadName, match=re.escape(f"username: {bad} is not valid: {rule}")):
        inventory.set_account(ctl, "host-1", bad, "Secret-1234", False)


def test_a_database_role_name_is_refused_on_linux(ctl, zone):
    add("lx-1", "linux")
    add("db-1", "postgresql")
    role = "reporting$role_for_finance_2024"
    with pytest.raises(BadName, match="Linux takes a POSIX user name"):
        inventory.set_account(ctl, "lx-1", role, "Secret-1234", False)
    inventory.set_account(ctl, "db-1", role, "Secret-1234", False)
    assert parse_spec({"name": "p", "usernames": [role, "app:cache"], "assets": ["db-1"]})


@pytest.mark.parametrize("platform", ["postgresql", "mysql", "redis"])
def test_an_ssh_key_account_is_refused_on_a_database(ctl, zone, platform):
    add("db-1", platform)
    with pytest.raises(BadName, match="secret_type: ssh_key: .* accounts take password$"):
        inventory.set_account(ctl, "db-1", "app", None, False, "ssh_key")


# ---- planning: secure mode by platform ----------------------------------------------------

def test_secure_mode_skips_each_platforms_protected_names(ctl, zone):
    accounts = {"pg-1": ("postgresql", ["postgres", "app"]), "my-1": ("mysql", ["root", "app"]),
                "rd-1": ("redis", ["default", "app"]),
                "lx-1": ("linux", ["postgres", "default", "root", "app"])}
    for name, (platform, users) in accounts.items():
        add(name, platform)
        inventory.set_account(ctl, name, "admin", "Admin-pw-1", privileged=True)
        for user in users:
            inventory.set_account(ctl, name, user, f"old-{user}", False)
    spec = parse_spec({"name": "p", "usernames": ["postgres", "root", "default", "app"],
                       "nodes": ["/db"]})
    root_on = ", ".join(kind.title for kind in PLATFORMS.values()
                        if "root" in kind.protected_usernames)    # each platform that says so
    assert root_on.startswith("Linux, UNIX, AIX, MySQL / MariaDB")
    assert spec.protected_usernames() == [
        "postgres (on PostgreSQL)", f"root (on {root_on})", "default (on Redis (ACL users))"]
    execution = start_execution(ctl, save_plan(spec, ctl.vault))
    rotated = {f"{r.account.username}@{r.account.asset.name}" for r in execution.records}
    assert rotated == {"app@pg-1", "app@my-1", "app@rd-1", "app@lx-1", "postgres@lx-1",
                       "default@lx-1"}
    log = "\n".join(line.message for line in execution.log_lines)
    for skipped in ("postgres@pg-1: secure mode protects postgres on PostgreSQL",
                    "root@my-1: secure mode protects root on MySQL / MariaDB",
                    "default@rd-1: secure mode protects default on Redis (ACL users)",
                    "root@lx-1: secure mode protects root on Linux"):
        assert f"skipped {skipped}" in log
    assert execution.skipped == 4


# ---- dispatch: asset params under plan params ---------------------------------------------

@pytest.fixture
def mixed_plan(ctl, zone):
    """A PostgreSQL, a MySQL, a Redis and a Linux asset with params of their own, and a plan
    whose params win where both set one (tls) and are ignored where a platform lacks them."""
    add("pg-1", "postgresql", {"database": "app", "tls": "require"})
    add("my-1", "mysql", {"account_host": "localhost"})
    add("rd-1", "redis")
    add("lx-1", "linux", {"become": "su"})
    for name in ("pg-1", "my-1", "rd-1", "lx-1"):
        inventory.set_account(ctl, name, "admin", "Admin-pw-1", privileged=True)
        inventory.set_account(ctl, name, "app", "old-app", False)
    inventory.set_account(ctl, "lx-1", "root", "Root-pw-1", False)
    return save_plan(parse_spec({"name": "p", "usernames": ["app"], "nodes": ["/db"],
                                 "params": {"tls": "disable", "create_user": True}}), ctl.vault)


def check_commands(commands):
    assert commands["pg-1"].params == PostgresParams(database="app", tls="disable")
    assert commands["pg-1"].asset.port == 5432 and commands["pg-1"].asset.platform == "postgresql"
    assert commands["my-1"].params == MysqlParams(account_host="localhost", tls="disable")
    assert commands["rd-1"].params == RedisParams()
    linux = commands["lx-1"].params
    assert (linux.become, linux.create_user) == ("su", True)    # the asset's su: root's password
    assert linux.become_secret.get_secret_value() == "Root-pw-1"


def test_dispatch_merges_asset_and_plan_params(ctl, mixed_plan):
    execution = start_execution(ctl, mixed_plan)
    assert dispatch_pending(ctl) == execution.total == 4
    check_commands({c.asset.name: c for c in sent_commands(ctl)})


def test_a_plan_run_publishes_the_same_merged_params(ctl, mixed_plan):
    execution, targets = plan_execution(ctl, mixed_plan, "manual", "test", "dispatched")
    assert publish_planned(ctl, mixed_plan, execution.id, [t.account for t in targets]) == 4
    check_commands({c.asset.name: c for c in sent_commands(ctl)})
