"""Rotation throughput: real sshd test hosts (each with users u00.. and `ops`, a NOPASSWD sudoer,
as the privileged account), every account's password rotated and then proven by a login with
the new one, three ways over the same hosts in the same run:

- keyturn end to end: PostgreSQL, RabbitMQ, `keyturn daemon` and one `keyturn worker` process at
  its default settings; timed from `run_plan` (in this process: planning, records, publishing)
  until the daemon has applied the last result (the execution is polled every 50 ms), or with
  `--cli` as the `keyturn plan run NAME --wait` process;
- the reference (bench/rotate_reference.py): a minimal paramiko script doing the same SSH work
  with the worker's default parallelism (KEYTURN_WORKER_THREADS);
- the seed product's engine: ansible-core running bench/ansible/rotate.yml with 20 forks, over
  its `ssh` and its `paramiko` connection (the faster one is compared).

Fresh passwords each run, so no run depends on another; after each run every account's new
password is checked with a login (not timed). Before a keyturn run, the commands of the last one
are left to expire (not timed: an account is not rotated again while a command for it may still
act). Each keyturn run gets a new worker process (no SSH session pooled from an earlier run).
keyturn and the reference are short, so each round runs
them in `--pairs` alternating pairs and the keyturn/reference ratio is the median of the pairs'
ratios; Ansible runs once per round. Prints the worker's peak RSS (VmHWM of the worker processes).

    python -m bench.rotate [--hosts 20] [--users 10] [--runs 1] [--pairs 3]

Needs root (the sshd test hosts), RabbitMQ and PostgreSQL on 127.0.0.1, and the bench extra
(ansible-core, passlib) plus `sshpass` for Ansible's ssh connection with passwords: `bash bench/run
rotate` sets all of that up.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
from peewee import fn
from rich.console import Console
from rich.table import Table

from bench.rotate_reference import Target, rotate_all
from bench.support import bulk_inventory, controller_for, temp_database, temp_vhost
from controller import inventory
from controller.db import database
from controller.models import Account, Asset, Execution, Plan, Record, WorkerSeen, utcnow
from controller.planning import run_plan
from controller.plans import parse_spec, save_plan
from shared.settings import Settings
from tests.processes import KEYTURN, ProcessGroup, keyturn_env, wait_until
from tests.sshd_hosts import SshHost, SshHostFarm

ZONE = "bench"
PLAN = "bench"
LOGIN = "ops"
STALL_SECONDS = 120     # a keyturn run with no record ending for this long is stuck: give up
ANSIBLE_DIR = Path(__file__).with_name("ansible")
PYSPY_MODE = os.environ.get("BENCH_PYSPY_MODE", "--idle").split()   # "--idle": wall-clock view
PYSPY_RATE = os.environ.get("BENCH_PYSPY_RATE", "100")
DEFAULT_THREADS = Settings.model_fields["worker_threads"].default
# Runs rotate the same accounts back to back: a short command validity keeps the wait between
# them (`wait_for_last_commands`) short. Loopback clocks are one clock.
VALIDITY = {"rotation_deadline": 30, "clock_skew": 0}
console = Console(stderr=True)


def say(text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")


def new_password() -> str:
    return secrets.token_urlsafe(18)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_hosts(stack: contextlib.ExitStack, folder: Path, count: int, users: list[str],
                login_password: str, wan=None, note: str = "") -> list[SshHost]:
    """`count` sshd hosts (behind `wan` when given) with `users` and the sudo login, closed
    with `stack`."""
    farm = SshHostFarm(folder / "hosts", wan)
    stack.callback(farm.close)
    say(f"starting {count} sshd hosts with {len(users)} users each{note}")
    return farm.start_hosts(count, users={u: new_password() for u in users},
                            sudo_user=(LOGIN, login_password))


def check_logins(logins: list[tuple[SshHost, str, str]]) -> int:
    """How many of (host, user, password) do NOT log in (real SSH logins, in parallel); a
    refused one is tried once more alone (on a busy machine a slow PAM check times out as a
    refusal)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        works = list(pool.map(lambda t: t[0].password_works(t[1], t[2]), logins))
    return sum(1 for login, worked in zip(logins, works)
               if not worked and not login[0].password_works(login[1], login[2]))


# ---- keyturn ---------------------------------------------------------------------------------

class Keyturn:
    """keyturn on a throw-away PostgreSQL schema and RabbitMQ vhost: the inventory inserted in
    bulk in this process (each asset checked as `keyturn asset add` checks it), the daemon and
    the workers (default settings) as `keyturn` processes; `worker_command` is how a worker is
    started (e.g. in another network namespace), `validity` the commands' validity settings."""

    def __init__(self, stack: contextlib.ExitStack, hosts: list[SshHost], users: list[str],
                 login_password: str, folder: Path, worker_command: list[str] = KEYTURN,
                 validity: dict = VALIDITY):
        self.hosts = {f"h{index:03d}": host for index, host in enumerate(hosts)}
        self.users = users
        db_url = stack.enter_context(temp_database("postgres"))
        self.amqp = stack.enter_context(temp_vhost())
        self.ctl = controller_for(folder / "data", db_url, self.amqp, **validity)
        stack.callback(database.close)
        inventory.add_zone(self.ctl, ZONE, None, trust_first_use=False)
        specs = [inventory.new_asset(name, host.address, 22, "linux", ZONE, "/bench",
                                     host.host_public_key) for name, host in self.hosts.items()]
        bulk_inventory(self.ctl, [{"name": s.name, "address": s.address, "port": s.port,
                                   "platform": s.platform, "host_key": s.host_key} for s in specs],
                       ZONE, "/bench", {LOGIN: (login_password, True)}
                       | {user: ("unknown-to-keyturn", False) for user in users})
        self.plan = save_plan(parse_spec({"name": PLAN, "nodes": ["/bench"], "usernames": users}),
                              self.ctl.vault)
        self.group = ProcessGroup(keyturn_env(self.ctl.settings, self.amqp)
                                  | {f"KEYTURN_{name.upper()}": str(value)
                                     for name, value in validity.items()}, folder)
        stack.callback(self.group.close)
        self.daemon = self.group.start("daemon", "daemon")
        self.worker_command = worker_command
        self.workers: list = []
        self.peak_rss_mb = 0.0

    @staticmethod
    def wait_for_last_commands() -> None:
        """An account is not rotated again while a command for it may still act (until its
        record's deadline): wait that out before a run (not timed)."""
        last = Record.select(fn.MAX(Record.deadline)).scalar()
        if last is not None:
            time.sleep(max(0.0, (last - utcnow()).total_seconds() + 0.1))

    def start_workers(self, count: int = 1) -> None:
        """New worker processes for each run, so every run starts with no SSH session pooled
        (the reference opens its sessions within its run too)."""
        for worker in self.workers:
            self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(worker.pid))
            worker.stop()
        self.workers = [self.group.start(f"worker-{len(self.group.processes)}", "worker",
                                         "--zone", ZONE, command=self.worker_command)
                        for _ in range(count)]
        wait_until(self._workers_seen, 60, 0.1, "the workers' first heartbeats")

    def _workers_seen(self) -> bool:
        for process in (self.daemon, *self.workers):
            if not process.running():
                raise SystemExit(f"keyturn {process.name} exited:\n{process.log_text()[-3000:]}")
        return all(WorkerSeen.select().where(WorkerSeen.worker_id.endswith(f":{w.pid}")).exists()
                   for w in self.workers)

    def run(self, cli: bool, profile_dir: Path | None, label: str, workers: int = 1,
            check_sample: int | None = None) -> dict:
        """One timed run; then every account's new password (or `check_sample` of them, spread
        over the fleet) is checked with a login."""
        accounts = len(self.hosts) * len(self.users)
        self.wait_for_last_commands()
        self.start_workers(workers)
        profilers = self._start_profilers(profile_dir, label) if profile_dir else []
        try:
            started = time.perf_counter()
            if cli:
                done = self.group.run("plan", "run", PLAN, "--wait", timeout=3600)
                seconds = time.perf_counter() - started
                published = float("nan")
                if done.returncode not in (0, 1):
                    raise SystemExit(f"keyturn plan run failed:\n{done.stdout}{done.stderr}")
                execution = Execution.select().order_by(Execution.id.desc()).get()
            else:
                execution = run_plan(self.ctl, Plan.get_by_id(self.plan.id), started_by="bench")
                published = time.perf_counter() - started
                ended, progressed = -1, time.monotonic()
                while True:
                    execution = Execution.get_by_id(execution.id)
                    if execution.status != "running":
                        break
                    if not all(p.running() for p in (self.daemon, *self.workers)):
                        raise SystemExit("a keyturn process died during the run")
                    if execution.ended != ended:
                        ended, progressed = execution.ended, time.monotonic()
                    elif time.monotonic() - progressed > STALL_SECONDS:
                        raise SystemExit(f"keyturn: no record ended for {STALL_SECONDS} s "
                                         f"({ended}/{accounts} ended); see `py-spy dump --pid "
                                         f"{self.workers[0].pid}` and "
                                         f"{self.workers[0].log_path}")
                    time.sleep(0.05)
                seconds = time.perf_counter() - started
        finally:
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
        if execution.succeeded != accounts:
            reasons = [(r.account.asset.name, r.account.username, r.status, r.error)
                       for r in Record.select(Record, Account, Asset).join(Account).join(Asset)
                       .where((Record.execution == execution) & (Record.status != "success"))
                       .limit(5)]
            raise SystemExit(f"keyturn: {execution.succeeded}/{accounts} succeeded; e.g. {reasons}")
        logins = self.current_logins()
        if check_sample is not None:
            logins = logins[::max(1, len(logins) // check_sample)]
        failed = check_logins(logins)
        if failed:
            raise SystemExit(f"keyturn: {failed} accounts do not log in with their new password")
        return {"run": "keyturn" + (" (cli)" if cli else "") + (" (profiled)" if profilers else ""),
                "accounts": accounts, "logins_checked": len(logins),
                "seconds": seconds, "published_s": published, **self._timeline(execution)}

    def current_logins(self) -> list[tuple[SshHost, str, str]]:
        rows = (Account.select(Account, Asset).join(Asset)
                .where(Account.username.in_(self.users)))
        return [(self.hosts[a.asset.name], a.username, self.ctl.vault.decrypt(a.secret_current))
                for a in rows]

    def worker_peak_rss_mb(self) -> float:
        """The highest VmHWM of the worker processes so far."""
        return max([self.peak_rss_mb, *(peak_rss_mb(w.pid) for w in self.workers)])

    @staticmethod
    def _timeline(execution: Execution) -> dict:
        """Where the run's time went, from the records' timings (the worker's clock, this
        machine's): execution created -> first record taken -> last result made -> execution
        ended (results applied by the daemon); and the median time a record spent in the worker."""
        rows = list(Record.select().where(Record.execution == execution))
        started = min(r.started_at for r in rows)
        finished = max(r.finished_at for r in rows)
        spans = sorted((r.finished_at - r.started_at).total_seconds() for r in rows)
        return {"to_first_record_s": (started - execution.created_at).total_seconds(),
                "records_s": (finished - started).total_seconds(),
                "to_execution_end_s": (execution.finished_at - finished).total_seconds(),
                "record_ms_median": 1000 * statistics.median(spans)}

    def _start_profilers(self, folder: Path, label: str) -> list[subprocess.Popen]:
        """py-spy on the worker and the daemon (all threads, idle ones too: wall-clock view)."""
        folder.mkdir(parents=True, exist_ok=True)
        profilers = []
        for process in (*self.workers, self.daemon):
            out = folder / f"{process.name}-{label}.txt"
            profilers.append(subprocess.Popen(
                ["py-spy", "record", "--pid", str(process.pid), "--format", "raw", *PYSPY_MODE,
                 "--threads", "--rate", PYSPY_RATE, "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)   # attached before the run starts
        return profilers


# ---- the paramiko reference ------------------------------------------------------------------

def reference_run(hosts: list[SshHost], users: list[str], login_password: str,
                  threads: int) -> dict:
    targets = [Target(host.address, host.host_public_key, LOGIN, login_password, user,
                      new_password()) for host in hosts for user in users]
    seconds, succeeded = rotate_all(targets, threads)
    if succeeded != len(targets):
        raise SystemExit(f"reference: {succeeded}/{len(targets)} succeeded")
    by_address = {host.address: host for host in hosts}
    failed = check_logins([(by_address[t.address], t.username, t.new_password) for t in targets])
    if failed:
        raise SystemExit(f"reference: {failed} accounts do not log in with their new password")
    return {"run": f"reference (paramiko, {threads} threads)", "accounts": len(targets),
            "seconds": seconds}


# ---- Ansible ---------------------------------------------------------------------------------

def ansible_run(hosts: list[SshHost], users: list[str], login_password: str, connection: str,
                rounds: int, forks: int, folder: Path) -> dict:
    """ansible-playbook over one inventory host per account (as the seed generated them)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"ansible-{connection}-", dir=folder))
    home = run_dir / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    known_hosts = home / ".ssh" / "known_hosts"     # paramiko reads ~/.ssh/known_hosts
    known_hosts.write_text("".join(f"{h.address} {h.host_public_key}\n" for h in hosts))
    passwords = {}
    accounts = {}
    for index, host in enumerate(hosts):
        for user in users:
            passwords[(host.address, user)] = password = new_password()
            accounts[f"host{index:03d}-{user}"] = {"ansible_host": host.address, "account": user,
                                                   "new_password": password}
    inventory_file = run_dir / "inventory.yml"    # JSON is YAML
    inventory_file.touch(mode=0o600)
    inventory_file.write_text(json.dumps({"accounts": {"hosts": accounts, "vars": {
        "ansible_user": LOGIN, "ansible_password": login_password,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} "
                                   f"-o StrictHostKeyChecking=yes"}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1")
    argv = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(inventory_file), "-c",
            connection, "-f", str(forks), "-e", f"hash_rounds={rounds}",
            str(ANSIBLE_DIR / "rotate.yml")]
    log_path = run_dir / "ansible.log"
    try:
        with open(log_path, "wb") as log:
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=3600)
            seconds = time.perf_counter() - started
    finally:
        stop_control_masters(home / ".ansible" / "cp")
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"ansible ({connection}) exited with {done.returncode}:\n{tail}")
    by_address = {host.address: host for host in hosts}
    failed = check_logins([(by_address[a], u, p) for (a, u), p in passwords.items()])
    if failed:
        raise SystemExit(f"ansible ({connection}): {failed} accounts do not log in")
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"run": f"ansible {connection} (forks {forks}, {rounds} rounds)",
            "accounts": len(passwords), "seconds": seconds}


def ansible_connections(names: str) -> list[str]:
    """The connections asked for that can run here (ssh with passwords needs sshpass)."""
    if not all(importlib.util.find_spec(name) for name in ("ansible", "passlib")):
        raise SystemExit("Ansible runs need the bench extra: pip install -e '.[bench]' "
                         "(or --no-ansible)")
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if "ssh" in chosen and shutil.which("sshpass") is None:
        say("[yellow]no sshpass: skipping Ansible's ssh connection "
            "(apt-get install -y sshpass)[/yellow]")
        chosen.remove("ssh")
    return chosen


def stop_control_masters(folder: Path) -> None:
    """End the ssh ControlPersist masters this run left (each by its own control socket)."""
    if not folder.is_dir():
        return
    for socket_path in folder.iterdir():
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", "bench"],
                       capture_output=True, timeout=30)


# ---- the benchmark ---------------------------------------------------------------------------

TITLE = ("rotation throughput (targets: keyturn <= 1.3 x reference, >= 3 x faster than Ansible; "
         "worker peak RSS <= 120 MB)")


def print_report(rows: list[dict], summary: dict, title: str = TITLE,
                 benchmark: str = "rotate") -> None:
    table = Table(title=title)
    columns = ["round", "pair", "run", "accounts", "seconds", "ms_per_account",
               "ratio_to_reference"]
    if any("host_cpu_ms_per_account" in row for row in rows):
        columns.append("host_cpu_ms_per_account")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                        for c in columns])
    out = Console(width=max(Console().width, 150))
    out.print(table)
    summary_table = Table(title="summary (medians; keyturn_over_reference: of the pairs' ratios)")
    for key in summary:
        summary_table.add_column(key)
    summary_table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v)
                            for v in summary.values()])
    out.print(summary_table)
    print(json.dumps({"benchmark": benchmark, "rows": rows, "summary": summary}))


@click.command()
@click.option("--hosts", "host_count", default=20, show_default=True)
@click.option("--users", "user_count", default=10, show_default=True)
@click.option("--runs", default=1, show_default=True, help="Rounds of all the runs.")
@click.option("--pairs", default=3, show_default=True,
              help="keyturn/reference pairs per round, in alternating order (the ratio is the "
                   "median of the pairs' ratios: this machine is noisy).")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True,
              help="The reference's parallelism (the worker's default KEYTURN_WORKER_THREADS).")
@click.option("--forks", default=20, show_default=True, help="Ansible's forks.")
@click.option("--ansible-rounds", default=5000, show_default=True,
              help="sha512 rounds of password_hash in the playbook (the filter's default: 656000).")
@click.option("--ansible/--no-ansible", "with_ansible", default=True)
@click.option("--connections", default="ssh,paramiko", show_default=True,
              help="Ansible connection plugins to measure.")
@click.option("--cli", is_flag=True, help="Time the `keyturn plan run --wait` process instead.")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Record py-spy profiles of the worker and daemon here during keyturn runs.")
def main(host_count, user_count, runs, pairs, threads, forks, ansible_rounds, with_ansible,
         connections, cli, profile_dir):
    users = [f"u{j:02d}" for j in range(user_count)]
    chosen = ansible_connections(connections) if with_ansible else []
    login_password = new_password()
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyturn-bench-")))
        hosts = start_hosts(stack, folder, host_count, users, login_password)
        say("setting up keyturn (PostgreSQL, RabbitMQ, daemon)")
        keyturn = Keyturn(stack, hosts, users, login_password, folder)

        def run_keyturn(round_: int, pair: int) -> None:
            say(f"round {round_}, pair {pair}: keyturn")
            rows.append({"round": round_, "pair": pair,
                         **keyturn.run(cli, profile_dir, f"r{round_}p{pair}")})

        def run_reference(round_: int, pair: int) -> None:
            say(f"round {round_}, pair {pair}: reference")
            rows.append({"round": round_, "pair": pair,
                         **reference_run(hosts, users, login_password, threads)})

        for round_ in range(1, runs + 1):
            for pair in range(1, pairs + 1):
                order = (run_keyturn, run_reference) if pair % 2 else (run_reference, run_keyturn)
                for run in order:
                    run(round_, pair)
            for connection in chosen:
                say(f"round {round_}: ansible {connection}")
                rows.append({"round": round_, "pair": "", **ansible_run(
                    hosts, users, login_password, connection, ansible_rounds, forks, folder)})
        rss = keyturn.worker_peak_rss_mb()
        for process in keyturn.group.processes:
            if "Traceback" in process.log_text():
                say(f"[red]keyturn {process.name} logged a traceback: {process.log_path}[/red]")
    summary = summarise(rows, runs, pairs)
    summary["worker_peak_rss_mb"] = rss
    summary["targets_met"] = " ".join(
        f"{name}:{'yes' if ok else 'NO'}" for name, ok in [
            ("ref<=1.3", summary["keyturn_over_reference"] <= 1.3),
            ("ansible>=3", summary.get("ansible_over_keyturn", float("nan")) >= 3
             if chosen else None),
            ("rss<=120MB", rss <= 120)] if ok is not None)
    print_report(rows, summary)


def summarise(rows: list[dict], runs: int, pairs: int) -> dict:
    """Per row: ms per account and the ratio to the reference (of its pair; Ansible: to the
    median reference of its round). Summary: medians of the keyturn/reference pair ratios and
    of the times."""
    def is_(row, kind):
        return row["run"].startswith(kind)

    for row in rows:
        row["ms_per_account"] = 1000 * row["seconds"] / row["accounts"]
        if row["pair"] != "":
            peers = [r for r in rows if r["round"] == row["round"] and r["pair"] == row["pair"]]
        else:
            peers = [r for r in rows if r["round"] == row["round"]]
        reference = statistics.median([r["seconds"] for r in peers if is_(r, "reference")])
        row["ratio_to_reference"] = row["seconds"] / reference
    keyturn = statistics.median([r["seconds"] for r in rows if is_(r, "keyturn")])
    reference = statistics.median([r["seconds"] for r in rows if is_(r, "reference")])
    summary = {"rounds": runs, "pairs": pairs, "keyturn_s": keyturn, "reference_s": reference,
               "keyturn_over_reference": statistics.median(
                   [r["ratio_to_reference"] for r in rows if is_(r, "keyturn")])}
    ansible: dict[str, list[float]] = {}
    for row in rows:
        if is_(row, "ansible"):
            ansible.setdefault(row["run"].split()[1], []).append(row["seconds"])
    if ansible:
        best = min(ansible, key=lambda c: statistics.median(ansible[c]))
        summary.update(ansible_connection=best, ansible_s=statistics.median(ansible[best]),
                       ansible_over_keyturn=statistics.median(ansible[best]) / keyturn)
    return summary


if __name__ == "__main__":
    main()
