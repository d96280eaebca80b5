"""Results throughput: 100,000 result messages waiting in RabbitMQ, consumed and applied by a
`keyturn daemon` process on PostgreSQL (and SQLite); prints the rate and the daemon's peak RSS.
With `--progress`, each result follows its worker's progress message ("started"), as workers
of this release send them: twice the messages, and the "picked up" line per account.

    python -m bench.results [--accounts 100000] [--progress]
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click

from bench.support import Stopwatch, bench_plan, report
from controller.models import Execution, Record
from controller.planning import start_execution
from shared import zonecrypto
from shared.broker import RESULT_ACTOR, RESULTS_QUEUE
from shared.publisher import Publisher
from shared.messages import RotateProgress, RotateResult, seal
from tests.processes import keyturn_env


def queue_results(ctl, execution_id: int, progress: bool = False) -> int:
    """Publish one sealed `success` result per record (after its progress message, with
    `progress`), as workers would."""
    channel = zonecrypto.Channel(zonecrypto.read_private_key(ctl.settings.zone_key_path("bench")),
                                 ctl.private_key.public_key)
    now = time.time()
    ids = [r for (r,) in Record.select(Record.id).where(Record.execution == execution_id).tuples()]
    with Publisher(ctl.broker) as publisher:
        for record_id in ids:
            if progress:
                started = RotateProgress(record_id=record_id, attempt=1, zone="bench",
                                         worker_id="bench:1", at=now)
                publisher.publish(RESULTS_QUEUE, RESULT_ACTOR, seal("progress", started, channel))
            result = RotateResult(record_id=record_id, attempt=1, zone="bench", worker_id="bench:1",
                                  status="success", host_key="ssh-ed25519 AAAAbench",
                                  started_at=now, finished_at=now)
            publisher.publish(RESULTS_QUEUE, RESULT_ACTOR, seal("result", result, channel))
        publisher.wait_confirmed()
    return len(ids)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(kind: str, accounts: int, progress: bool = False) -> dict:
    with bench_plan(kind, accounts) as (ctl, plan, amqp):
        execution = start_execution(ctl, plan)
        Record.update(status="dispatched").execute()        # as if published to workers
        queued = queue_results(ctl, execution.id, progress)
        daemon = subprocess.Popen([sys.executable, "-m", "shared.cli", "daemon"],
                                  env=keyturn_env(ctl.settings, amqp), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            with Stopwatch() as watch:
                while Execution.get_by_id(execution.id).status == "running":
                    if daemon.poll() is not None:
                        raise SystemExit(daemon.stderr.read().decode())
                    time.sleep(0.05)
            rss = peak_rss_mb(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(30)
        done = Execution.get_by_id(execution.id)
        assert done.succeeded == queued == accounts, (done.succeeded, queued)
        return {"run": f"daemon {kind}" + (" with progress" if progress else ""), "results": queued, "seconds": watch.seconds,
                "per_second": queued / watch.seconds, "daemon_peak_rss_mb": rss}


@click.command()
@click.option("--accounts", default=100_000, show_default=True)
@click.option("--sqlite/--no-sqlite", default=True, help="Also measure on SQLite.")
@click.option("--progress", is_flag=True, help="Each result after its progress message.")
def main(accounts, sqlite, progress):
    rows = [run("postgres", accounts, progress)] + ([run("sqlite", accounts, progress)] if sqlite
                                                    else [])
    report("results throughput (target: >= 3000/s on PostgreSQL; daemon RSS <= 250 MB)", rows)


if __name__ == "__main__":
    main()
