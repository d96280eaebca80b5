"""A big run: one plan over `--hosts` x `--users` accounts (10,000 by default) on sshd test hosts
on this machine's loopback, end to end through RabbitMQ with one `keyturn daemon` and one
`keyturn worker` at their default settings (`bench.rotate`'s Keyturn; commands valid for the
default 600 s). While it runs, the console's overview and records pages are timed every
`--every` seconds (the Flask app in this process, on the run's database). Prints the run's time
and accounts/s, the longest pause between two records ending (a stall shows there; a pause of
`bench.rotate.STALL_SECONDS` ends the run), the daemon's and the worker's peak RSS, and the
pages' times (and again once the run ended), the records left pending or dispatched, the
commands that expired waiting in the queue (sent again) and the load average. Every account's new password (or `--check-sample N` of them) is then checked with
a login (not timed; any that fails ends the run).

    python -m bench.rotate_big [--hosts 50] [--users 200] [--every 2] [--check-sample N]
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click
from peewee import fn

from bench.console_pages import signed_in_client
from bench.rotate import Keyturn, new_password, peak_rss_mb, say, start_hosts
from bench.support import report
from controller.models import Execution, Record
from controller.web import create_app

PAGES = ("/overview", "/records")
DEFAULT_VALIDITY = {}      # the settings' own: a command waits in the queue for minutes here
# What the worker logs for a command that waited in the queue past its validity (it goes back to
# pending and is sent again with a fresh one): a run longer than the validity has some.
EXPIRED = "expired before the change was sent"


class PageTimer(threading.Thread):
    """Times each of PAGES every `every` seconds until stopped (its own database connection),
    and `after` the run, when the daemon has applied every result."""

    def __init__(self, ctl, every: float):
        super().__init__(name="page-timer", daemon=True)
        self.client = signed_in_client(create_app(ctl))
        self.every = every
        self.times: dict[str, list[float]] = {page: [] for page in PAGES}
        self.after_times: dict[str, list[float]] = {page: [] for page in PAGES}
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.time_pages(self.times)

    def after(self, runs: int = 5) -> None:
        for _ in range(runs):
            self.time_pages(self.after_times)

    def time_pages(self, into: dict[str, list[float]]) -> None:
        for page in PAGES:
            started = time.perf_counter()
            answer = self.client.get(page)
            answer.get_data()
            into[page].append(1000 * (time.perf_counter() - started))
            if answer.status_code != 200:
                self.failures.append(f"{page}: {answer.status_code}")


def left_waiting(execution_id: int) -> dict[str, int]:
    """The execution's records by status: any pending or dispatched one left is a stall."""
    return dict(Record.select(Record.status, fn.COUNT(Record.id))
                .where(Record.execution == execution_id).group_by(Record.status).tuples())


def longest_pause(execution_id: int) -> float:
    """The longest time between two records of the execution ending (the worker's clock)."""
    ends = sorted(finished for (finished,) in Record.select(Record.finished_at)
                  .where(Record.execution == execution_id).tuples())
    return max(((b - a).total_seconds() for a, b in zip(ends, ends[1:])), default=0.0)


@click.command()
@click.option("--hosts", "host_count", default=50, show_default=True)
@click.option("--users", "user_count", default=200, show_default=True)
@click.option("--every", default=2.0, show_default=True, help="Seconds between page timings.")
@click.option("--check-sample", type=int, default=None,
              help="Check this many accounts' new passwords (spread over the fleet), not all.")
def main(host_count, user_count, every, check_sample):
    users = [f"u{j:03d}" for j in range(user_count)]
    login_password = new_password()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyturn-bench-")))
        hosts = start_hosts(stack, folder, host_count, users, login_password)
        say(f"setting up keyturn: {host_count * user_count:,} accounts")
        keyturn = Keyturn(stack, hosts, users, login_password, folder,
                          validity=DEFAULT_VALIDITY)
        timer = PageTimer(keyturn.ctl, every)
        timer.start()
        say("running the plan")
        loads = [os.getloadavg()[0]]
        try:
            row = keyturn.run(False, None, "big", check_sample=check_sample)
        finally:
            loads.append(os.getloadavg()[0])
            timer.done.set()
            timer.join()
        execution_id = Execution.select().order_by(Execution.id.desc()).get().id
        pause, statuses = longest_pause(execution_id), left_waiting(execution_id)
        daemon_rss, worker_rss = peak_rss_mb(keyturn.daemon.pid), keyturn.worker_peak_rss_mb()
        expired = sum(worker.log_text().count(EXPIRED) for worker in keyturn.workers)
        timer.after()
    if timer.failures:
        raise SystemExit(f"console pages failed during the run: {timer.failures[:5]}")
    figures = {
        "accounts": row["accounts"], "seconds": row["seconds"],
        "accounts_per_s": row["accounts"] / row["seconds"],
        "longest_pause_s": pause,
        "left_pending_or_dispatched": statuses.get("pending", 0) + statuses.get("dispatched", 0),
        "statuses": " ".join(f"{k}={v}" for k, v in sorted(statuses.items())),
        "logins_checked": row["logins_checked"], "logins_failed": 0,
        "commands_expired_in_queue": expired,
        "daemon_peak_rss_mb": daemon_rss, "worker_peak_rss_mb": worker_rss,
        "load_1min_start_end": f"{loads[0]:.1f}/{loads[1]:.1f}"}
    report(f"a big run: {row['accounts']:,} accounts, one daemon, one worker",   # one per line
           [{"figure": name, "value": value} for name, value in figures.items()])
    report("console pages during and after the run (ms)", [
        {"page": page, "when": when, "timings": len(times), "median_ms": statistics.median(times),
         "max_ms": max(times)}
        for when, timed in (("during", timer.times), ("after", timer.after_times))
        for page, times in timed.items() if times])


if __name__ == "__main__":
    main()
