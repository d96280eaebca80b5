"""Planning on SQLite and PostgreSQL: account resolution, secure mode, pending records."""
import pytest

from controller import inventory
from controller.models import Account, Execution, LogLine, Record
from controller.planning import resolve_accounts, start_execution
from controller.plans import PlanError, parse_spec, save_plan
from tests.inventory_helpers import build_fleet


def make_plan(ctl, **fields):
    data = {"name": "p", "usernames": ["alice"], "assets": [], "nodes": ["/prod"]} | fields
    return save_plan(parse_spec(data), ctl.vault)


def log_text(execution):
    return "\n".join(line.message for line in execution.log_lines.order_by(LogLine.id))


def test_nodes_cover_their_subtree_only(ctl):
    build_fleet(ctl, assets=("web-1",), node="/prod/web")
    inventory.add_asset("db-1", "127.0.0.1", 22, "linux", "dmz", "/prod", None)
    inventory.add_asset("other", "127.0.0.1", 22, "linux", "dmz", "/production", None)
    inventory.add_asset("named", "127.0.0.1", 22, "linux", "dmz", None, None)
    for name in ("db-1", "other", "named"):
        inventory.set_account(ctl, name, "alice", "x", privileged=False)
    plan = make_plan(ctl, assets=["named"], nodes=["/prod"])
    assert sorted(a.asset_name for a in resolve_accounts(plan)) == ["db-1", "named", "web-1"]


def test_secure_mode_skips_privileged_and_root_and_logs_each(ctl):
    build_fleet(ctl, users=("alice", "administrator"), privileged=("admin", "pw"))
    inventory.set_account(ctl, "web-1", "root", "r", privileged=False)
    plan = make_plan(ctl, usernames=["alice", "root", "administrator", "admin"])
    execution = start_execution(ctl, plan)
    assert execution.total == 1 and execution.skipped == 3
    assert [r.account.username for r in execution.records] == ["alice"]
    text = log_text(execution)
    for user in ("root", "administrator", "admin"):
        assert f"skipped {user}@web-1: secure mode" in text


def test_secure_mode_off_rotates_them(ctl):
    build_fleet(ctl, users=("alice",))
    ctl.settings.secure_mode = False
    execution = start_execution(ctl, make_plan(ctl, usernames=["alice", "root"]))
    assert sorted(r.account.username for r in execution.records) == ["alice", "root"]


def test_records_hold_old_and_new_secret_before_dispatch(ctl):
    build_fleet(ctl, assets=("web-1", "web-2"), users=("alice", "bob"))
    execution = start_execution(ctl, make_plan(ctl, usernames=["alice", "bob"], length=24))
    records = list(execution.records)
    assert len(records) == 4 and {r.status for r in records} == {"pending"}
    for record in records:
        account = Account.get_by_id(record.account_id)
        new = ctl.vault.decrypt(record.new_secret)
        assert len(new) == 24
        assert ctl.vault.decrypt(record.old_secret) == f"old-{account.username}-{account.asset.name}"
        assert ctl.vault.decrypt(account.secret_pending) == new
        assert account.busy_execution == execution.id
    assert len({ctl.vault.decrypt(r.new_secret) for r in records}) == 4


def test_an_account_is_never_in_two_rotations(ctl):
    build_fleet(ctl, users=("alice",))
    plan = make_plan(ctl)
    first = start_execution(ctl, plan)
    second = start_execution(ctl, plan)
    assert first.total == 1 and second.total == 0 and second.skipped == 1
    assert "in another rotation" in log_text(second)
    assert Execution.get_by_id(second.id).status == "empty"   # nothing to do: ended at once
    assert "nothing rotated: the account it matched was skipped" in log_text(second)
    assert Record.select().count() == 1


def test_specific_strategy_uses_the_given_secret(ctl):
    build_fleet(ctl, users=("alice",))
    plan = make_plan(ctl, strategy="specific", secret="Given $ {{x}} ü")
    record = start_execution(ctl, plan).records.get()
    assert ctl.vault.decrypt(record.new_secret) == "Given $ {{x}} ü"


@pytest.mark.parametrize("fields,field", [
    ({"length": 4}, "length"),
    ({"lowercase": False, "uppercase": False, "digits": False, "symbols": False}, "rules"),
    ({"symbols": True, "lowercase": False, "uppercase": False, "digits": False,
      "exclude_symbols": "!#$%&()*+,-.:;<=?@[]_~"}, "exclude_symbols"),
    ({"strategy": "specific"}, "secret"),
    ({"usernames": ["bad/name"]}, "usernames"),
    ({"assets": ["nope"]}, "assets"),
])
def test_a_plan_that_cannot_work_is_refused_when_saved(ctl, fields, field):
    build_fleet(ctl, users=("alice",))
    with pytest.raises(PlanError) as caught:
        make_plan(ctl, **fields)
    assert field in caught.value.errors


def test_plan_errors_never_echo_the_secret(ctl):
    build_fleet(ctl, users=("alice",))
    with pytest.raises(PlanError) as caught:
        make_plan(ctl, strategy="specific", secret="top-secret\nsecond line")
    assert "top-secret" not in str(caught.value)


def test_ssh_key_plans_generate_keys_for_key_accounts_only(ctl):
    build_fleet(ctl, users=("alice",))
    from controller.inventory import set_account
    set_account(ctl, "web-1", "deploy", None, privileged=False)
    Account.update(secret_type="ssh_key").where(Account.username == "deploy").execute()
    plan = make_plan(ctl, usernames=["alice", "deploy"], secret_type="ssh_key")
    record = start_execution(ctl, plan).records.get()
    assert record.account.username == "deploy"
    key = ctl.vault.decrypt(record.new_secret)
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_a_given_private_key_must_open_with_its_passphrase(ctl):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import (BestAvailableEncryption, Encoding,
                                                              PrivateFormat)
    build_fleet(ctl, users=("alice",))
    locked = ed25519.Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, BestAvailableEncryption(b"open sesame")).decode()
    with pytest.raises(PlanError) as caught:
        make_plan(ctl, secret_type="ssh_key", strategy="specific", secret=locked, passphrase="wrong")
    assert "secret" in caught.value.errors and "open sesame" not in str(caught.value)
    plan = make_plan(ctl, secret_type="ssh_key", strategy="specific", secret=locked,
                     passphrase="open sesame")
    stored = ctl.vault.decrypt(plan.given_secret)
    assert "OPENSSH PRIVATE KEY" in stored and stored != locked   # stored without the passphrase


def test_plan_params_are_validated_and_never_hold_a_secret(ctl):
    build_fleet(ctl, users=("alice",))
    plan = make_plan(ctl, params={"become": "su", "create_user": True, "groups": ["wheel"]})
    assert plan.params["become"] == "su" and plan.params["groups"] == ["wheel"]
    for bad in ({"become": "doas"}, {"become_secret": "x"}, {"uid": -1}):
        with pytest.raises(PlanError) as caught:
            make_plan(ctl, name="bad", params=bad)
        assert any(field.startswith("params") for field in caught.value.errors)
