"""SSH-key accounts from the CLI, the API and the console, and plan runs that match no account:
they end `empty` with the reason, never `success`."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          BestAvailableEncryption)

from controller import inventory
from controller.models import Account, Asset, Execution, LogLine
from controller.planning import resolve_accounts, start_execution
from controller.plans import parse_spec, save_plan
from controller.secretgen import RuleError
from tests.inventory_helpers import build_fleet
from tests.processes import ProcessGroup, keyturn_env


def pem_key() -> str:
    """An RSA key in the traditional PEM format: stored as OpenSSH after the check."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()).decode()


def openssh_key(password: bytes | None = None) -> str:
    encryption = BestAvailableEncryption(password) if password else NoEncryption()
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, encryption).decode()


def key_plan(ctl, **fields):
    data = {"name": "keys", "usernames": ["deploy"], "nodes": ["/prod"],
            "secret_type": "ssh_key"} | fields
    return save_plan(parse_spec(data), ctl.vault)


def log_text(execution_id: int) -> str:
    return "\n".join(line.message for line in
                     LogLine.select().where(LogLine.execution == execution_id).order_by(LogLine.id))


def test_a_key_account_is_stored_and_an_ssh_key_plan_finds_it(ctl):
    build_fleet(ctl, users=())
    key = pem_key()
    account = inventory.set_account(ctl, "web-1", "deploy", key, False, "ssh_key")
    stored = ctl.vault.decrypt(Account.get_by_id(account.id).secret_current)
    assert account.secret_type == "ssh_key" and stored.startswith("-----BEGIN OPENSSH PRIVATE")
    assert [a.username for a in resolve_accounts(key_plan(ctl))] == ["deploy"]
    again = inventory.set_account(ctl, "web-1", "deploy", None, True)   # type kept
    assert again.secret_type == "ssh_key" and again.privileged


@pytest.mark.parametrize("secret", ["not a key", openssh_key(b"locked"),
                                    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
                                    "-----END OPENSSH PRIVATE KEY-----\n"],
                         ids=["not a key", "passphrase", "truncated"])   # the same in every process
def test_a_key_that_does_not_parse_is_refused_without_echoing_it(ctl, secret):
    build_fleet(ctl, users=())
    with pytest.raises(RuleError) as caught:
        inventory.set_account(ctl, "web-1", "deploy", secret, False, "ssh_key")
    assert caught.value.field == "secret" and secret.strip()[:20] not in str(caught.value)
    assert not Account.select().where(Account.username == "deploy").exists()


def test_changing_the_type_needs_the_new_secret(ctl):
    build_fleet(ctl, users=("alice",))
    with pytest.raises(inventory.names.BadName) as caught:
        inventory.set_account(ctl, "web-1", "alice", None, False, "ssh_key")
    assert caught.value.field == "secret_type"
    with pytest.raises(inventory.names.BadName):
        inventory.set_account(ctl, "web-1", "alice", "pw", False, "certificate")
    changed = inventory.set_account(ctl, "web-1", "alice", openssh_key(), False, "ssh_key")
    assert changed.secret_type == "ssh_key"
    assert ctl.vault.decrypt(changed.secret_previous) == "old-alice-web-1"


def test_a_plan_that_matches_no_account_ends_empty_with_the_reason(ctl):
    build_fleet(ctl, users=("deploy",))           # a password account: not matched
    execution = Execution.get_by_id(start_execution(ctl, key_plan(ctl)).id)
    assert (execution.status, execution.total, execution.finished_at is not None) == (
        "empty", 0, True)
    assert ("no account matched: user names deploy on 0 assets and 1 node (with the assets "
            "under them), secret type ssh_key") in log_text(execution.id)


def test_the_api_and_the_console_set_key_accounts(ctl, as_admin, fleet):
    asset_id = Asset.get(Asset.name == "web-1").id
    key = openssh_key()
    answer = as_admin.post_json(f"/api/v1/assets/{asset_id}/accounts",
                                {"username": "deploy", "secret_type": "ssh_key", "secret": key})
    assert answer.status_code == 200 and "PRIVATE KEY" not in answer.get_data(as_text=True)
    assert Account.get(Account.username == "deploy").secret_type == "ssh_key"
    bad = as_admin.post_json(f"/api/v1/assets/{asset_id}/accounts",
                             {"username": "ci", "secret_type": "ssh_key", "secret": "hunter2"})
    assert 400 <= bad.status_code < 500 and "hunter2" not in bad.get_data(as_text=True)
    form = as_admin.post(f"/assets/{asset_id}/accounts",
                         {"username": "ci", "secret_type": "ssh_key", "secret": pem_key()})
    assert form.status_code == 302
    assert Account.get(Account.username == "ci").secret_type == "ssh_key"
    page = as_admin.get(f"/assets/{asset_id}").get_data(as_text=True)
    assert 'name="secret_type"' in page and "PRIVATE KEY-----\n" not in page


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_adds_a_key_account_and_an_empty_run_exits_non_zero(settings, tmp_path, ctl):
    cli = ProcessGroup(keyturn_env(settings, None), tmp_path)
    for step in (("zone", "add", "z"), ("asset", "add", "a1", "--address", "127.0.0.1",
                                        "--zone", "z", "--node", "/prod")):
        assert cli.run(*step).returncode == 0, step
    key = openssh_key()
    added = cli.run("account", "add", "a1", "deploy", "--secret-type", "ssh_key",
                    "--secret-stdin", input=key)
    assert added.returncode == 0, added.stderr
    assert "(ssh_key)" in added.stdout and "PRIVATE" not in added.stdout + added.stderr
    refused = cli.run("account", "add", "a1", "ci", "--secret-type", "ssh_key",
                      "--secret-stdin", input="-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbits\n")
    assert refused.returncode == 1 and "secretbits" not in refused.stdout + refused.stderr
    assert "not an unencrypted OpenSSH or PEM private key" in refused.stderr
    assert cli.run("plan", "add", "keys", "--username", "nobody", "--node", "/prod",
                   "--secret-type", "ssh_key").returncode == 0
    run = cli.run("plan", "run", "keys", "--wait", "--timeout", "30")
    assert run.returncode == 1
    assert "is empty: no account matched: user names nobody" in run.stderr
    assert "secret type ssh_key" in run.stderr
