"""Dispatch, results and the reaper on SQLite and PostgreSQL, over the in-process broker.
(The end-to-end tests run the same code over RabbitMQ with real workers and hosts.)"""
import json
import time
from datetime import timedelta

import pytest

from controller.dispatch import dispatch_execution, dispatch_pending
from controller.models import Account, Asset, Execution, Record, utcnow
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.reaper import reap
from controller.results import apply_results
from shared import zonecrypto
from shared.broker import rotate_queue
from shared.messages import RotateResult, open_envelope, parse_envelope
from tests.inventory_helpers import build_fleet, sent_commands


@pytest.fixture
def execution(ctl):
    build_fleet(ctl, assets=("web-1", "web-2"), users=("alice", "bob"))
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice", "bob"], "nodes": ["/prod"]}),
                     ctl.vault)
    return start_execution(ctl, plan)


def zone_channel(ctl):
    zone_key = zonecrypto.read_private_key(ctl.settings.zone_key_path("dmz"))
    return zonecrypto.Channel(zone_key, ctl.private_key.public_key)


def published(ctl):
    queue = ctl.broker.queues.get(rotate_queue("dmz"))
    return list(queue.queue) if queue else []


def result(record, status, **extra):
    now = time.time()
    return RotateResult(record_id=record.id, attempt=record.attempt, zone="dmz", worker_id="w1",
                        status=status, started_at=now, finished_at=now, **extra)


def test_dispatch_seals_one_message_per_account(ctl, execution):
    assert dispatch_execution(ctl, execution.id) == 4
    messages = published(ctl)
    assert len(messages) == 4
    channel = zone_channel(ctl)
    secrets = {ctl.vault.decrypt(r.new_secret) for r in execution.records} | {"rootpw"}
    for raw in messages:
        body = raw.decode()
        assert not any(secret in body for secret in secrets)     # sealed on the bus
        command = open_envelope(parse_envelope(json.loads(body)["args"][0]), channel)
        record = Record.get_by_id(command.record_id)
        assert command.new_secret.get_secret_value() == ctl.vault.decrypt(record.new_secret)
        assert [s.get_secret_value() for s in command.login_secrets] == ["rootpw"]
        assert command.login_username == "root"
        assert command.old_secret.get_secret_value() == ctl.vault.decrypt(record.old_secret)
        assert "**" in repr(command) and command.new_secret.get_secret_value() not in repr(command)
    assert {r.status for r in Record.select()} == {"dispatched"}
    assert dispatch_pending(ctl) == 0                            # claimed once, published once


def test_success_promotes_and_is_idempotent(ctl, execution):
    record = execution.records.get()
    account = Account.get_by_id(record.account_id)
    old = ctl.vault.decrypt(account.secret_current)
    new = ctl.vault.decrypt(record.new_secret)
    assert apply_results([result(record, "success", host_key="ssh-ed25519 AAAA")]) == 1
    assert apply_results([result(record, "success")]) == 0       # redelivered: no change
    assert apply_results([result(record, "failed", error="late")]) == 0
    account = Account.get_by_id(record.account_id)
    assert ctl.vault.decrypt(account.secret_current) == new
    assert ctl.vault.decrypt(account.secret_previous) == old
    assert account.secret_pending is None and account.busy_execution is None
    assert Asset.get_by_id(account.asset_id).host_key == "ssh-ed25519 AAAA"
    assert Execution.get_by_id(execution.id).succeeded == 1


def test_failed_keeps_current_and_frees_the_account(ctl, execution):
    """The pending secret stays a candidate (a valid copy of the command may still set it)
    until the next rotation claims the account."""
    record = execution.records.get()
    before = Account.get_by_id(record.account_id)
    apply_results([result(record, "failed", error_code="user_missing", error="no such user")])
    after = Account.get_by_id(record.account_id)
    assert bytes(after.secret_current) == bytes(before.secret_current)
    assert bytes(after.secret_pending) == bytes(record.new_secret) and after.busy_execution is None
    assert Record.get_by_id(record.id).error == "no such user"


def test_unverified_keeps_both_candidates_and_the_lock(ctl, execution):
    record = execution.records.get()
    apply_results([result(record, "unverified", error_code="verify_failed", error="x")])
    account = Account.get_by_id(record.account_id)
    assert ctl.vault.decrypt(account.secret_pending) == ctl.vault.decrypt(record.new_secret)
    assert account.secret_current is not None and account.busy_execution == execution.id
    # a late success (the change did land) still promotes: never lose the secret on the host
    apply_results([result(record, "success")])
    account = Account.get_by_id(record.account_id)
    assert ctl.vault.decrypt(account.secret_current) == ctl.vault.decrypt(record.new_secret)
    done = Execution.get_by_id(execution.id)
    assert (done.succeeded, done.unverified) == (1, 0)


def test_execution_ends_with_counts_when_the_last_record_ends(ctl, execution):
    records = list(execution.records)
    apply_results([result(records[0], "success"), result(records[1], "failed", error="e")])
    assert Execution.get_by_id(execution.id).status == "running"
    apply_results([result(records[2], "success"), result(records[3], "unverified", error="u")])
    done = Execution.get_by_id(execution.id)
    assert (done.status, done.succeeded, done.failed, done.unverified) == ("failed", 2, 1, 1)
    assert done.finished_at is not None


def test_result_for_unknown_record_is_dropped(ctl, execution, caplog):
    ghost = Record(id=999999, attempt=1)
    assert apply_results([result(ghost, "success")]) == 0
    assert "unknown record 999999" in caplog.text


def test_reaper_waits_while_the_zone_queue_has_work(ctl, execution):
    dispatch_execution(ctl, execution.id)
    Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()
    assert reap(ctl) == (0, 0)                  # four messages still wait their turn
    assert {r.status for r in Record.select()} == {"dispatched"}


def test_reaper_redispatches_lost_messages_then_gives_up_as_unverified(ctl, execution):
    dispatch_execution(ctl, execution.id)
    sent = 0
    for attempt in range(1, ctl.settings.max_dispatch_attempts + 1):
        sent += len(published(ctl))
        ctl.broker.flush(rotate_queue("dmz"))   # the messages are lost
        Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()
        requeued, given_up = reap(ctl)
        if attempt < ctl.settings.max_dispatch_attempts:
            assert (requeued, given_up) == (4, 0)
            assert dispatch_pending(ctl) == 4
            assert {r.attempt for r in Record.select()} == {attempt + 1}
        else:
            assert (requeued, given_up) == (0, 4)
    assert sent == 4 * ctl.settings.max_dispatch_attempts
    assert {r.status for r in Record.select()} == {"unverified"}
    done = Execution.get_by_id(execution.id)
    assert (done.status, done.unverified) == ("failed", 4)
    for account in Account.select().where(Account.secret_pending.is_null(False)):
        assert account.busy_execution == execution.id               # both candidates kept


def test_a_record_whose_asset_lost_its_login_fails_with_a_reason(ctl, execution):
    Account.update(privileged=False).where(Account.username == "root").execute()
    assert dispatch_execution(ctl, execution.id) == 0
    assert published(ctl) == []
    failed = list(Record.select())
    assert {(r.status, r.error_code) for r in failed} == {("failed", "no_login")}
    assert Execution.get_by_id(execution.id).status == "failed"
    assert Account.select().where(Account.busy_execution.is_null(False)).count() == 0


def test_a_record_whose_command_does_not_validate_fails_alone(ctl, execution):
    Asset.update(port=70000).where(Asset.name == "web-1").execute()     # bad data, not via our inputs
    assert dispatch_execution(ctl, execution.id) == 2                    # web-2's records still go out
    assert len(published(ctl)) == 2
    bad = list(Record.select().join(Account).join(Asset).where(Asset.name == "web-1"))
    assert {(r.status, r.error_code) for r in bad} == {("failed", "bad_command")}
    assert "port" in bad[0].error and "70000" not in bad[0].error       # names the field, not the value
    assert dispatch_pending(ctl) == 0                                    # nothing left to loop on


def test_a_failure_from_an_earlier_attempt_does_not_end_the_current_one(ctl, execution):
    record = execution.records.get()
    Record.update(attempt=2, status="dispatched").where(Record.id == record.id).execute()
    stale = RotateResult(record_id=record.id, attempt=1, zone="dmz", worker_id="w", status="failed",
                         error_code="unreachable", error="late", started_at=time.time(),
                         finished_at=time.time())
    assert apply_results([stale]) == 0
    assert Record.get_by_id(record.id).status == "dispatched"
    late_success = stale.model_copy(update={"status": "success", "error": None, "error_code": None})
    assert apply_results([late_success]) == 1           # but a success always counts


def test_a_note_of_a_success_reaches_the_execution_log(ctl, execution):
    from controller.models import LogLine

    record = execution.records.get()
    apply_results([result(record, "success", note="persisted with ACL SAVE")])
    lines = [line.message for line in LogLine.select().where(LogLine.execution == execution.id)]
    assert any(line.endswith(": persisted with ACL SAVE") and f"record {record.id}" in line
               for line in lines)


def test_a_refusal_a_worker_saw_spares_the_next_commands_its_check_for_a_day(ctl, execution):
    """A result's `refusal_seen` is kept per asset and secret type; the next commands for that
    asset (not for others) say `refusal_known`, until it is a day old."""
    dispatch_execution(ctl, execution.id)
    assert not any(c.refusal_known for c in sent_commands(ctl))
    records = list(execution.records.order_by(Record.id))
    seen_on = records[0].account.asset
    apply_results([result(records[0], "success", refusal_seen=True)]
                  + [result(record, "failed") for record in records[1:]])
    assert set(Asset.get_by_id(seen_on.id).refusals) == {"password"}

    def next_commands():
        Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()   # commands expired
        again = start_execution(ctl, execution.plan)
        dispatch_execution(ctl, again.id)
        commands = sent_commands(ctl)
        apply_results([result(r, "failed") for r in again.records])
        return {(c.asset.name, c.username): c.refusal_known for c in commands}

    known = next_commands()
    assert known == {(name, user): name == seen_on.name
                     for name in ("web-1", "web-2") for user in ("alice", "bob")}
    Asset.update(refusals={"password": time.time() - 86400 - 1}).where(
        Asset.id == seen_on.id).execute()
    assert not any(next_commands().values())
