"""Settling records when several daemons (or a daemon's consumer and housekeeping threads) do
it at once: every write is conditional on the status it read, and counters follow the rows
written, so counts always equal the records' statuses and no success is overwritten."""
from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

from controller import reaper
from controller.db import database
from controller.dispatch import dispatch_execution, dispatch_pending
from controller.models import Account, Execution, Record, utcnow
from controller.planning import start_execution
from controller.progress import apply_progress_batch
from controller.plans import parse_spec, save_plan
from controller.reaper import reap
from controller.results import apply_results
from controller.silence import report_silent
from shared.messages import RotateProgress, RotateResult
from tests.inventory_helpers import build_fleet, sent_commands

USERS = ("u0", "u1", "u2", "u3", "u4")


def started(ctl, assets: int):
    build_fleet(ctl, assets=[f"h{i:02}" for i in range(assets)], users=USERS)
    plan = save_plan(parse_spec({"name": "p", "usernames": list(USERS), "nodes": ["/prod"]}),
                     ctl.vault)
    execution = start_execution(ctl, plan)
    dispatch_execution(ctl, execution.id)
    return execution


def result(record, status: str) -> RotateResult:
    now = time.time()
    return RotateResult(record_id=record.id, attempt=record.attempt, zone="dmz", worker_id="w1",
                        status=status, error_code=None if status == "success" else "login_failed",
                        started_at=now, finished_at=now)


def counts_match_statuses(execution_id: int) -> None:
    execution = Execution.get_by_id(execution_id)
    statuses = [r.status for r in Record.select().where(Record.execution == execution_id)]
    assert (execution.succeeded, execution.failed, execution.unverified) == (
        statuses.count("success"), statuses.count("failed"), statuses.count("unverified"))


def test_the_same_results_applied_by_many_daemons_at_once_count_once(ctl):
    execution = started(ctl, assets=20)
    records = list(Record.select().where(Record.execution == execution.id))
    old = {r.account_id: ctl.vault.decrypt(Account.get_by_id(r.account_id).secret_current)
           for r in records}
    results = [result(r, "success") for r in records]
    barrier = threading.Barrier(6)
    errors = []

    def consumer(seed: int):
        mine = random.Random(seed).sample(results, len(results))
        try:
            barrier.wait()
            for start in range(0, len(mine), 10):
                apply_results(mine[start:start + 10])
        except Exception as exc:   # reported below; a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=consumer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    execution = Execution.get_by_id(execution.id)
    assert (execution.succeeded, execution.status) == (len(records), "success")
    counts_match_statuses(execution.id)
    for record in records:                    # promoted once: previous is the old current
        account = Account.get_by_id(record.account_id)
        assert ctl.vault.decrypt(account.secret_current) == ctl.vault.decrypt(record.new_secret)
        assert ctl.vault.decrypt(account.secret_previous) == old[record.account_id]


def test_a_success_that_lands_while_the_reaper_gives_up_is_kept(ctl, monkeypatch):
    """The reaper reads the overdue records, then (while it asks the broker about the zone
    queues) the consumer applies a success for one of them: the reaper must not overwrite it."""
    ctl.settings.max_dispatch_attempts = 1
    execution = started(ctl, assets=2)
    records = list(Record.select().where(Record.execution == execution.id).order_by(Record.id))
    sent_commands(ctl)                                         # a worker took them all...
    Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()   # ...and went silent
    real_ready = reaper.ready_messages

    def success_lands_meanwhile(broker, queue):
        apply_results([result(records[0], "success")])
        return real_ready(broker, queue)

    monkeypatch.setattr(reaper, "ready_messages", success_lands_meanwhile)
    assert reap(ctl) == (0, len(records) - 1)
    assert Record.get_by_id(records[0].id).status == "success"
    assert {r.status for r in Record.select().where(Record.id != records[0].id)} == {"unverified"}
    counts_match_statuses(execution.id)
    assert Execution.get_by_id(execution.id).status == "failed"


def test_a_record_another_reaper_sent_again_meanwhile_is_left_alone(ctl, monkeypatch):
    """Two daemons' reapers read the same overdue record; one re-queues it and the dispatcher
    sends it again before the other writes: the other must not re-queue the new dispatch."""
    execution = started(ctl, assets=1)
    sent_commands(ctl)
    Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()
    real_ready = reaper.ready_messages

    def other_daemon_requeues_and_sends(broker, queue):
        monkeypatch.setattr(reaper, "ready_messages", real_ready)
        assert reap(ctl) == (len(USERS), 0)
        assert dispatch_pending(ctl) == len(USERS)
        sent_commands(ctl)                     # taken by a worker: the zone queue is empty
        return real_ready(broker, queue)

    monkeypatch.setattr(reaper, "ready_messages", other_daemon_requeues_and_sends)
    assert reap(ctl) == (0, 0)
    records = Record.select().where(Record.execution == execution.id)
    assert {(r.status, r.attempt) for r in records} == {("dispatched", 2)}


def test_result_and_progress_batches_over_the_same_records_never_deadlock(ctl):
    """A result consumer, a progress consumer and the silence watch each write many records in
    one transaction; batches over the same records in opposite orders must wait for each other,
    never deadlock (PostgreSQL aborts one transaction of a deadlock: its batch is lost to an
    error and redelivered)."""
    execution = started(ctl, assets=40)
    records = list(Record.select().where(Record.execution == execution.id).order_by(Record.id))
    sent_commands(ctl)
    # Overdue for the reaper, and (each row rewritten alone, in a random order) stored on
    # PostgreSQL in an order unlike their ids: a scan then visits them unlike an index does.
    for record in random.Random(7).sample(records, len(records)):
        Record.update(deadline=utcnow() - timedelta(seconds=1)).where(Record.id == record.id).execute()
    progress = [RotateProgress(record_id=r.id, attempt=r.attempt, zone="dmz", worker_id="w1",
                               at=time.time() - 3600) for r in records]
    results = [result(r, "success") for r in records]
    barrier = threading.Barrier(5)
    errors = []

    def run(job):
        try:
            barrier.wait()
            job()
        except Exception as exc:   # reported below; a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            database.close()

    def batches(items, size=25):
        return [items[start:start + size] for start in range(0, len(items), size)]

    jobs = [lambda: [apply_progress_batch(b) for b in batches(progress)],
            lambda: [apply_progress_batch(b) for b in batches(progress[::-1])],
            lambda: [apply_results(b) for b in batches(results[::-1])],
            lambda: [report_silent(ctl) for _ in range(20)],
            lambda: [reap(ctl) for _ in range(5)]]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counts_match_statuses(execution.id)
