"""Record actions on SQLite and PostgreSQL: retry, verify, ignore, restore."""
import time

import pytest

from controller.actions import (ignore_record, restore_record, retry_failed, retry_records,
                                unverified_accounts, verify_accounts)
from controller.models import Account, AuditEvent, Record
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from shared.errors import KeyturnError
from shared.messages import RotateResult
from tests.inventory_helpers import build_fleet


@pytest.fixture
def plan(ctl):
    build_fleet(ctl, users=("alice", "bob"))
    return save_plan(parse_spec({"name": "p", "usernames": ["alice", "bob"], "nodes": ["/prod"]}),
                     ctl.vault)


def finish(record, status, **extra):
    now = time.time()
    apply_results([RotateResult(record_id=record.id, attempt=1, zone="dmz", worker_id="w",
                                status=status, started_at=now, finished_at=now, **extra)])


def secret_of(ctl, account_id, version):
    return ctl.vault.decrypt(getattr(Account.get_by_id(account_id), f"secret_{version}"))


def test_retry_sets_the_same_new_secret_and_links_the_original(ctl, plan):
    first = start_execution(ctl, plan)
    failed, ok = list(first.records)
    finish(failed, "failed", error_code="unreachable", error="down")
    finish(ok, "success")
    retry = retry_failed(ctl, first.id, "tester")
    again = retry.records.get()
    assert retry.trigger == "retry" and retry.retry_of_id == first.id and retry.total == 1
    assert again.retry_of_id == failed.id and again.account_id == failed.account_id
    assert ctl.vault.decrypt(again.new_secret) == ctl.vault.decrypt(failed.new_secret)
    assert secret_of(ctl, failed.account_id, "pending") == ctl.vault.decrypt(failed.new_secret)
    with pytest.raises(KeyturnError, match="nothing to retry"):
        retry_records(ctl, [ok.id], "tester")


def test_unverified_account_is_held_until_retried_or_verified(ctl, plan):
    first = start_execution(ctl, plan)
    record, other = list(first.records)
    finish(record, "unverified", error_code="verify_failed", error="?")
    finish(other, "success")
    second = start_execution(ctl, plan)                    # a plan run never takes it over
    assert [r.account_id for r in second.records] == [other.account_id]
    retry = retry_records(ctl, [record.id], "tester")      # a retry does
    assert retry.total == 1
    assert Account.get_by_id(record.account_id).busy_execution == retry.id


@pytest.mark.parametrize("working,expected", [(1, "new"), (0, "old")])
def test_verify_settles_on_the_candidate_that_logs_in(ctl, plan, working, expected):
    first = start_execution(ctl, plan)
    record = first.records.first()
    old = secret_of(ctl, record.account_id, "current")
    new = ctl.vault.decrypt(record.new_secret)
    finish(record, "unverified", error_code="no_result", error="?")
    accounts = unverified_accounts(first.id)
    assert [a.id for a in accounts] == [record.account_id]
    check = verify_accounts(ctl, accounts, "tester")
    probe = check.records.get()
    assert probe.action == "verify" and ctl.vault.decrypt(probe.new_secret) == new
    finish(probe, "success", working_index=working)
    account = Account.get_by_id(record.account_id)
    assert ctl.vault.decrypt(account.secret_current) == {"new": new, "old": old}[expected]
    assert account.busy_execution is None
    if expected == "new":
        assert account.secret_pending is None


def test_verify_with_no_working_candidate_keeps_both(ctl, plan):
    first = start_execution(ctl, plan)
    record = first.records.first()
    finish(record, "unverified", error="?")
    probe = verify_accounts(ctl, unverified_accounts(first.id), "tester").records.get()
    finish(probe, "success", working_index=None)
    assert Record.get_by_id(probe.id).status == "failed"
    account = Account.get_by_id(record.account_id)
    assert account.secret_pending is not None and account.secret_current is not None


def test_ignore_and_restore_are_audited(ctl, plan):
    first = start_execution(ctl, plan)
    failed, unverified = list(first.records)
    finish(failed, "failed", error="x")
    finish(unverified, "unverified", error="y")
    ignore_record(failed.id, "admin")
    assert Record.get_by_id(failed.id).ignored
    restore_record(unverified.id, "admin")
    assert secret_of(ctl, unverified.account_id, "current") == ctl.vault.decrypt(unverified.new_secret)
    assert {(e.action, e.target) for e in AuditEvent.select().where(
        AuditEvent.action.startswith("record."))} == {
        ("record.ignore", f"record/{failed.id}"), ("record.restore", f"record/{unverified.id}")}
    with pytest.raises(KeyturnError):
        restore_record(failed.id, "admin")


def test_a_record_is_restored_once(ctl, plan):
    """A second restore (another admin, a second click) changes nothing: the account's
    previous secret stays the one it had before the rotation."""
    execution = start_execution(ctl, plan)
    record = execution.records.get()
    old = ctl.vault.decrypt(record.old_secret)
    finish(record, "unverified", error="y")
    restore_record(record.id, "admin")
    with pytest.raises(KeyturnError, match="restored already"):
        restore_record(record.id, "another admin")
    assert secret_of(ctl, record.account_id, "previous") == old
    assert secret_of(ctl, record.account_id, "current") == ctl.vault.decrypt(record.new_secret)
    assert AuditEvent.select().where(AuditEvent.action == "record.restore").count() == 1
