"""End to end, all real (RabbitMQ, PostgreSQL, `keyturn daemon`, `keyturn worker` processes,
sshd test hosts): the execution log tells each account's story as it happens, a host that
hangs its worker is reported silent, the reaper's re-dispatch is logged, and no secret reaches
the log, the events, the execution page or the printable report."""
from __future__ import annotations

import os
import signal

import pytest

from controller import inventory
from controller.models import Account, Asset, Execution, LogLine, OutboxEvent, Record
from tests.e2e import save
from tests.processes import ProcessGroup, keyturn_env, wait_until
from tests.test_no_leaks import every_secret

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def story(record_id: int) -> list[str]:
    return [line.message for line in
            LogLine.select().where(LogLine.record == record_id).order_by(LogLine.id)]


def records_by_name() -> dict[str, Record]:
    return {f"{r.account.username}@{r.account.asset.name}": r
            for r in Record.select(Record, Account, Asset).join(Account).join(Asset)}


def test_the_log_tells_each_accounts_story_without_a_secret(ctl, zone_fleet, cluster,
                                                            as_auditor):
    inventory.set_account(ctl, "east-0", "root", "wrong-root-password", True)   # refused
    save(ctl, "story", ["alice", "bob"])
    run = cluster.run("plan", "run", "story", "--wait", timeout=240)
    assert run.returncode == 1, run.stdout + run.stderr
    for name, record in records_by_name().items():
        lines = story(record.id)
        zone = name.split("@")[1].split("-")[0]
        worker = f":{cluster.workers[zone].pid}"
        assert lines[0] == f"record {record.id} ({name}): dispatched to zone {zone} (rotate)"
        assert f"): picked up by worker " in lines[1] and f"{worker} (attempt 1)" in lines[1]
        if name.endswith("@east-0"):
            assert record.status == "failed"
            assert "): failed (login_failed: east-0 (" in lines[-1]
            assert "cannot log in as root: its password was rejected" in lines[-1]
            assert lines[-1].endswith(f"; worker {record.worker_id})")
        else:
            assert record.status == "success"
            assert lines[-1] == (f"record {record.id} ({name}): changed and proven by worker "
                                 f"{record.worker_id} (the new password logs in)")
        assert len(lines) == 3, lines

    execution = Execution.get()
    pages = {"page": as_auditor.get(f"/executions/{execution.id}").text,
             "report": as_auditor.get(f"/executions/{execution.id}/report").text,
             "poll": as_auditor.get(f"/api/v1/executions/{execution.id}/log").text,
             "log": "\n".join(line.message for line in LogLine.select()),
             "events": "\n".join(str(event.body) for event in OutboxEvent.select())}
    assert "picked up by worker" in pages["page"] and "login_failed" in pages["report"]
    secrets = every_secret(ctl)
    for where, text in pages.items():
        assert not [secret for secret in secrets if secret in text], where


def test_a_silent_host_and_the_reapers_redispatch_are_logged(ctl, zone_fleet, rabbitmq_url,
                                                             tmp_path):
    """east-1's sshd hangs (paused) and its worker then stops answering too (SIGSTOP): no result
    comes, so the controller says the host is silent past the 3 s timeout, and at the deadline
    re-dispatches it; once both go on, attempt 2 is picked up and ends with its reason."""
    env = keyturn_env(ctl.settings, rabbitmq_url) | {"KEYTURN_ROTATION_DEADLINE": "20",
                                                     "KEYTURN_CLOCK_SKEW": "5"}
    group = ProcessGroup(env, tmp_path)
    try:
        group.start("daemon", "daemon")
        worker = group.start("worker-east", "worker", "--zone", "east")
        save(ctl, "hang", ["alice"], nodes=["/dc/east"], ssh_timeout=3)
        host = zone_fleet["east-1"]
        host.pause()
        assert group.run("plan", "run", "hang").returncode == 0
        wait_until(lambda: Record.select().exists(), 30, what="the records")
        record = records_by_name()["alice@east-1"]
        wait_until(lambda: any("picked up by worker" in line for line in story(record.id)), 60,
                   what="east-1's pick-up")
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: any(": silent: " in line for line in story(record.id)), 30,
                       what="the silent line")
            wait_until(lambda: any("dispatched again" in line for line in story(record.id)), 60,
                       what="the reaper's re-dispatch")
        finally:
            host.resume()
            os.kill(worker.pid, signal.SIGCONT)
        wait_until(lambda: Record.get_by_id(record.id).status not in ("pending", "dispatched"),
                   120, what="attempt 2's result")

    finally:
        group.close()
    lines = story(record.id)
    silent = next(line for line in lines if ": silent: " in line)
    assert silent.startswith(f"record {record.id} (alice@east-1): silent: no result from east-1 for ")
    assert "longer than its 3 s timeout" in silent
    assert any(line.endswith("no result by its deadline; dispatched again (attempt 2 of 3)")
               for line in lines)
    assert any("picked up by worker" in line and "(attempt 2)" in line for line in lines)
    # Attempt 1 timed out once the worker went on, so the worker refuses to try the host again
    # for a while (lockout protection) and attempt 2 ends with that reason; either way the
    # log's last line says how it ended and why.
    ended = Record.get_by_id(record.id)
    assert ended.attempt == 2 and ended.status in ("success", "failed", "unverified")
    expected = "changed and proven by worker" if ended.status == "success" else (
        f"{ended.status} ({ended.error_code}: ")
    assert lines[-1].startswith(f"record {record.id} (alice@east-1): ") and expected in lines[-1]
    # (paramiko logs its own banner timeout with a traceback in the worker's log)
    assert "Traceback" not in group.processes[0].log_text()    # the daemon
