"""End to end, all real: RabbitMQ, PostgreSQL, `keyturn daemon`, one `keyturn worker` per zone
as processes, and sshd test hosts with their own user databases."""
from __future__ import annotations

import json

import pytest

from controller import inventory
from controller.models import Account, Asset, AuditEvent, Execution, Record
from tests.e2e import USERS, current_secret, save

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def test_plan_rotates_every_account_in_both_zones(ctl, zone_fleet, cluster):
    save(ctl, "quarterly", ["alice", "bob"])
    run = cluster.run("plan", "run", "quarterly", "--wait", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    execution = Execution.get()
    assert (execution.status, execution.succeeded, execution.total) == ("success", 8, 8)

    for asset, host in zone_fleet.items():
        for user in ("alice", "bob"):
            new = current_secret(ctl, asset, user)
            assert new != USERS[user]
            assert host.password_works(user, new), f"{user}@{asset} new secret"
            assert not host.password_works(user, USERS[user]), f"{user}@{asset} old secret"
        assert host.password_works("carol", USERS["carol"])      # not in the plan: untouched
        assert current_secret(ctl, asset, "carol") == USERS["carol"]

    for record in Record.select(Record, Account, Asset).join(Account).join(Asset):
        zone = record.account.asset.name.split("-")[0]
        assert record.worker_id.endswith(f":{cluster.workers[zone].pid}"), record.worker_id
    for asset, host in zone_fleet.items():      # west learned its keys on first use; east kept its pins
        assert Asset.get(Asset.name == asset).host_key == host.host_public_key


def test_failures_end_with_a_reason_and_keep_the_current_secret(ctl, zone_fleet, cluster):
    inventory.set_account(ctl, "east-0", "root", "wrong-root-password", True)
    zone_fleet["east-1"].stop()
    inventory.set_account(ctl, "west-2", "dave", "dave-old", False)   # known to us, not on the host
    save(ctl, "mixed", ["alice", "dave"])
    run = cluster.run("plan", "run", "mixed", "--wait", timeout=240)
    assert run.returncode == 1
    outcomes = {(r.account.asset.name, r.account.username): r
                for r in Record.select(Record, Account, Asset).join(Account).join(Asset)}
    expected = {("east-0", "alice"): "login_failed", ("east-1", "alice"): "unreachable",
                ("west-2", "dave"): "user_missing"}
    for key, code in expected.items():
        record = outcomes[key]
        assert (record.status, record.error_code) == ("failed", code), key
        assert record.error and key[0] in record.error
    assert current_secret(ctl, "east-0", "alice") == USERS["alice"]
    assert current_secret(ctl, "west-2", "dave") == "dave-old"
    assert zone_fleet["east-0"].password_works("alice", USERS["alice"])
    for asset in ("west-2", "west-3"):
        assert outcomes[(asset, "alice")].status == "success"
        assert zone_fleet[asset].password_works("alice", current_secret(ctl, asset, "alice"))
    assert "not succeeded" in run.stdout and "east-1" in run.stdout


def test_hostile_given_password_rotates_exactly(ctl, zone_fleet, cluster):
    hostile = """it's "quoted" $HOME `x` {{ y }} \\ ; | & ü ñ 密码"""
    save(ctl, "given", ["bob"], strategy="specific", secret=hostile)
    run = cluster.run("plan", "run", "given", "--wait", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    for asset, host in zone_fleet.items():
        assert current_secret(ctl, asset, "bob") == hostile
        assert host.password_works("bob", hostile)
    for process in cluster.processes:
        assert hostile not in process.log_text()


def test_records_cli_lists_outcomes_as_json(ctl, zone_fleet, cluster):
    save(ctl, "one", ["carol"], nodes=["/dc/west"])
    assert cluster.run("plan", "run", "one", "--wait", timeout=240).returncode == 0
    listed = cluster.run("records", "--json", "--status", "success")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(row["asset"] for row in rows) == ["west-2", "west-3"]
    assert all(row["status"] == "success" and row["account"] == "carol" for row in rows)
    shown = cluster.run("secret", "show", "west-2", "carol")
    assert shown.stdout.strip() == current_secret(ctl, "west-2", "carol")
    audit = AuditEvent.get(AuditEvent.action == "secret.show")
    assert audit.target == "account/west-2/carol" and audit.actor.startswith("cli:")
