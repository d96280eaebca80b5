"""Rollouts on real sshd hosts through RabbitMQ, with the daemon and a worker as processes
(the window test runs the daemon in this process, on a clock the test moves):

- 40 accounts in waves 1,10%,50%,100% with a brake of 0, where a quarter of the hosts refuse
  the privileged password: the run pauses at the end of the first wave holding one of them
  and no account of a later wave is touched (the hosts' sshd logs show no login for them);
  fixing the password and resuming finishes it; a second plan paused the same way is
  cancelled, and its accounts not yet sent are free again.
- A window that closes mid-run pauses it (what is in flight finishes, nothing more goes out),
  and it goes on by itself when the window reopens.
- A per-asset limit of 1 is never exceeded: no two sessions overlap in the hosts' sshd logs,
  while the same run without the limit does overlap on its hosts (the check can fail)."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from controller import inventory
from controller.daemon import Daemon
from controller.models import Account, Asset, Execution, LogLine, Record
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from tests.fleets import linux_fleet
from tests.processes import ProcessGroup, keyturn_env, wait_until
from tests.test_faults import FAST

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

SESSION = re.compile(r"^(Starting session|Close session): .* port (\d+) id (\d+)$", re.M)


@pytest.fixture
def group(ctl, rabbitmq_url, tmp_path):
    processes = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url) | FAST, tmp_path)
    yield processes
    processes.close()
    for process in processes.processes:
        assert "Traceback" not in process.log_text(), process.name


def plan(ctl, name, usernames, assets=None, **rollout):
    spec = {"name": name, "usernames": usernames} | (
        {"assets": assets} if assets else {"nodes": ["/roll"]}) | rollout
    return save_plan(parse_spec(spec), ctl.vault)


def run(group, name) -> Execution:
    started = group.run("plan", "run", name)
    assert started.returncode == 0, started.stdout + started.stderr
    return Execution.select().where(Execution.plan_name == name).order_by(Execution.id.desc()).get()


def settled(execution_id, *states, timeout=90) -> Execution:
    return wait_until(lambda: (e := Execution.get_by_id(execution_id)).status in states
                      and not in_flight(execution_id) and e, timeout,
                      what=f"execution {execution_id} to be {' or '.join(states)}")


def in_flight(execution_id) -> int:
    return Record.select().where((Record.execution == execution_id)
                                 & (Record.status == "dispatched")).count()


def records(execution_id):
    return list(Record.select(Record, Account, Asset).join(Account).join(Asset)
                .where(Record.execution == execution_id).order_by(Record.id))


def logins(host, username=None) -> list[str]:
    """The sshd log's lines of password logins, accepted or refused (of `username`)."""
    who = re.escape(username) if username else r"\S+"
    pattern = rf"(Accepted|Failed) password for {who} from"
    return [line for line in host.log_path.read_text().splitlines() if re.search(pattern, line)]


def test_waves_brake_pause_resume_and_cancel(ctl, ssh_farm, group):
    with linux_fleet(ctl, ssh_farm, "roll", 8, 6) as farm:
        broken = ("h2", "h6")                         # a quarter of the hosts
        for name in broken:
            inventory.set_account(ctl, name, "ops", "not-the-password", True)
        plan(ctl, "waves", [f"u0{j}" for j in range(5)], waves="1,10%,50%,100%", max_failures="0")
        plan(ctl, "doomed", ["u05"], waves="1,3,100%")
        group.start("daemon", "daemon")
        group.start("worker", "worker", "--zone", "roll")

        execution = run(group, "waves")
        paused = settled(execution.id, "paused")
        rows = records(execution.id)
        assert len(rows) == 40
        first_bad = min(r.wave for r in rows if r.account.asset.name in broken)
        assert (paused.paused_by, paused.wave) == ("brake", first_bad)
        assert re.match(rf"wave {first_bad}: 1 of \d+ failed or unverified \(\d+%\) > 0: "
                        r"login_failed on 1 host", paused.pause_reason), paused.pause_reason
        later = [r for r in rows if r.wave > first_bad]
        assert later and all(r.status == "pending" and r.dispatched_at is None for r in later)
        for record in later:                 # not even a privileged login for its rotation
            assert not logins(farm[record.account.asset.name], record.account.username)
        untouched = {r.account.asset.name for r in rows} - {
            r.account.asset.name for r in rows if r.wave <= first_bad}
        assert untouched and all(not logins(farm[name]) for name in untouched)
        assert "paused (brake)" in log_text(execution.id)

        doomed = run(group, "doomed")                 # paused the same way, then cancelled
        settled(doomed.id, "paused")
        cancel = group.run("execution", "cancel", str(doomed.id))
        assert cancel.returncode == 0, cancel.stderr
        assert "5 records not sent" in cancel.stdout
        gone = [r for r in records(doomed.id) if r.status == "cancelled"]
        assert len(gone) == 5
        for record in gone:
            account = Account.get_by_id(record.account_id)
            assert account.busy_execution is None and account.secret_pending is None
            assert not logins(farm[record.account.asset.name], "u05")
        assert Execution.get_by_id(doomed.id).status == "cancelled"

        for name in broken:
            inventory.set_account(ctl, name, "ops", "ops-pw", True)
        resumed = group.run("execution", "resume", str(execution.id))
        assert resumed.returncode == 0, resumed.stderr
        done = settled(execution.id, "success", "failed")
        assert (done.succeeded, done.failed, done.unverified) == (39, 1, 0)
        assert_secrets_log_in(ctl, farm, [r for r in records(execution.id) if r.status == "success"])


def assert_secrets_log_in(ctl, farm, rows) -> None:
    def works(record):
        account = Account.get_by_id(record.account_id)
        return farm[record.account.asset.name].password_works(
            account.username, ctl.vault.decrypt(account.secret_current))
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(works, rows))


def log_text(execution_id) -> str:
    return "\n".join(line.message for line in LogLine.select().where(
        LogLine.execution == execution_id).order_by(LogLine.id))


@pytest.fixture
def clock():
    """The daemon's clock: the test sets `now` (naive UTC)."""
    class Clock:
        now = datetime(2026, 11, 30, 1, 0)           # a Monday, 01:00 UTC
    return Clock


def test_a_window_that_closes_mid_run_pauses_and_reopens(bus_ctl, ssh_farm, rabbitmq_url,
                                                         tmp_path, clock):
    ctl = bus_ctl
    ctl.settings.timezone = "UTC"
    with linux_fleet(ctl, ssh_farm, "roll", 2, 4):
        nightly = plan(ctl, "nightly", [f"u0{j}" for j in range(4)], window="Mon 01:00-02:00",
                       asset_limit=1)
        group = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url) | FAST, tmp_path)
        daemon = Daemon(ctl, clock=lambda: clock.now)
        try:
            group.start("worker", "worker", "--zone", "roll")
            daemon.start()
            execution = start_execution(ctl, nightly)      # the daemon's clock dispatches it
            wait_until(lambda: Execution.get_by_id(execution.id).ended >= 2, 60,
                       what="two records to end")
            clock.now = datetime(2026, 11, 30, 2, 0)      # the window closes
            paused = settled(execution.id, "paused", timeout=30)
            assert paused.paused_by == "window"
            assert "resumes by itself at 2026-12-07 01:00 UTC" in paused.pause_reason
            held = paused.ended
            assert 2 <= held < 8
            sent = Record.select().where((Record.execution == execution.id)
                                         & Record.dispatched_at.is_null(False)).count()
            daemon.housekeeping_once()                   # a turn more: still nothing goes out
            assert Record.select().where((Record.execution == execution.id)
                                         & Record.dispatched_at.is_null(False)).count() == sent
            clock.now = datetime(2026, 12, 7, 1, 0, 30)    # next Monday: it reopens by itself
            done = settled(execution.id, "success", timeout=60)
            assert done.succeeded == 8
            text = log_text(execution.id)
            assert "paused (window)" in text and "maintenance window open" in text
        finally:
            daemon.stop()
            group.close()
        for process in group.processes:
            assert "Traceback" not in process.log_text(), process.name


def max_overlap(host) -> int:
    """The most sessions (SSH channels running a command) open at once in the host's log."""
    open_now, most = set(), 0
    for kind, port, channel in SESSION.findall(host.log_path.read_text()):
        if kind == "Starting session":
            open_now.add((port, channel))
            most = max(most, len(open_now))
        else:
            open_now.discard((port, channel))
    return most


def verbose_logs(hosts) -> None:
    """sshd says when each session starts and ends (LogLevel VERBOSE), from a restart on."""
    for host in hosts:
        host.stop()
        config = host.directory / "sshd_config"
        config.write_text(config.read_text().replace("LogLevel INFO", "LogLevel VERBOSE"))
        host.start()


def test_a_per_asset_limit_of_one_is_never_exceeded(ctl, ssh_farm, group):
    with linux_fleet(ctl, ssh_farm, "roll", 4, 5) as farm:
        verbose_logs(farm.values())
        users = [f"u0{j}" for j in range(5)]
        plan(ctl, "gentle", users, assets=["h0", "h1"], asset_limit=1)
        plan(ctl, "eager", users, assets=["h2", "h3"])
        group.start("daemon", "daemon")
        group.start("worker", "worker", "--zone", "roll")
        gentle, eager = run(group, "gentle"), run(group, "eager")
        for execution in (gentle, eager):
            assert settled(execution.id, "success", timeout=120).succeeded == 10
        overlaps = {name: max_overlap(host) for name, host in farm.items()}
        print(f"\nmost sessions open at once per host: {overlaps}")
        assert overlaps["h0"] == overlaps["h1"] == 1, overlaps
        assert max(overlaps["h2"], overlaps["h3"]) > 1, overlaps      # the check sees overlaps
