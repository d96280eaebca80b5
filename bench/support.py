"""What the benchmarks share: throw-away databases and RabbitMQ vhosts, bulk fleets, reports.
Everything runs against this machine only (loopback services, namespaced sshd hosts)."""
from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from controller.db import database
from controller.inventory import add_zone, initialise, node_for_path
from controller.models import Account, Asset, Zone, utcnow
from controller.runtime import start_controller
from shared.settings import load_settings

POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@contextlib.contextmanager
def temp_database(kind: str):
    """A fresh SQLite file or PostgreSQL schema, removed afterwards; yields its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="keyturn-bench-") as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    schema = f"ktbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def temp_vhost():
    """A RabbitMQ virtual host of our own on 127.0.0.1; yields its amqp URL."""
    vhost = f"ktbench_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def controller_for(data_dir: Path, database_url: str, broker_url: str | None, **settings):
    config = load_settings(data_dir=data_dir, database_url=database_url, broker_url=broker_url,
                           **settings)
    initialise(config)
    return start_controller(config)


def bulk_fleet(ctl, assets: int, users: int, zone: str = "bench", address: str = "127.0.0.1",
               node: str = "/bench") -> None:
    """`assets` assets in one zone and node, each with root and `users` accounts, inserted in bulk."""
    add_zone(ctl, zone, None, True)
    secret = "bench-old-secret"
    bulk_inventory(ctl, [{"name": f"a{i:05d}", "address": address, "port": 22, "platform": "linux"}
                         for i in range(assets)], zone, node,
                   {"root": (secret, True)} | {f"u{j:03d}": (secret, False) for j in range(users)})


def bulk_inventory(ctl, assets: list[dict], zone: str, node: str,
                   accounts: dict[str, tuple[str, bool]]) -> None:
    """`assets` (Asset rows without zone and node) in the existing `zone` and in `node`, each
    with the same `accounts` (username: (secret, privileged)), in one transaction of batched
    multi-row INSERTs: registering 10,000 accounts one call at a time (a lookup, a write and an
    audit line each) takes minutes, this takes seconds. Each secret is encrypted once."""
    zone_id = Zone.get(Zone.name == zone).id
    with database.atomic():
        node_id = node_for_path(node).id
        names = [asset["name"] for asset in assets]
        for batch in batches([asset | {"zone": zone_id, "node": node_id} for asset in assets]):
            Asset.insert_many(batch).execute()
        sealed = {secret: ctl.vault.encrypt(secret) for secret, _ in accounts.values()}
        now = utcnow()
        asset_ids = [asset_id for asset_id, in Asset.select(Asset.id).where(Asset.name.in_(names))
                     .order_by(Asset.id).tuples()]
        rows = [{"asset": asset_id, "username": username, "privileged": privileged,
                 "secret_current": sealed[secret], "current_since": now}
                for asset_id in asset_ids for username, (secret, privileged) in accounts.items()]
        for batch in batches(rows):
            Account.insert_many(batch).execute()


def batches(rows: list, size: int = 2000):
    """`rows` in slices small enough for one statement (PostgreSQL takes at most 65,535
    parameters)."""
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def queue_depth(url: str, queue: str) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


class Stopwatch:
    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_):
        self.seconds = time.perf_counter() - self.started


def report(title: str, rows: list[dict]) -> None:
    """Print the figures as a table and as one JSON line (for scripts and notes)."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()])
    Console().print(table)
    print(json.dumps({"benchmark": title, "rows": rows}))


@contextlib.contextmanager
def bench_plan(kind: str, accounts: int, users: int = 100):
    """A controller on a fresh database and vhost with `accounts` accounts and a plan over all
    of them; yields (controller, plan, amqp URL)."""
    from controller.models import Plan
    from controller.plans import parse_spec, save_plan

    with temp_database(kind) as db_url, temp_vhost() as amqp, \
            tempfile.TemporaryDirectory(prefix="keyturn-bench-") as folder:
        ctl = controller_for(Path(folder), db_url, amqp)
        bulk_fleet(ctl, accounts // users, users)
        plan = save_plan(parse_spec({"name": "bench", "nodes": ["/bench"],
                                     "usernames": [f"u{j:03d}" for j in range(users)]}), ctl.vault)
        yield ctl, Plan.get_by_id(plan.id), amqp
