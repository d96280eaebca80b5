"""Fault tests on real processes: 200 accounts on 10 sshd hosts, and in the middle of the run a
worker is killed with SIGKILL, RabbitMQ restarts, the daemon stops for a while, or a host goes
away. Once things settle every record has ended (success, or failed with a reason, or settled
by verify), every account's stored secret logs in, and no process crashed. They talk to the
tests' own RabbitMQ node, so restarting it never touches the machine's broker or other tests."""
from __future__ import annotations

import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from controller.models import Account, Asset, Execution, Record
from tests.fleets import linux_fleet
from tests.processes import ProcessGroup, keyturn_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

HOSTS, USERS = 10, 20
FAST = {"KEYTURN_SSH_TIMEOUT": "3", "KEYTURN_ROTATION_DEADLINE": "10", "KEYTURN_CLOCK_SKEW": "1",
        "KEYTURN_MAX_DISPATCH_ATTEMPTS": "3", "KEYTURN_HEARTBEAT_INTERVAL": "2"}


@pytest.fixture
def farm(ctl, ssh_farm):
    with linux_fleet(ctl, ssh_farm, "fault", HOSTS, USERS) as hosts:
        yield hosts


@pytest.fixture
def fault_bus(rabbit_node) -> str:
    """A virtual host of its own on the tests' RabbitMQ node; the URL of its admin account."""
    vhost = f"kt_{secrets.token_hex(6)}"
    rabbit_node.add_vhost(vhost)
    yield rabbit_node.url(vhost)
    rabbit_node.ctl("delete_vhost", vhost)


@pytest.fixture
def group(ctl, fault_bus, tmp_path):
    processes = ProcessGroup(keyturn_env(ctl.settings, fault_bus) | FAST, tmp_path)
    yield processes
    processes.close()


def start_run(group) -> None:
    started = group.run("plan", "run", "all")
    assert started.returncode == 0, started.stdout + started.stderr


def ended(execution_id: int) -> int:
    return Execution.get_by_id(execution_id).ended


def current_execution() -> Execution:
    return Execution.select().where(Execution.trigger == "manual").get()


def settle(group, execution_id: int, timeout: float = 240) -> float:
    """Wait for the run to end, verify what stayed unverified; returns seconds waited."""
    started = time.monotonic()
    wait_until(lambda: Execution.get_by_id(execution_id).status != "running", timeout,
               interval=0.5, what=f"execution {execution_id} to end")
    if Execution.get_by_id(execution_id).unverified:
        verify = group.run("execution", "verify", str(execution_id), "--wait", timeout=timeout)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    return time.monotonic() - started


def assert_settled(ctl, farm, group, execution_id: int, killed=(), broker_outage=False) -> None:
    """Nothing stuck, every failure explained, every stored secret logs in, and no process
    died or logged an exception (while the broker was down, only its connection errors)."""
    records = list(Record.select(Record, Account, Asset).join(Account).join(Asset))
    assert not [r.id for r in records if r.status in ("pending", "dispatched")], "stuck records"
    for record in records:
        if record.execution_id == execution_id:
            assert record.status in ("success", "failed", "unverified")
            if record.status == "failed":
                assert record.error_code and record.error, record.id
    accounts = list(Account.select(Account, Asset).join(Asset).where(Account.username != "ops"))
    with ThreadPoolExecutor(max_workers=8) as pool:     # 200 SSH logins, a few at a time
        logs_in = list(pool.map(lambda a: farm[a.asset.name].password_works(
            a.username, ctl.vault.decrypt(a.secret_current)), accounts))
    for account, works in zip(accounts, logs_in, strict=True):
        assert works, f"{account.username}@{account.asset.name}: the stored secret does not log in"
        assert account.busy_execution is None
        if account.secret_pending is not None:
            # kept as a candidate only when the rotation failed, or when the verify of an
            # unverified rotation found the current secret logging in (the change never took)
            last = account_records(account).get()
            assert last.status == "failed" or (last.action, last.status) == ("verify", "success")
            assert bytes(last.new_secret) == bytes(account.secret_pending)
    for process in group.processes:
        if process not in killed:
            assert process.running(), f"{process.name} exited"
            unexpected = [e for e in logged_exceptions(process.log_text()) if not broker_outage
                          or not any(name in e for name in BROKER_DOWN)]
            assert not unexpected, f"{process.name}: {unexpected[:3]}"


def account_records(account):
    return Record.select().where(Record.account == account).order_by(Record.id.desc())


BROKER_DOWN = ("ConnectionClosed", "AMQPConnectionError", "ConnectionClosedByBroker",
               "StreamLostError", "ChannelWrongStateError")


def logged_exceptions(log: str) -> list[str]:
    """The final line (the exception) of every traceback in a log."""
    found, inside = [], False
    for line in log.splitlines():
        if line.startswith("Traceback"):
            inside = True
        elif inside and line and not line[0].isspace():
            found.append(line)
            inside = False
    return found


def outcomes(execution_id: int) -> dict:
    return dict(Counter((r.status, r.error_code) for r in
                        Record.select().where(Record.execution == execution_id)))


def test_worker_killed_mid_run(ctl, farm, group):
    group.start("daemon", "daemon")
    first = group.start("worker-1", "worker", "--zone", "fault")
    start_run(group)
    execution = current_execution()
    wait_until(lambda: ended(execution.id) >= 40, 120, what="40 records to end")
    first.kill()
    group.start("worker-2", "worker", "--zone", "fault")
    recovery = settle(group, execution.id)
    print(f"\nworker kill: settled {recovery:.1f} s after the SIGKILL")
    assert_settled(ctl, farm, group, execution.id, killed=(first,))
    assert outcomes(execution.id) == {("success", None): HOSTS * USERS}


def test_rabbitmq_restarts_mid_run(ctl, farm, group, rabbit_node):
    group.start("daemon", "daemon")
    group.start("worker", "worker", "--zone", "fault")
    start_run(group)
    execution = current_execution()
    wait_until(lambda: ended(execution.id) >= 40, 120, what="40 records to end")
    rabbit_node.ctl("stop_app")
    time.sleep(2)
    rabbit_node.ctl("start_app")
    recovery = settle(group, execution.id)
    print(f"\nRabbitMQ restart: settled {recovery:.1f} s after the broker came back")
    assert_settled(ctl, farm, group, execution.id, broker_outage=True)


def test_daemon_stopped_mid_run_loses_no_result(ctl, farm, group):
    daemon = group.start("daemon-1", "daemon")
    group.start("worker", "worker", "--zone", "fault")
    start_run(group)
    execution = current_execution()
    wait_until(lambda: ended(execution.id) >= 20, 120, what="20 records to end")
    assert daemon.stop() == 0
    frozen = ended(execution.id)
    time.sleep(5)                              # workers go on; their results wait in RabbitMQ
    assert ended(execution.id) == frozen
    group.start("daemon-2", "daemon")
    recovery = settle(group, execution.id)
    print(f"\ndaemon stop: settled {recovery:.1f} s after the restart")
    assert_settled(ctl, farm, group, execution.id, killed=(daemon,))
    assert outcomes(execution.id) == {("success", None): HOSTS * USERS}


def test_host_unreachable_for_part_of_the_run(ctl, farm, group):
    group.start("daemon", "daemon")
    group.start("worker", "worker", "--zone", "fault")
    farm["h3"].stop()
    start_run(group)
    execution = current_execution()
    wait_until(lambda: ended(execution.id) >= 100, 120, what="100 records to end")
    farm["h3"].start()
    settle(group, execution.id)
    down = list(Record.select().join(Account).join(Asset).where(
        (Asset.name == "h3") & (Record.execution == execution.id)))
    assert down and all(r.status == "success" or r.error_code in ("unreachable", "timeout")
                        for r in down)
    assert_settled(ctl, farm, group, execution.id)
    retry = group.run("execution", "retry-failed", str(execution.id), "--wait", timeout=240)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert_settled(ctl, farm, group, execution.id)
