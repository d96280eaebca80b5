"""A big run: one plan over `--hosts` x `--users` accounts (10,000 by default) on sshd test hosts
on this machine's loopback, end to end through RabbitMQ with one `keyturn daemon` and one
`keyturn worker` at their default settings (`bench.rotate`'s Keyturn; commands valid for the
default 600 s). While it runs, the console's overview and records pages are timed every
`--every` seconds (the Flask app in this process, on the run's database). Prints the run's time
and accounts/s, the longest pause between two records ending (a stall shows there; a pause of
`bench.rotate.STALL_SECONDS` ends the run), the daemon's and the worker's peak RSS, and the
pages' times. Every account's new password (or `--check-sample N` of them) is then checked with
a login (not timed).

    python -m bench.rotate_big [--hosts 50] [--users 200] [--every 2] [--check-sample N]
"""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click

from bench.console_pages import signed_in_client
from bench.rotate import Keyturn, new_password, peak_rss_mb, say, start_hosts
from bench.support import report
from controller.models import Execution, Record
from controller.web import create_app

PAGES = ("/overview", "/records")
DEFAULT_VALIDITY = {}      # the settings' own: a command waits in the queue for minutes here


class PageTimer(threading.Thread):
    """Times each of PAGES every `every` seconds until stopped (its own database connection)."""

    def __init__(self, ctl, every: float):
        super().__init__(name="page-timer", daemon=True)
        self.client = signed_in_client(create_app(ctl))
        self.every = every
        self.times: dict[str, list[float]] = {page: [] for page in PAGES}
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            for page in PAGES:
                started = time.perf_counter()
                answer = self.client.get(page)
                answer.get_data()
                self.times[page].append(1000 * (time.perf_counter() - started))
                if answer.status_code != 200:
                    self.failures.append(f"{page}: {answer.status_code}")


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
        try:
            row = keyturn.run(False, None, "big", check_sample=check_sample)
        finally:
            timer.done.set()
            timer.join()
        pause = longest_pause(Execution.select().order_by(Execution.id.desc()).get().id)
        daemon_rss, worker_rss = peak_rss_mb(keyturn.daemon.pid), keyturn.worker_peak_rss_mb()
    if timer.failures:
        raise SystemExit(f"console pages failed during the run: {timer.failures[:5]}")
    report(f"a big run: {row['accounts']:,} accounts, one daemon, one worker", [{
        "accounts": row["accounts"], "seconds": row["seconds"],
        "accounts_per_s": row["accounts"] / row["seconds"],
        "longest_pause_s": pause,
        "daemon_peak_rss_mb": daemon_rss, "worker_peak_rss_mb": worker_rss}])
    report("console pages during the run (ms)", [
        {"page": page, "timings": len(times), "median_ms": statistics.median(times),
         "max_ms": max(times)} for page, times in timer.times.items() if times])


if __name__ == "__main__":
    main()
