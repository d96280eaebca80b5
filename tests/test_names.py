"""Names that become files, queues, host commands and cells follow one set of full-match rules
on every path: the rules themselves, the CLI, the API and the console."""
from __future__ import annotations

import pytest

from controller import inventory, names
from controller.models import Account, Asset, Node, Zone
from controller.plans import PlanError, parse_spec
from tests.inventory_helpers import build_fleet
from tests.processes import ProcessGroup, keyturn_env

BAD_ASSET_NAMES = ["", "a" * 100_000, "../../etc", "=cmd", "web-1\n", "web 1", "-x", ".hidden",
                   "a" * 129, None, 7, ["web-1"]]


@pytest.mark.parametrize("value", ["dmz", "z-1_a", "0" * 63])
def test_good_zone_names(value):
    assert names.zone_name(value) == value


@pytest.mark.parametrize("value", ["zz\n", "", "Dmz", "-z", "z" * 64, "a/b", "a.b", None])
def test_bad_zone_names(value):
    with pytest.raises(names.BadName) as caught:
        names.zone_name(value)
    assert caught.value.field == "zone"


@pytest.mark.parametrize("value", ["alice", "_svc", "host$", "a.b-c_d"])
def test_good_usernames(value):
    assert names.username(value) == value


@pytest.mark.parametrize("value", ["alice\n", "", "a:b", "-x", "a" * 33, "1abc", None, "None$$"])
def test_bad_usernames(value):
    with pytest.raises(names.BadName):
        names.username(value)


@pytest.mark.parametrize("value", BAD_ASSET_NAMES)
def test_bad_asset_names(value):
    with pytest.raises(names.BadName) as caught:
        names.asset_name(value)
    assert len(str(caught.value)) < 200          # a 100,000-character name is not echoed whole


@pytest.mark.parametrize("value,normal", [("/prod/web", "/prod/web"), ("prod/web/", "/prod/web"),
                                          ("//prod//db", "/prod/db")])
def test_node_paths_are_normalised(value, normal):
    assert names.node_path(value) == normal


@pytest.mark.parametrize("value", ["/", "", "/../etc", "/prod/..", "/a/=b", "/a\n", "/a b",
                                   "/" + "a" * 129, "/a" * 300, None])
def test_bad_node_paths(value):
    with pytest.raises(names.BadName):
        names.node_path(value)


@pytest.mark.parametrize("value,normal", [("10.0.0.5", "10.0.0.5"), ("::1", "::1"),
                                          ("2001:DB8::1", "2001:db8::1"), ("web-1", "web-1"),
                                          ("db.example.com", "db.example.com")])
def test_good_addresses(value, normal):
    assert names.address(value) == normal


@pytest.mark.parametrize("value", ["", "10.0.0.5\n", "999.1.1.1", "a b", "-x.example", "x..y",
                                   "a" * 64, ".".join(["a" * 60] * 5), "host;id", "=cmd", None])
def test_bad_addresses(value):
    with pytest.raises(names.BadName) as caught:
        names.address(value)
    assert caught.value.field == "address"


@pytest.mark.parametrize("value,number", [("22", 22), (2222, 2222), ("65535", 65535)])
def test_good_ports(value, number):
    assert names.port(value) == number


@pytest.mark.parametrize("value", ["²", "١٢٣", "0", "65536", "99999999999999999999", "-1", True,
                                   "22\n", None, 2.5])
def test_bad_ports(value):
    with pytest.raises(names.BadName):
        names.port(value)


def test_inventory_functions_apply_the_rules(ctl):
    build_fleet(ctl, users=())
    with pytest.raises(names.BadName):
        inventory.add_zone(ctl, "zz\n", None, True)
    assert not ctl.settings.zone_key_path("zz\n").exists()
    assert not Zone.select().where(Zone.name.startswith("zz")).exists()
    with pytest.raises(names.BadName):
        inventory.add_asset("../../etc", "127.0.0.1", 22, "linux", "dmz", None, None)
    with pytest.raises(names.BadName):
        inventory.add_asset("db-1", "127.0.0.1", 22, "linux", "dmz", "/prod/../x", None)
    with pytest.raises(names.BadName):
        inventory.set_account(ctl, "web-1", None, "pw", privileged=False)
    with pytest.raises(names.BadName):
        inventory.set_account(ctl, "web-1", "carol\n", "pw", privileged=False)
    assert Asset.select().count() == 1 and Node.select().count() == 2
    assert {a.username for a in Account.select()} == {"root"}


@pytest.mark.parametrize("field,value", [("name", "p\nBcc: x@example.com"), ("name", " p"),
                                         ("name", ""), ("usernames", ["ali\nce"])])
def test_plan_names_and_usernames(field, value):
    data = {"name": "p", "usernames": ["alice"], "nodes": ["/prod"], field: value}
    with pytest.raises(PlanError) as caught:
        parse_spec(data)
    assert field in caught.value.errors


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_refuses_a_zone_name_with_a_newline(settings, tmp_path):
    cli = ProcessGroup(keyturn_env(settings, None), tmp_path)
    assert cli.run("init").returncode == 0
    done = cli.run("zone", "add", "zz\n")
    assert done.returncode == 1 and "zone:" in done.stderr and "Traceback" not in done.stderr
    assert not any((settings.data_dir / "zones").glob("zz*"))
    done = cli.run("asset", "add", "=cmd", "--address", "127.0.0.1", "--zone", "zz")
    assert done.returncode == 1 and "name:" in done.stderr


@pytest.mark.parametrize("name", BAD_ASSET_NAMES)
def test_the_api_refuses_bad_asset_names(as_admin, fleet, name):
    answer = as_admin.post_json("/api/v1/assets/new", {"name": name, "address": "127.0.0.1",
                                                       "zone": "dmz"})
    assert 400 <= answer.status_code < 500
    assert len(answer.get_data()) < 1000
    assert Asset.select().count() == 2


@pytest.mark.parametrize("body", [{"name": "db-1", "address": "127.0.0.1\nx", "zone": "dmz"},
                                  {"name": "db-1", "address": "", "zone": "dmz"},
                                  {"name": "db-1", "address": "127.0.0.1", "zone": "dmz",
                                   "node": "/../etc"},
                                  {"name": "db-1", "address": "127.0.0.1", "zone": "dmz",
                                   "port": "²"}])
def test_the_api_refuses_bad_addresses_nodes_and_ports(as_admin, fleet, body):
    answer = as_admin.post_json("/api/v1/assets/new", body)
    assert 400 <= answer.status_code < 500
    assert not Asset.select().where(Asset.name == "db-1").exists()


def test_a_null_username_is_refused_not_stored_as_none(as_admin, fleet):
    asset_id = Asset.get(Asset.name == "web-1").id
    for username in (None, 5, ["alice"], "bad\nname"):
        answer = as_admin.post_json(f"/api/v1/assets/{asset_id}/accounts",
                                    {"username": username, "secret": "pw-123456"})
        assert 400 <= answer.status_code < 500
    assert not Account.select().where(Account.username.not_in(["root", "alice", "bob"])).exists()
