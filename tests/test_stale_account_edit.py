"""An operator's account edit (a console or CLI process) that read the account before a
rotation settled or claimed it writes only what it sets, from the row as it is now: it never
writes a stale secret back over the one the rotation made current, and never sets a secret
on an account a rotation claimed meanwhile. The stale read is made deterministic by handing
`set_account` the account as it was read before the rotation moved on."""
from __future__ import annotations

import time

import pytest

from controller import inventory
from controller.models import Account
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from shared.errors import KeyturnError
from shared.messages import RotateResult
from tests.inventory_helpers import build_fleet


@pytest.fixture
def rotation(ctl):
    build_fleet(ctl, users=("alice",))
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice"], "nodes": ["/prod"]}),
                     ctl.vault)
    return start_execution(ctl, plan).records.get()


def alice() -> Account:
    return Account.get(Account.username == "alice")


def read_as(monkeypatch, stale: Account) -> None:
    """`set_account` finds `stale`, as a process that read it a moment ago would."""
    monkeypatch.setattr(Account, "get_or_none", classmethod(lambda cls, *a, **k: stale))


def test_an_edit_read_before_a_success_keeps_the_new_secret(ctl, rotation, monkeypatch):
    stale = alice()
    assert stale.busy_execution is not None
    now = time.time()
    apply_results([RotateResult(record_id=rotation.id, attempt=1, zone="dmz", worker_id="w",
                                status="success", started_at=now, finished_at=now)])
    read_as(monkeypatch, stale)
    inventory.set_account(ctl, "web-1", "alice", None, True)     # only makes her privileged
    monkeypatch.undo()
    account = alice()
    assert account.privileged and account.busy_execution is None
    assert ctl.vault.decrypt(account.secret_current) == ctl.vault.decrypt(rotation.new_secret)
    assert ctl.vault.decrypt(account.secret_previous) == ctl.vault.decrypt(rotation.old_secret)
    assert account.secret_pending is None


def test_a_secret_read_as_free_is_refused_once_a_rotation_claimed_it(ctl, rotation,
                                                                    monkeypatch):
    now = time.time()
    apply_results([RotateResult(record_id=rotation.id, attempt=1, zone="dmz", worker_id="w",
                                status="success", started_at=now, finished_at=now)])
    stale = alice()                                              # free when read
    plan = save_plan(parse_spec({"name": "again", "usernames": ["alice"], "nodes": ["/prod"]}),
                     ctl.vault)
    second = start_execution(ctl, plan).records.get()            # a rotation claims her
    read_as(monkeypatch, stale)
    with pytest.raises(KeyturnError, match="is in a rotation"):
        inventory.set_account(ctl, "web-1", "alice", "typed-by-an-operator", False)
    monkeypatch.undo()
    account = alice()
    assert account.busy_execution == second.execution_id
    assert ctl.vault.decrypt(account.secret_current) == ctl.vault.decrypt(rotation.new_secret)
    assert ctl.vault.decrypt(account.secret_pending) == ctl.vault.decrypt(second.new_secret)
