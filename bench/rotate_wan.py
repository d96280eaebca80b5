"""Rotation throughput over a slow network: `bench.rotate`'s three runs (keyturn end to end, the
paramiko reference, Ansible) over sshd hosts each in its own network namespace, a round trip of
`--round-trip-ms` away (light jitter) from a client namespace with no default route, where the
worker, the reference and Ansible run (`tests.wan`). The controller daemon, PostgreSQL and
RabbitMQ stay on the machine's loopback; the worker reaches RabbitMQ through a forwarder on its
namespace's 127.0.0.1.

Each round: keyturn (one worker at its default settings) and the reference (`--threads`, 64)
in alternating order, then Ansible (`--forks`, 64; its faster connection). Then the scale-out
curve: keyturn with 1, 2 and 4 worker processes on the one zone (`--workers`), accounts/s and
the workers' peak RSS (VmHWM) per count.

    python -m bench.rotate_wan [--hosts 100] [--users 5] [--runs 3] [--workers 1,2,4]

Needs what `bench.rotate` needs, and socat; `bash bench/run rotate_wan` sets it all up.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable

import click

from bench.rotate import (Keyturn, ansible_connections, ansible_run, new_password, peak_rss_mb,
                          print_report, reference_run, say, start_hosts, summarise)
from bench.support import report
from tests.processes import KEYTURN
from tests.sshd_hosts import cpu_seconds
from tests.wan import Wan, in_netns

AMQP_PORT = 5672
# A run here may take longer than bench.rotate's 30 s of command validity (on a busy machine):
# a command that expires in the queue is dispatched again, and fails the bench. Runs wait out
# the last one's validity (not timed).
VALIDITY = {"rotation_deadline": 90, "clock_skew": 0,
            "worker_threads": 128}   # a far zone's setting: the worker fits its latency below it
TARGETS = {"ref": 1.3, "ansible": 5.0}


@click.command()
@click.option("--hosts", "host_count", default=100, show_default=True)
@click.option("--users", "user_count", default=5, show_default=True)
@click.option("--round-trip-ms", default=40.0, show_default=True)
@click.option("--jitter-ms", default=1.0, show_default=True, help="Each way, uniform.")
@click.option("--runs", default=3, show_default=True, help="Rounds of keyturn, reference, Ansible.")
@click.option("--threads", default=64, show_default=True, help="The reference's parallelism.")
@click.option("--forks", default=64, show_default=True, help="Ansible's forks.")
@click.option("--ansible-rounds", default=5000, show_default=True,
              help="sha512 rounds of password_hash in the playbook.")
@click.option("--ansible/--no-ansible", "with_ansible", default=True)
@click.option("--connections", default="ssh", show_default=True,
              help="Ansible connection plugins to measure (bench.rotate: ssh is the faster).")
@click.option("--ansible-runs", default=3, show_default=True,
              help="In how many of the rounds Ansible runs (it takes minutes here).")
@click.option("--workers", "worker_counts", default="1,2,4", show_default=True,
              help="Worker processes for the scale-out curve (empty: none).")
def main(host_count, user_count, round_trip_ms, jitter_ms, runs, threads, forks, ansible_rounds,
         with_ansible, connections, ansible_runs, worker_counts):
    users = [f"u{j:02d}" for j in range(user_count)]
    chosen = ansible_connections(connections) if with_ansible else []
    login_password = new_password()
    rows: list[dict] = []
    curve: list[dict] = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyturn-bench-")))
        wan = Wan(folder / "wan", round_trip_ms / 2, jitter_ms)
        stack.callback(wan.close)
        hosts = start_hosts(stack, folder, host_count, users, login_password, wan,
                            f", {round_trip_ms:g} ms away")   # closed before the Wan
        wan.forward(AMQP_PORT)
        say("setting up keyturn (PostgreSQL, RabbitMQ, daemon)")
        keyturn = Keyturn(stack, hosts, users, login_password, folder,
                          worker_command=wan.enter_argv + KEYTURN, validity=VALIDITY)

        def add(run: Callable[[], dict]) -> None:
            """Time `run`'s row and the CPU it cost the hosts (its login check included)."""
            before = cpu_seconds(hosts)
            row = run()
            row["host_cpu_ms_per_account"] = 1000 * (cpu_seconds(hosts) - before) / row["accounts"]
            rows.append(row)
            say(f"{row['run']}: {row['accounts']} accounts in {row['seconds']:.1f} s")

        def run_keyturn(round_: int) -> None:
            say(f"round {round_}: keyturn")
            add(lambda: {"round": round_, "pair": round_, **keyturn.run(False, None, "")})

        def run_reference(round_: int) -> None:
            say(f"round {round_}: reference")
            add(lambda: {"round": round_, "pair": round_, **in_netns(
                wan.client_netns, reference_run, hosts, users, login_password, threads)})

        for round_ in range(1, runs + 1):
            for run in (run_keyturn, run_reference)[::1 if round_ % 2 else -1]:
                run(round_)
            for connection in chosen if round_ <= ansible_runs else ():
                say(f"round {round_}: ansible {connection}")
                add(lambda: {"round": round_, "pair": "", **in_netns(
                    wan.client_netns, ansible_run, hosts, users, login_password, connection,
                    ansible_rounds, forks, folder)})
        rss = keyturn.worker_peak_rss_mb()
        for count in [int(n) for n in worker_counts.split(",") if n.strip()]:
            say(f"scale-out: {count} worker processes")
            row = keyturn.run(False, None, "", workers=count)
            say(f"{count} workers: {row['accounts']} accounts in {row['seconds']:.1f} s")
            curve.append({"workers": count, "accounts": row["accounts"], "seconds": row["seconds"],
                          "accounts_per_s": row["accounts"] / row["seconds"],
                          "peak_rss_mb_max": max(peak_rss_mb(w.pid) for w in keyturn.workers),
                          "peak_rss_mb_sum": sum(peak_rss_mb(w.pid) for w in keyturn.workers)})
        for process in keyturn.group.processes:
            if "Traceback" in process.log_text():
                say(f"[red]keyturn {process.name} logged a traceback: {process.log_path}[/red]")
    summary = summarise(rows, runs, 1)
    summary.update(round_trip_ms=round_trip_ms, hosts=host_count, users=user_count,
                   worker_peak_rss_mb=rss)
    summary["targets_met"] = " ".join(
        f"{name}:{'yes' if ok else 'NO'}" for name, ok in [
            (f"ref<={TARGETS['ref']}", summary["keyturn_over_reference"] <= TARGETS["ref"]),
            (f"ansible>={TARGETS['ansible']:g}",
             summary.get("ansible_over_keyturn", float("nan")) >= TARGETS["ansible"]
             if chosen else None)] if ok is not None)
    print_report(rows, summary, "rotation over a slow network (targets: keyturn <= 1.3 x "
                                "reference, >= 5 x faster than Ansible)", "rotate_wan")
    if curve:
        report(f"scale-out on one zone, {round_trip_ms:g} ms round trip", curve)

if __name__ == "__main__":
    main()
