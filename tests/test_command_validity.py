"""Replayed, delayed and duplicated commands (DESIGN.md, bus trust rules): every command is valid
until `not_after`, an account is not rotated again while a command for it may still act, and a
command a worker found expired is sent again with a fresh validity, not failed."""
import time
from datetime import timedelta, timezone

import pytest

from controller.actions import retry_records
from controller.dispatch import dispatch_pending
from controller.models import Account, Execution, Record, utcnow
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from shared.errors import KeyturnError
from shared.messages import RotateResult
from shared.settings import COMMAND_MARGIN
from tests.inventory_helpers import build_fleet, sent_commands


@pytest.fixture
def plan(ctl):
    build_fleet(ctl, assets=("web-1",), users=("alice",))
    return save_plan(parse_spec({"name": "p", "usernames": ["alice"], "nodes": ["/prod"]}), ctl.vault)


def answer(record, status, **extra):
    now = time.time()
    return RotateResult(record_id=record.id, attempt=record.attempt, zone="dmz", worker_id="w",
                        status=status, started_at=now, finished_at=now, **extra)


def dispatched(ctl, plan):
    execution = start_execution(ctl, plan)
    assert dispatch_pending(ctl) == execution.total
    return execution


def test_a_command_is_valid_until_before_its_records_deadline(ctl, plan):
    execution = dispatched(ctl, plan)
    record = execution.records.get()
    command, = sent_commands(ctl)
    deadline = record.deadline.replace(tzinfo=timezone.utc).timestamp()
    assert deadline - command.not_after == pytest.approx(ctl.settings.clock_skew + COMMAND_MARGIN)
    assert command.not_after > time.time() + ctl.settings.rotation_deadline - 60


@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_an_account_is_not_rotated_again_while_a_command_for_it_may_act(ctl, plan, outcome):
    """A copy of the first command, replayed after a second rotation, would set the first
    secret again: so the second waits until the first command's deadline has passed."""
    first = dispatched(ctl, plan)
    record = first.records.get()
    apply_results([answer(record, outcome, error="x" if outcome == "failed" else None)])
    assert Account.get_by_id(record.account_id).busy_execution is None   # ended ...
    second = start_execution(ctl, plan)
    assert second.total == 0 and second.skipped == 1             # ... yet held
    assert Execution.get_by_id(second.id).status == "empty"
    Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()   # its deadline passes
    third = start_execution(ctl, plan)
    assert third.total == 1


def test_a_retry_sets_the_same_secret_and_is_not_held(ctl, plan):
    first = dispatched(ctl, plan)
    record = first.records.get()
    apply_results([answer(record, "failed", error_code="unreachable", error="down")])
    retry = retry_records(ctl, [record.id], "test")
    assert retry.total == 1
    assert retry.records.get().new_secret != record.new_secret          # fresh ciphertext ...
    assert (ctl.vault.decrypt(retry.records.get().new_secret)
            == ctl.vault.decrypt(record.new_secret))                    # ... of the same secret


def test_a_failed_rotation_keeps_its_secret_as_a_candidate(ctl, plan):
    """A copy of the command may still set it while the command is valid: a verify must try it."""
    execution = dispatched(ctl, plan)
    record = execution.records.get()
    apply_results([answer(record, "failed", error_code="unreachable", error="down")])
    account = Account.get_by_id(record.account_id)
    assert account.secret_current == record.old_secret
    assert account.secret_pending == record.new_secret


def test_an_expired_command_is_sent_again_with_a_fresh_validity(ctl, plan):
    execution = dispatched(ctl, plan)
    record = execution.records.get()
    first, = sent_commands(ctl)
    expired = answer(record, "failed", error_code="expired", error="expired",
                     expired_not_after=first.not_after)
    assert apply_results([expired]) == 0                      # not an outcome: nothing counted
    again = Record.get_by_id(record.id)
    assert (again.status, again.attempt) == ("pending", 1)
    Record.update(dispatched_at=utcnow() - timedelta(seconds=5)).execute()
    assert dispatch_pending(ctl) == 1
    second, = sent_commands(ctl)
    assert second.not_after > first.not_after
    assert second.new_secret.get_secret_value() == first.new_secret.get_secret_value()
    done = Execution.get_by_id(execution.id)
    assert (done.status, done.failed) == ("running", 0)


def test_an_expired_copy_of_an_earlier_dispatch_changes_nothing(ctl, plan):
    execution = dispatched(ctl, plan)
    record = execution.records.get()
    command, = sent_commands(ctl)
    old_copy = answer(record, "failed", error_code="expired", error="expired",
                      expired_not_after=record.dispatched_at.timestamp() - 3600)
    assert apply_results([old_copy]) == 0
    assert Record.get_by_id(record.id).status == "dispatched"       # the current one runs on
    no_validity = answer(record, "failed", error_code="expired", error="expired")
    assert apply_results([no_validity]) == 0
    assert Record.get_by_id(record.id).status == "dispatched"


def test_a_retry_of_a_record_a_newer_rotation_superseded_is_refused(ctl, plan):
    """Retrying it would set an older intent over the newer rotation's: refused, nothing made."""
    first = dispatched(ctl, plan)
    record = first.records.get()
    apply_results([answer(record, "failed", error_code="unreachable", error="down")])
    Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()
    dispatched(ctl, plan)                      # a newer rotation now holds the account
    executions = Execution.select().count()
    with pytest.raises(KeyturnError, match="its account has a later record"):
        retry_records(ctl, [record.id], "test")
    assert Execution.select().count() == executions
