"""The execution log's story of each account, over the in-process broker on SQLite and
PostgreSQL: dispatched (in batched inserts), picked up, changed and proven or failed with its
reason, silent past the timeout, dispatched again and given up by the reaper; never a secret."""
import time
from datetime import timedelta

from controller.db import database
from controller.dispatch import dispatch_execution, dispatch_pending
from controller.models import LogLine, Record, utcnow
from controller.progress import apply_progress_batch
from controller.reaper import reap
from controller.results import apply_results
from controller.silence import report_silent
from shared.broker import rotate_queue
from shared.messages import RotateProgress
from tests.test_dispatch_results import execution, result  # noqa: F401


def story(record) -> list[tuple[str, str]]:
    return [(line.level, line.message) for line in
            LogLine.select().where(LogLine.record == record.id).order_by(LogLine.id)]


def picked_up(record, worker="host:9", at=None):
    return RotateProgress(record_id=record.id, attempt=record.attempt, zone="dmz",
                          worker_id=worker, at=at or time.time())


class CountInserts:
    """Counts the INSERTs into logline a block runs."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        real = database.obj              # the proxy's database
        execute = real.execute_sql

        def counting(sql, *args, **kwargs):
            if sql.startswith('INSERT INTO "logline"'):
                self.count += 1
            return execute(sql, *args, **kwargs)
        real.execute_sql = counting
        return self

    def __exit__(self, *_):
        del database.obj.execute_sql


def test_each_account_gets_its_story_in_a_few_statements(ctl, execution):
    with CountInserts() as inserts:
        assert dispatch_execution(ctl, execution.id) == 4
    assert inserts.count == 1                     # one statement for the four lines
    records = list(Record.select().order_by(Record.id))
    apply_progress_batch([picked_up(r) for r in records])
    ok, refused, proof = records[0], records[1], records[2]
    with CountInserts() as inserts:
        apply_results([result(ok, "success"),
                       result(refused, "failed", error_code="login_failed",
                              error="web-1: cannot log in as root:\nits password was rejected"),
                       result(proof, "unverified", error_code="verify_failed",
                              error="web-2: the change was made but alice cannot log in")])
    assert inserts.count == 1
    name = f"record {ok.id} ({ok.account.username}@{ok.account.asset.name})"
    assert story(ok) == [
        ("info", f"{name}: dispatched to zone dmz (rotate)"),
        ("info", f"{name}: picked up by worker host:9 (attempt 1)"),
        ("info", f"{name}: changed and proven by worker w1 (the new password logs in)")]
    level, line = story(refused)[-1]
    assert level == "error" and line.endswith(
        ": failed (login_failed: web-1: cannot log in as root: its password was rejected; "
        "worker w1)")                              # one line: a newline cannot forge another
    assert story(proof)[-1][0] == "warning" and "unverified (verify_failed: " in story(proof)[-1][1]
    secrets = {ctl.vault.decrypt(r.new_secret) for r in records} | {
        ctl.vault.decrypt(r.old_secret) for r in records} | {"rootpw"}
    text = "\n".join(line.message for line in LogLine.select())
    assert not [s for s in secrets if s and s in text]


def test_a_long_error_is_bounded_in_the_log(ctl, execution):
    dispatch_execution(ctl, execution.id)
    record = Record.select().first()
    apply_results([result(record, "failed", error_code="unreachable", error="x" * 4000)])
    assert len(story(record)[-1][1]) < 800


def test_a_record_silent_past_its_timeout_is_logged_once(ctl, execution):
    dispatch_execution(ctl, execution.id)
    quiet, busy = list(Record.select().order_by(Record.id))[:2]
    timeout = ctl.settings.ssh_timeout
    apply_progress_batch([picked_up(quiet, at=time.time() - timeout - 5), picked_up(busy)])
    assert report_silent(ctl) == 1
    assert report_silent(ctl) == 0                # once per dispatch, however often it looks
    level, line = story(quiet)[-1]
    name = f"{quiet.account.username}@{quiet.account.asset.name}"
    assert level == "warning" and f"({name}): silent: no result from {quiet.account.asset.name} " \
                                  f"for " in line and f"longer than its {timeout:g} s timeout" in line
    assert Record.get_by_id(quiet.id).status == "dispatched"        # only a line
    assert not any("silent" in message for _, message in story(busy))
    apply_results([result(Record.get_by_id(quiet.id), "success")])
    assert report_silent(ctl, utcnow() + timedelta(hours=1)) == 1   # only busy is still in flight


def test_the_reapers_redispatch_and_give_up_are_logged(ctl, execution):
    dispatch_execution(ctl, execution.id)
    record = Record.select().order_by(Record.id).first()
    attempts = ctl.settings.max_dispatch_attempts
    for attempt in range(1, attempts + 1):
        ctl.broker.flush(rotate_queue("dmz"))
        apply_progress_batch([picked_up(Record.get_by_id(record.id),
                                        at=time.time() - 3600)])
        report_silent(ctl)
        Record.update(deadline=utcnow() - timedelta(seconds=1)).execute()
        reap(ctl)
        dispatch_pending(ctl)
    lines = [message for _, message in story(record)]
    again = [line for line in lines if "dispatched again" in line]
    assert again[0].endswith(f": no result by its deadline; dispatched again (attempt 2 of {attempts})")
    assert len(again) == attempts - 1
    assert sum("picked up by worker" in line for line in lines) == attempts   # each dispatch anew
    assert sum(": silent: " in line for line in lines) == attempts
    assert lines[-1].endswith(f"no result after {attempts} attempts; given up as unverified "
                              f"(both candidate secrets kept)")
    assert LogLine.select().where(LogLine.record.is_null()).exists()   # the execution's end
