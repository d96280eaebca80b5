"""Database rotation throughput: 1,000 PostgreSQL roles on a cluster of the benchmark's own
(scram-sha-256, loopback) rotated and proven two ways in the same run:

- keyturn end to end: the controller on PostgreSQL, RabbitMQ, `keyturn daemon` and one
  `keyturn worker` process at its default settings; timed from `run_plan` until the daemon has
  applied the last result;
- the reference: a minimal psycopg script doing the same work with the worker's default
  parallelism (KEYTURN_WORKER_THREADS): per role a SCRAM verifier, `ALTER ROLE` over one
  superuser connection per thread, a fresh login with the new password and a refused one with
  the old.

Runs alternate in `--pairs` pairs and the keyturn/reference ratio is the median of the pairs'
ratios (this machine is shared and noisy). Before a keyturn run the last run's commands are left
to expire (untimed; an account is not rotated again while a command for it may act).

    python -m bench.rotate_db [--roles 1000] [--pairs 3]
"""
from __future__ import annotations

import contextlib
import queue
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click
import psycopg
from peewee import fn
from psycopg import sql

from bench.support import controller_for, report, temp_database, temp_vhost
from controller import inventory
from controller.models import Execution, Plan, Record, utcnow
from controller.planning import run_plan
from controller.plans import parse_spec, save_plan
from shared.settings import Settings
from tests.pg_server import PgServer
from tests.processes import ProcessGroup, keyturn_env, wait_until

ZONE = "bench"
DEFAULT_THREADS = Settings.model_fields["worker_threads"].default
VALIDITY = {"rotation_deadline": 60, "clock_skew": 0}


def new_password() -> str:
    return secrets.token_urlsafe(18)


def login_works(server: PgServer, role: str, password: str) -> bool:
    try:
        psycopg.connect(host=server.address, port=server.port, dbname="postgres", user=role,
                        password=password, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        if "password authentication failed" in str(exc):
            return False
        raise
    return True


def reference_run(server: PgServer, passwords: dict[str, str], threads: int) -> float:
    """The same work as keyturn's, as plainly as psycopg allows; returns seconds."""
    work: queue.Queue = queue.Queue()
    for role in passwords:
        work.put(role)
    failures: list[str] = []

    def rotate_some() -> None:
        with server.connect() as admin:
            while True:
                try:
                    role = work.get_nowait()
                except queue.Empty:
                    return
                new = new_password()
                verifier = admin.pgconn.encrypt_password(new.encode(), role.encode(),
                                                         b"scram-sha-256").decode()
                admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier)))
                if not login_works(server, role, new) or login_works(server, role, passwords[role]):
                    failures.append(role)
                passwords[role] = new

    started = time.perf_counter()
    pool = [threading.Thread(target=rotate_some) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise SystemExit(f"reference: {len(failures)} roles not proven, e.g. {failures[:3]}")
    return time.perf_counter() - started


class Keyturn:
    """A controller on a throw-away schema and vhost, the daemon and one worker as processes."""

    def __init__(self, stack: contextlib.ExitStack, server: PgServer, roles: list[str],
                 passwords: dict[str, str], folder: Path):
        self.server = server
        self.ctl = controller_for(folder / "data", stack.enter_context(temp_database("postgres")),
                                  stack.enter_context(temp_vhost()), **VALIDITY)
        inventory.add_zone(self.ctl, ZONE, None, trust_first_use=False)
        inventory.add_asset("pg-1", server.address, server.port, "postgresql", ZONE, "/bench", None)
        inventory.set_account(self.ctl, "pg-1", server.admin, server.admin_password, True)
        for role in roles:
            inventory.set_account(self.ctl, "pg-1", role, passwords[role], False)
        self.plan = save_plan(parse_spec({"name": "bench", "nodes": ["/bench"], "usernames": roles}),
                              self.ctl.vault)
        env = keyturn_env(self.ctl.settings, self.ctl.settings.broker_url) | {
            f"KEYTURN_{name.upper()}": str(value) for name, value in VALIDITY.items()}
        self.group = ProcessGroup(env, folder)
        stack.callback(self.group.close)
        self.group.start("daemon", "daemon")
        self.group.start("worker", "worker", "--zone", ZONE)

    def run(self) -> float:
        last = Record.select(fn.MAX(Record.deadline)).scalar()
        if last is not None:
            time.sleep(max(0.0, (last - utcnow()).total_seconds() + 0.1))
        started = time.perf_counter()
        execution = run_plan(self.ctl, Plan.get_by_id(self.plan.id), started_by="bench")
        wait_until(lambda: Execution.get_by_id(execution.id).status != "running", 1800, 0.05,
                   "the keyturn run")
        seconds = time.perf_counter() - started
        done = Execution.get_by_id(execution.id)
        if done.succeeded != done.total:
            reasons = [(r.status, r.error) for r in Record.select().where(
                (Record.execution == done) & (Record.status != "success")).limit(3)]
            raise SystemExit(f"keyturn: {done.succeeded}/{done.total} succeeded; e.g. {reasons}")
        return seconds


@click.command()
@click.option("--roles", "role_count", default=1000, show_default=True)
@click.option("--pairs", default=3, show_default=True)
@click.option("--threads", default=DEFAULT_THREADS, show_default=True,
              help="The reference's parallelism (the worker's default KEYTURN_WORKER_THREADS).")
def main(role_count: int, pairs: int, threads: int) -> None:
    roles = [f"r{n:05d}" for n in range(role_count)]
    rows = []
    with contextlib.ExitStack() as stack:
        server = PgServer("scram-sha-256")
        server.create()
        stack.callback(server.close)
        passwords = {role: new_password() for role in roles}
        for role in roles:
            server.create_role(role, passwords[role])
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyturn-bench-")))
        keyturn = Keyturn(stack, server, roles, dict(passwords), folder)
        for pair in range(1, pairs + 1):
            for kind in (("keyturn", "reference") if pair % 2 else ("reference", "keyturn")):
                seconds = keyturn.run() if kind == "keyturn" else reference_run(server, passwords,
                                                                               threads)
                rows.append({"pair": pair, "run": kind, "roles": role_count, "seconds": seconds,
                             "roles_per_s": role_count / seconds})
    for row in rows:
        reference = next(r["seconds"] for r in rows
                         if r["pair"] == row["pair"] and r["run"] == "reference")
        row["ratio_to_reference"] = row["seconds"] / reference
    ratio = statistics.median(r["ratio_to_reference"] for r in rows if r["run"] == "keyturn")
    rows.append({"pair": "median", "run": "keyturn / reference", "roles": role_count,
                 "seconds": float("nan"), "roles_per_s": float("nan"), "ratio_to_reference": ratio})
    report(f"PostgreSQL rotation (target: keyturn <= 1.3 x reference): {ratio:.2f}x "
           f"({'met' if ratio <= 1.3 else 'NOT met'})", rows)


if __name__ == "__main__":
    main()
