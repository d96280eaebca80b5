"""The directory platforms (`ldap`, `ad`) through the product's front doors: the CLI, the API
and the console take their params from the registry, refuse bad ones by name in one line, take
DNs and UPNs as account names but never filter or DN metacharacters, and secure mode skips their
administrators by name before anything is dispatched."""
from __future__ import annotations

import pytest

from controller import inventory, names
from controller.models import Account, Asset
from controller.names import BadName
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from tests.processes import ProcessGroup, keyturn_env

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def cli(settings, tmp_path):
    group = ProcessGroup(keyturn_env(settings, None), tmp_path)
    for step in (("init",), ("zone", "add", "z")):
        assert group.run(*step).returncode == 0, step
    return group


def one_line_refusal(done, words):
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@only_sqlite
def test_the_cli_adds_directory_assets_and_their_accounts(cli, ctl):
    for args in (["dir-1", "--platform", "ldap", "--param", "base_dn=dc=example,dc=org",
                  "--param", "user_filter=(&(objectClass=person)(uid={username}))",
                  "--param", "tls_ca=/etc/keyturn/ldap-ca.pem"],
                 ["dc-1", "--platform", "ad", "--param", "transport=starttls", "--port", "389"]):
        done = cli.run("asset", "add", *args, "--address", "127.0.0.1", "--zone", "z")
        assert done.returncode == 0, done.stderr
    assert {a.name: (a.port, a.params) for a in Asset.select()} == {
        "dir-1": (636, {"base_dn": "dc=example,dc=org", "tls_ca": "/etc/keyturn/ldap-ca.pem",
                        "user_filter": "(&(objectClass=person)(uid={username}))"}),
        "dc-1": (389, {"transport": "starttls"})}
    for asset, name in (("dir-1", "cn=admin,dc=example,dc=org"), ("dir-1", "alice"),
                        ("dc-1", "Administrator"), ("dc-1", "bob@example.org")):
        done = cli.run("account", "add", asset, name, "--secret-stdin", input="Some-pw-1\n")
        assert done.returncode == 0, done.stderr
    assert Account.select().count() == 4
    one_line_refusal(cli.run("asset", "add", "dir-2", "--platform", "ldap", "--address",
                             "127.0.0.1", "--zone", "z", "--param", "user_filter=uid={username}"),
                     "params.user_filter: not an LDAP filter")
    one_line_refusal(cli.run("account", "add", "dir-1", "x)(uid=*", "--secret-stdin",
                             input="Some-pw-1\n"), "is not valid: OpenLDAP takes a DN, or a name")


@pytest.mark.parametrize("platform,params,words", [
    ("ldap", {"user_filter": "(uid={username}"},
     "params.user_filter: not an LDAP filter with one {username} in balanced parentheses"),
    ("ldap", {"user_dn": "ou=people,dc=example,dc=org"}, "params.user_dn: not a DN with one {username}"),
    ("ad", {"base_dn": "example.org"}, "params.base_dn: not a DN like ou=people,dc=example,dc=org"),
    ("ldap", {"transport": "none"}, "params.transport: must be one of 'ldaps' or 'starttls'"),
    ("ad", {"user_dn": "uid={username},dc=x"},
     "params: user_dn is not a parameter of Active Directory assets"),
])
def test_bad_directory_params_are_refused_by_name(platform, params, words):
    with pytest.raises(BadName) as refused:
        inventory.new_asset("dir-1", "127.0.0.1", None, platform, "z", None, None, params)
    assert words in str(refused.value)


@pytest.mark.parametrize("platform,name", [
    ("ldap", "x)(uid=*"), ("ldap", "*"), ("ldap", "a,b"), ("ldap", "uid=a,b"),
    ("ad", "bob)(|(sAMAccountName=*"), ("ad", "a*"), ("ad", "CN=x,DC=y"), ("ad", "a\\b")])
def test_names_with_filter_or_dn_metacharacters_are_refused(platform, name):
    with pytest.raises(BadName, match="is not valid:"):
        names.username(name, platform)


def test_the_api_and_the_console_form_take_directory_params(as_admin, fleet):
    answer = as_admin.post_json("/api/v1/assets/new", {
        "name": "dir-1", "address": "127.0.0.1", "platform": "ldap", "zone": "dmz",
        "params": {"user_dn": "uid={username},ou=people,dc=example,dc=org"}})
    assert answer.status_code == 201, answer.json
    assert answer.json["asset"]["port"] == 636
    bad = as_admin.post_json("/api/v1/assets/new", {
        "name": "dir-2", "address": "127.0.0.1", "platform": "ldap", "zone": "dmz",
        "params": {"user_filter": "uid={username}"}})
    assert bad.status_code == 409 and "params.user_filter: not an LDAP filter" in bad.json["error"]
    form = {"name": "dc-1", "address": "127.0.0.1", "platform": "ad", "zone": "dmz", "port": "",
            "params.ad.base_dn": "DC=corp,DC=example,DC=com", "params.ad.transport": "",
            "params.ldap.user_filter": "not mine"}
    assert as_admin.post("/assets/new", form).status_code == 302
    assert Asset.get(Asset.name == "dc-1").params == {"base_dn": "DC=corp,DC=example,DC=com"}
    page = as_admin.get("/assets").text
    assert '<option value="ldap">OpenLDAP</option>' in page
    assert '<option value="ad">Active Directory</option>' in page
    assert 'name="params.ldap.user_filter"' in page and 'name="params.ad.base_dn"' in page


def test_secure_mode_skips_directory_administrators_by_name(ctl):
    inventory.add_zone(ctl, "dmz", None, True)
    inventory.add_asset("dir-1", "127.0.0.1", None, "ldap", "dmz", "/dir", None,
                        {"base_dn": "dc=example,dc=org"})
    inventory.add_asset("dc-1", "127.0.0.1", None, "ad", "dmz", "/dir", None)
    inventory.set_account(ctl, "dir-1", "cn=admin,dc=example,dc=org", "Root-pw-1", True)
    inventory.set_account(ctl, "dc-1", "Administrator", "Admin-pw-1", True)
    for asset, user in (("dir-1", "admin"), ("dir-1", "alice"), ("dc-1", "krbtgt"),
                        ("dc-1", "alice")):
        inventory.set_account(ctl, asset, user, "Old-pw-1", False)
    spec = parse_spec({"name": "p", "usernames": ["admin", "alice", "krbtgt", "Administrator"],
                       "nodes": ["/dir"], "params": {"user_filter": "(cn={username})"}})
    execution = start_execution(ctl, save_plan(spec, ctl.vault))
    rotated = {f"{r.account.username}@{r.account.asset.name}" for r in execution.records}
    assert rotated == {"alice@dir-1", "alice@dc-1"}
    log = "\n".join(line.message for line in execution.log_lines)
    assert "skipped admin@dir-1: secure mode protects admin on OpenLDAP" in log
    assert "skipped krbtgt@dc-1: secure mode protects krbtgt on Active Directory" in log
