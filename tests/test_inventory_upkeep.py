"""Inventory upkeep: assets, accounts, zones and nodes edited and deleted through the CLI, the
API and the console, by the rules of an addition; nothing with a rotation in flight is
deleted, a deleted account's history stays readable, a node holding others asks first, and
"test connection" and "verify now" start a verify for a worker; on SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import io

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from controller import inventory, migrations, upkeep
from controller.db import database, is_postgres
from controller.models import Account, Asset, AuditEvent, Node, Record, SchemaVersion, Zone
from controller.planning import start_execution
from shared.errors import KeyturnError
from tests.inventory_helpers import sent_commands
from tests.processes import ProcessGroup, keyturn_env
from tests.web_support import finish, save

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
HOST_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")


def private_key() -> str:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


def account(asset: str, username: str) -> Account:
    return inventory.account_by_name(asset, username)


def asset_id(name: str) -> int:
    return Asset.get(Asset.name == name).id


# ---- the API: every field, checked as an addition is --------------------------------------

def test_the_api_edits_each_field_of_an_asset(ctl, as_admin, fleet):
    inventory.add_zone(ctl, "lab", None, True)
    target = asset_id("web-1")
    done = as_admin.post_json(f"/api/v1/assets/{target}/edit", {
        "name": "app-1", "address": "10.1.2.3", "port": 2222, "zone": "lab", "node": "/eu/app",
        "host_key": HOST_KEY + " comment", "params": {"become": "su"}})
    assert done.status_code == 200, done.json
    row = done.json["asset"]
    assert (row["name"], row["address"], row["port"], row["zone"], row["node"], row["host_key"],
            row["params"]) == ("app-1", "10.1.2.3", 2222, "lab", "/eu/app", HOST_KEY,
                               {"become": "su"})
    moved = as_admin.post_json(f"/api/v1/assets/{target}/edit",
                               {"platform": "postgresql", "params": {"database": "app"}}).json
    assert (moved["asset"]["platform"], moved["asset"]["port"], moved["asset"]["host_key"]) == (
        "postgresql", 2222, None)                 # a port chosen by hand stays; keys go
    cleared = as_admin.post_json(f"/api/v1/assets/{target}/edit",
                                 {"node": "", "port": None, "params": {}}).json["asset"]
    assert (cleared["node"], cleared["port"], cleared["params"]) == (None, 5432, {})
    assert Account.select().where(Account.asset == target).count() == 3   # accounts went along
    inventory.set_account(ctl, "web-2", "deploy", private_key(), False, "ssh_key")
    misfit = as_admin.post_json(f"/api/v1/assets/{asset_id('web-2')}/edit",
                                {"platform": "postgresql"})
    assert misfit.status_code == 409 and misfit.json["error"].startswith(
        "platform: PostgreSQL accounts take password, and deploy has a ssh_key")


@pytest.mark.parametrize("body,field,words", [
    ({"address": "not an address!"}, "address", "neither an IP address nor a host name"),
    ({"host_key": "garbage"}, "host_key", "not an OpenSSH public key line"),
    ({"name": "web-2"}, "name", "exists already"),
    ({"zone": "nowhere"}, "zone", "unknown zone nowhere"),
    ({"params": {"database": "x"}}, "params", "not a parameter of Linux"),
    ({"colour": "red"}, "colour", "is not a field of an asset"),
])
def test_the_api_refuses_a_bad_edit_naming_the_field(ctl, as_admin, fleet, body, field, words):
    before = inventory.asset_by_name("web-1")
    done = as_admin.post_json(f"/api/v1/assets/{before.id}/edit", body)
    assert done.status_code == 409 and done.json["error"].startswith(f"{field}: ")
    assert words in done.json["error"]
    after = inventory.asset_by_name("web-1")
    assert (after.address, after.port, after.host_key, after.zone_id) == (
        before.address, before.port, before.host_key, before.zone_id)


@pytest.mark.parametrize("body,field", [({"port": 70000}, "port"), ({"port": "x"}, "port"),
                                        ({"name": ["a"]}, "name"), ({"params": [1]}, "params")])
def test_the_api_refuses_a_value_of_the_wrong_shape_with_400(ctl, as_admin, fleet, body, field):
    done = as_admin.post_json(f"/api/v1/assets/{asset_id('web-1')}/edit", body)
    assert done.status_code in (400, 409) and field in done.json.get("fields", [field])
    assert field in done.json["error"]
    privileged = as_admin.post_json(f"/api/v1/accounts/{account('web-1', 'bob').id}/edit",
                                    {"privileged": {"yes": 1}})
    assert privileged.status_code == 400 and privileged.json["fields"] == ["privileged"]


def test_the_api_edits_an_account(ctl, as_admin, fleet):
    alice = account("web-1", "alice")
    url = f"/api/v1/accounts/{alice.id}/edit"
    renamed = as_admin.post_json(url, {"username": "alicia", "privileged": True})
    assert renamed.status_code == 200, renamed.json
    assert renamed.json["account"]["username"] == "alicia" and renamed.json["account"]["privileged"]
    assert not account("web-1", "root").privileged               # one privileged per asset
    key = private_key()
    typed = as_admin.post_json(url, {"secret_type": "ssh_key", "secret": key, "privileged": False})
    assert typed.status_code == 200, typed.json
    row = Account.get_by_id(alice.id)
    assert (row.username, row.secret_type, row.privileged) == ("alicia", "ssh_key", False)
    assert "PRIVATE KEY" in ctl.vault.decrypt(row.secret_current)
    assert key not in typed.get_data(as_text=True)
    password = as_admin.post_json(url, {"secret": "Fresh-Secret-9", "secret_type": "password"})
    assert ctl.vault.decrypt(Account.get_by_id(alice.id).secret_current) == "Fresh-Secret-9"
    assert password.status_code == 200
    for body, words in [({"username": "bob"}, "bob@web-1 exists already"),
                        ({"username": "Bad Name!"}, "username: "),
                        ({"secret_type": "ssh_key"}, "needs its ssh_key as the secret")]:
        refused = as_admin.post_json(url, body)
        assert refused.status_code == 409 and words in refused.json["error"], (body, refused.json)


def test_zones_and_nodes_are_renamed_and_deleted(ctl, as_admin, fleet):
    lab, _ = inventory.add_zone(ctl, "lab", None, False)
    key_file = ctl.settings.zone_key_path("lab")
    renamed = as_admin.post_json(f"/api/v1/zones/{lab.id}/edit",
                                 {"name": "lab2", "trust_first_use": True})
    assert renamed.status_code == 200, renamed.json
    assert Zone.get_by_id(lab.id).trust_first_use and not key_file.exists()
    assert ctl.settings.zone_key_path("lab2").exists()          # its key pair moved along
    dmz = Zone.get(Zone.name == "dmz")
    busy = as_admin.post_json(f"/api/v1/zones/{dmz.id}/delete")
    assert busy.status_code == 409 and "has 2 assets" in busy.json["error"]
    assert as_admin.post_json(f"/api/v1/zones/{lab.id}/delete").status_code == 200
    assert not Zone.select().where(Zone.id == lab.id).exists()
    web = Node.get(Node.path == "/prod/web")
    moved = as_admin.post_json(f"/api/v1/nodes/{web.id}/edit", {"path": "/eu/front"})
    assert moved.status_code == 200 and moved.json["node"] == "/eu/front"
    assert {n.path for n in Node.select()} == {"/prod", "/eu", "/eu/front"}
    assert inventory.asset_by_name("web-1").node.path == "/eu/front"
    inside = as_admin.post_json(f"/api/v1/nodes/{web.id}/edit", {"path": "/eu/front/x"})
    assert inside.status_code == 409 and "inside" in inside.json["error"]


def test_nodes_are_listed_as_a_tree(ctl, as_admin, fleet):
    for path in ("/prod-eu", "/prod/web/a", "/prod/db"):
        inventory.add_node(path)
    tree = ["/prod", "/prod/db", "/prod/web", "/prod/web/a", "/prod-eu"]
    assert [n["path"] for n in as_admin.get("/api/v1/nodes").json["nodes"]] == tree
    form = as_admin.get("/plans/new").text
    assert [form.index(f'name="nodes" value="{path}"') for path in tree] == sorted(
        form.index(f'name="nodes" value="{path}"') for path in tree)


def test_a_node_holding_nodes_or_assets_asks_first(ctl, as_admin, fleet):
    inventory.add_node("/prod/db")
    prod = Node.get(Node.path == "/prod")
    asked = as_admin.post_json(f"/api/v1/nodes/{prod.id}/delete")
    assert asked.status_code == 409 and "(send confirm: true)" in asked.json["error"]
    assert "2 nodes and 2 assets" in asked.json["error"]
    page = as_admin.post(f"/nodes/{prod.id}/delete")             # the console asks too
    assert page.status_code == 409 and "Delete anyway" in page.text
    assert 'name="confirm"' in page.text and Node.select().count() == 3
    done = as_admin.post(f"/nodes/{prod.id}/delete", {"confirm": "yes"})
    assert done.status_code == 302 and Node.select().count() == 0
    assert all(a.node_id is None for a in Asset.select())        # the assets stay, unfiled
    empty = inventory.add_node("/empty")
    assert as_admin.post_json(f"/api/v1/nodes/{empty.id}/delete").status_code == 200


# ---- deleting: refused in flight, history kept ---------------------------------------------

def test_delete_is_refused_while_a_rotation_is_in_flight(ctl, as_admin, fleet):
    running = start_execution(ctl, save(ctl), started_by="ada")
    alice = account("web-1", "alice")
    refused = as_admin.post_json(f"/api/v1/accounts/{alice.id}/delete")
    assert refused.status_code == 409
    assert f"a rotation is in flight (execution {running.id})" in refused.json["error"]
    refused = as_admin.post_json(f"/api/v1/assets/{alice.asset_id}/delete")
    assert refused.status_code == 409 and "in flight" in refused.json["error"]
    lab, _ = inventory.add_zone(ctl, "lab", None, True)
    moving = as_admin.post_json(f"/api/v1/assets/{alice.asset_id}/edit", {"zone": "lab"})
    assert moving.status_code == 409 and "in flight" in moving.json["error"]
    with pytest.raises(KeyturnError, match="in flight"):
        upkeep.edit_account(ctl, alice, username="alicia")
    assert Account.select().count() == 6 and inventory.asset_by_name("web-1").zone.name == "dmz"
    refusal = AuditEvent.get(AuditEvent.outcome == "refused")
    assert "in flight" in refusal.detail and refusal.actor == "ada"


def test_a_deleted_accounts_history_stays_readable(ctl, as_admin, fleet):
    ran = start_execution(ctl, save(ctl), started_by="ada")
    finish(ran, {"bob@web-2": "failed"})
    alice = account("web-1", "alice")
    kept = Record.get(Record.account == alice.id)
    assert as_admin.post_json(f"/api/v1/accounts/{alice.id}/delete").status_code == 200
    web2 = inventory.asset_by_name("web-2")
    gone = as_admin.post_json(f"/api/v1/assets/{web2.id}/delete")
    assert gone.status_code == 200 and gone.json["accounts"] == 3
    assert Record.select().where(Record.execution == ran.id).count() == 4
    row = as_admin.get(f"/api/v1/records/{kept.id}").json["record"]
    assert (row["asset"], row["account"], row["account_deleted"]) == ("web-1", "alice", True)
    listed = as_admin.get("/api/v1/records", query_string={"asset": "web-2"}).json["records"]
    assert sorted(r["account"] for r in listed["items"]) == ["alice", "bob"]
    assert as_admin.get(f"/records/{kept.id}").status_code == 200
    report = list(csv.reader(io.StringIO(as_admin.get(
        f"/executions/{ran.id}/report.csv").get_data(as_text=True))))
    assert sorted((r[1], r[3]) for r in report[1:]) == [
        ("web-1", "alice"), ("web-1", "bob"), ("web-2", "alice"), ("web-2", "bob")]
    execution = as_admin.get(f"/api/v1/executions/{ran.id}").json
    assert execution["records"]["total"] == 4
    with pytest.raises(KeyturnError, match="no account alice"):
        account("web-1", "alice")
    inventory.set_account(ctl, "web-1", "alice", "New-Alice-1", False)    # the name is free again
    assert Record.get_by_id(kept.id).account_id is None


def test_an_upgraded_database_keeps_records_of_a_deleted_account(ctl, fleet):
    """A version 7 database (records cascade with their account) upgrades in place to step 8,
    keeping every record; then a delete keeps them."""
    finish(start_execution(ctl, save(ctl), started_by="ada"), {})
    before = Record.select().count()
    make_version_7()
    migrations.migrate()
    assert migrations.current_version() == migrations.LATEST
    assert Record.select().count() == before
    upkeep.delete_account(account("web-1", "alice"))
    assert Record.select().count() == before
    assert Record.get(Record.account.is_null()).names() == ("web-1", "alice")


def make_version_7() -> None:
    """The record table as schema 7 had it (account NOT NULL, ON DELETE CASCADE), rows kept."""
    if is_postgres():
        database.execute_sql('ALTER TABLE "record" DROP CONSTRAINT "record_account_id_fkey"')
        database.execute_sql('ALTER TABLE "record" ADD CONSTRAINT "record_account_id_fkey" FOREIGN '
                             'KEY ("account_id") REFERENCES "account" ("id") ON DELETE CASCADE')
        database.execute_sql('ALTER TABLE "record" ALTER COLUMN "account_id" SET NOT NULL')
        for column in ("asset_name", "account_name"):
            database.execute_sql(f'ALTER TABLE "record" DROP COLUMN "{column}"')
    else:
        (sql,) = database.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'record'"
                                      ).fetchone()
        old = (sql.replace('"account_id" INTEGER,', '"account_id" INTEGER NOT NULL,')
               .replace('REFERENCES "account" ("id") ON DELETE SET NULL',
                        'REFERENCES "account" ("id") ON DELETE CASCADE')
               .replace(', "asset_name" VARCHAR(128)', '')
               .replace(', "account_name" VARCHAR(64)', ''))
        assert "CASCADE" in old and "asset_name" not in old, old
        columns = [c.name for c in database.get_columns("record")
                   if c.name not in ("asset_name", "account_name")]
        listed = ", ".join(f'"{c}"' for c in columns)
        database.execute_sql('ALTER TABLE "record" RENAME TO "record_new"')
        for index in database.get_indexes("record_new"):
            database.execute_sql(f'DROP INDEX "{index.name}"')
        database.execute_sql(old)
        database.execute_sql(f'INSERT INTO "record" ({listed}) SELECT {listed} FROM "record_new"')
        database.execute_sql('DROP TABLE "record_new"')
    for column in ("address", "outcome", "before", "after"):
        database.execute_sql(f'ALTER TABLE "auditevent" DROP COLUMN "{column}"')
    SchemaVersion.update(version=7).execute()


# ---- the console's forms -------------------------------------------------------------------

def test_the_console_form_edits_an_asset_and_keeps_what_was_typed(ctl, as_admin, fleet):
    target = asset_id("web-1")
    form = {"name": "web-9", "address": "10.9.9.9", "port": "2200", "platform": "linux",
            "zone": "dmz", "node": "/prod/app", "host_key": "", "params.linux.become": "su"}
    saved = as_admin.post(f"/assets/{target}/edit", form)
    assert saved.status_code == 302 and saved.location == f"/assets/{target}"
    row = Asset.get_by_id(target)
    assert (row.name, row.address, row.port, row.node.path, row.params) == (
        "web-9", "10.9.9.9", 2200, "/prod/app", {"become": "su"})
    page = as_admin.get(f"/assets/{target}").text
    assert 'value="10.9.9.9"' in page and "Test connection" in page and "verify now" in page
    bad = as_admin.post(f"/assets/{target}/edit", form | {"address": "not an address!",
                                                          "name": "web-10"})
    assert bad.status_code == 422 and "neither an IP address nor a host name" in bad.text
    assert 'value="web-10"' in bad.text and 'value="not an address!"' in bad.text
    assert Asset.get_by_id(target).name == "web-9"
    root = account("web-9", "root")
    as_admin.post(f"/accounts/{root.id}/edit", {"username": "root", "secret_type": "password",
                                                "secret": ""})         # the box unticked
    assert not Account.get_by_id(root.id).privileged
    assert ctl.vault.decrypt(Account.get_by_id(root.id).secret_current) == "rootpw"


def test_test_connection_and_verify_now_send_a_verify_to_the_zones_worker(ctl, as_admin, fleet):
    target = inventory.asset_by_name("web-1")
    tested = as_admin.post_json(f"/api/v1/assets/{target.id}/test")
    assert tested.status_code == 201, tested.json
    record = Record.get(Record.execution == tested.json["execution"])
    assert (record.action, record.account_id) == ("verify", account("web-1", "root").id)
    bob = account("web-2", "bob")
    verified = as_admin.post(f"/accounts/{bob.id}/verify")
    execution = int(verified.location.rsplit("/", 1)[-1])
    assert Record.get(Record.execution == execution).account_id == bob.id
    from controller.dispatch import dispatch_pending
    dispatch_pending(ctl)
    commands = sent_commands(ctl)
    assert sorted((c.action, c.username) for c in commands) == [("verify", "bob"),
                                                                ("verify", "root")]
    Account.update(privileged=False).where(Account.asset == target.id).execute()
    refused = as_admin.post_json(f"/api/v1/assets/{target.id}/test")
    assert refused.status_code == 409 and "no privileged account" in refused.json["error"]


# ---- the CLI -------------------------------------------------------------------------------

@pytest.fixture
def cli(settings, tmp_path):
    group = ProcessGroup(keyturn_env(settings, None), tmp_path)
    for step in (("init",), ("zone", "add", "z"), ("zone", "add", "y"),
                 ("asset", "add", "a1", "--address", "127.0.0.1", "--zone", "z",
                  "--node", "/n/m")):
        assert group.run(*step).returncode == 0, step
    return group


@only_sqlite
def test_the_cli_edits_and_deletes(cli, ctl):
    def ok(*args, input=None):
        done = cli.run(*args, input=input)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    ok("asset", "edit", "a1", "--name", "b1", "--address", "db.example.org", "--zone", "y",
       "--platform", "postgresql", "--param", "database=app", "--node", "/o")
    row = Asset.get(Asset.name == "b1")
    assert (row.address, row.zone.name, row.platform, row.port, row.params, row.node.path) == (
        "db.example.org", "y", "postgresql", 5432, {"database": "app"}, "/o")
    ok("account", "add", "b1", "app_owner", "--secret-stdin", "--privileged", input="Old-Pass-1\n")
    ok("account", "edit", "b1", "app_owner", "--username", "owner", "--not-privileged",
       "--secret-stdin", input="New-Pass-2\n")
    owner = account("b1", "owner")
    assert not owner.privileged and ctl.vault.decrypt(owner.secret_current) == "New-Pass-2"
    asked = cli.run("node", "delete", "/n")
    assert asked.returncode == 1 and "holds 1 node" in asked.stderr and "--yes" in asked.stderr
    assert len(asked.stderr.strip().splitlines()) == 1
    assert "node /n deleted" in ok("node", "delete", "/n", "--yes")
    assert "/p/o" in ok("node", "rename", "/o", "/p/o")
    ok("zone", "edit", "z", "--name", "zz", "--no-trust-first-use")
    assert not Zone.get(Zone.name == "zz").trust_first_use
    ok("asset", "delete", "b1")
    ok("zone", "delete", "y")
    assert not Asset.select().exists() and Zone.select().count() == 1
    actions = [e.action for e in AuditEvent.select().order_by(AuditEvent.id)]
    assert {"asset.edit", "account.edit", "node.delete", "node.rename", "zone.edit",
            "asset.delete", "zone.delete"} <= set(actions)
    assert all(e.actor.startswith("cli:") for e in AuditEvent.select())
