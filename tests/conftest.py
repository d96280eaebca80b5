"""Shared fixtures: settings on a temporary data dir, and the controller on SQLite and on
PostgreSQL (a fresh schema per test in the `test` database)."""
from __future__ import annotations

import os
import subprocess
import time
import uuid

import psycopg
import pytest

from controller.inventory import initialise
from controller.runtime import start_controller
from controller.web import users
from shared.settings import load_settings

pytest_plugins = ["tests.sshd_hosts", "tests.web_support", "tests.e2e", "tests.pg_server", "tests.mariadb_server", "tests.redis_server", "tests.slapd_server", "tests.samba_dc", "tests.rabbitmq_server", "tests.rabbitmq_cluster"]

POSTGRES_DSN = os.environ.get("KEYTURN_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests see only the KEYTURN_* settings they set themselves."""
    for name in list(os.environ):
        if name.startswith("KEYTURN_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _cheap_password_hashes(request, monkeypatch):
    """Console users made in the test process get scrypt at N=2^12, not 2^15: the same code
    at an eighth of the 0.1 s that each hash and each sign-in costs, over hundreds of tests.
    A test marked `full_password_cost` keeps the real cost (a `keyturn` subprocess always
    has it)."""
    if not request.node.get_closest_marker("full_password_cost"):
        monkeypatch.setattr(users, "PASSWORD_HASH", "scrypt:4096:8:1")


@pytest.fixture
def postgres_url():
    """A PostgreSQL URL whose search_path is a schema made for this test and dropped after it."""
    schema = f"kt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    params = dict(part.split("=", 1) for part in POSTGRES_DSN.split())
    yield (f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"
           f"?options=-csearch_path%3D{schema}")
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keyturn.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(tmp_path, database_url):
    return load_settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def ctl(settings):
    """An initialised controller on the in-process broker."""
    initialise(settings)
    controller = start_controller(settings)
    yield controller
    from controller.db import database
    database.close()


@pytest.fixture
def bus_ctl(request, settings, rabbitmq_url):
    """The `ctl` controller, publishing to this test's own RabbitMQ virtual host."""
    settings.broker_url = rabbitmq_url
    return request.getfixturevalue("ctl")


@pytest.fixture
def targets():
    """What a worker keeps between commands (pooled sessions, proofs), closed after the test."""
    from worker.connectors import Targets

    kept = Targets()
    yield kept
    kept.close()


@pytest.fixture
def rabbitmq_url():
    """A RabbitMQ virtual host of this test's own, so queues never mix between tests or runs."""
    vhost = f"kt_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("delete_vhost", vhost)


def rabbitmqctl(*args: str, attempts: int = 3) -> None:
    """rabbitmqctl against the machine's node, tried again when it fails (under a loaded
    machine its CLI can time out reaching the node); the last failure says why."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or (args[0] == "add_vhost" and "already exists" in done.stderr):
            return
        if attempt < attempts:
            time.sleep(2 * attempt)
    raise RuntimeError(f"rabbitmqctl {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`.ci/run` spreads the suite over processes), the slow tests run one
    after another in one process: each starts fleets of hosts or servers and waits on timeouts,
    and beside each other on a small machine they would only compete for its cores."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("slow"))
