"""Zones that distrust each other, on a RabbitMQ node of the tests' own: the accounts `keyturn
broker-account --apply` makes let a zone's worker rotate (and retry) its own zone's accounts,
and refuse the same credentials everything else: another zone's queue, the results, the dead
letters, publishing to another zone, deleting or purging what is not theirs."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import dramatiq
import pika
import pytest

from controller import inventory
from controller.models import Execution
from shared.broker import BUS_EXCHANGE, EVENTS_EXCHANGE, REQUESTS_QUEUE, RESULTS_QUEUE, rotate_queue
from shared.bus import BusBroker
from tests.e2e import current_secret, save
from tests.processes import KEYTURN, ProcessGroup, keyturn_env, wait_until

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
USERS = {"alice": "alice-old-1", "bob": "bob-old-1"}


@pytest.fixture
def bus(bus_accounts):
    return {role: bus_accounts.url(role) for role in bus_accounts.accounts}


def channel_of(url: str):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


def refusal(url: str, action) -> str:
    """What RabbitMQ answers when `action(channel)` is tried with these credentials."""
    connection, channel = channel_of(url)
    try:
        channel.confirm_delivery()
        action(channel)
        return "allowed"
    except pika.exceptions.ChannelClosedByBroker as exc:
        return f"{exc.reply_code} {exc.reply_text}"
    finally:
        if connection.is_open:
            connection.close()


def publish(exchange: str, routing_key: str):
    return lambda channel: channel.basic_publish(exchange, routing_key, b"{}")


def drain(url: str, queue: str) -> list[bytes]:
    """Take every message off `queue` (none if it was never declared)."""
    connection, channel = channel_of(url)
    bodies = []
    try:
        while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
            bodies.append(message[2])
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
    finally:
        if connection.is_open:
            connection.close()
    return bodies


def set_up_bus(bus) -> None:
    """What the controller declares (its account may): zones' queues, results, both exchanges."""
    controller = BusBroker(url=bus["controller"], confirm_delivery=True, tls=None, worker=False)
    for queue in (rotate_queue("a"), rotate_queue("b"), RESULTS_QUEUE):
        controller.declare_queue(queue, ensure=True)
    controller.channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
    controller.close()


@on_postgres
def test_a_zone_worker_with_its_own_account_rotates_and_retries(ctl, bus, ssh_farm, tmp_path):
    host, = ssh_farm.start_hosts(1, users=USERS)
    host.set_password("root", "root-pw-a")
    inventory.add_zone(ctl, "a", None, trust_first_use=True)
    inventory.add_asset("a-0", host.address, 22, "linux", "a", "/dc/a", host.host_public_key)
    inventory.set_account(ctl, "a-0", "root", "root-pw-a", True)
    for user, password in USERS.items():
        inventory.set_account(ctl, "a-0", user, password, False)
    save(ctl, "zone-a", list(USERS))
    group = ProcessGroup(keyturn_env(ctl.settings, bus["controller"]), tmp_path)
    try:
        group.start("daemon", "daemon")
        assert group.run("plan", "run", "zone-a").returncode == 0     # published, no worker yet

        # One command takes dramatiq's retry route (the delay queue, then back to rotate.a),
        # published with zone a's account as the worker's Retries middleware would.
        retrier = BusBroker(url=bus["a"], confirm_delivery=True, tls=None, worker=True)
        retrier.declare_queue(rotate_queue("a"))
        connection, channel = channel_of(bus["a"])
        method, _, body = channel.basic_get(rotate_queue("a"))
        message = dramatiq.Message.decode(body)
        retrier.enqueue(message.copy(options={**message.options, "retries": 1}), delay=300)
        channel.basic_ack(method.delivery_tag)
        connection.close()
        retrier.close()

        worker = group.start("worker", "worker", "--zone", "a", KEYTURN_BROKER_URL=bus["a"])
        wait_until(lambda: Execution.get().status != "running", 120, what="the run to end")
        execution = Execution.get()
        assert (execution.status, execution.succeeded) == ("success", 2)
        for user, old in USERS.items():
            new = current_secret(ctl, "a-0", user)
            assert new != old and host.password_works(user, new)
            assert not host.password_works(user, old)
        assert "message schema 1" in worker.log_text() and "keyturn 0.1.0" in worker.log_text()
    finally:
        group.close()
    for process in group.processes:
        assert "Traceback" not in process.log_text() and "ACCESS_REFUSED" not in process.log_text()


@on_postgres
def test_a_zones_account_is_refused_everything_else(ctl, bus, tmp_path):
    set_up_bus(bus)
    zone_a = bus["a"]
    refused = {
        "consume rotate.b": lambda ch: ch.basic_consume(rotate_queue("b"), lambda *_: None),
        "get rotate.b": lambda ch: ch.basic_get(rotate_queue("b")),
        "read the results": lambda ch: ch.basic_get(RESULTS_QUEUE),
        "read its own dead letters": lambda ch: ch.basic_get(rotate_queue("a") + ".XQ"),
        "publish to rotate.b via the bus": publish(BUS_EXCHANGE, rotate_queue("b")),
        "publish to rotate.b.DQ via the bus": publish(BUS_EXCHANGE, rotate_queue("b") + ".DQ"),
        "publish to rotate.b directly": publish("", rotate_queue("b")),
        "publish to the results directly": publish("", RESULTS_QUEUE),
        "publish an event": publish(EVENTS_EXCHANGE, "io.keyturn.record.succeeded"),
        "bind its queue to every key": lambda ch: ch.queue_bind(rotate_queue("a"), BUS_EXCHANGE,
                                                                routing_key="#"),
        "delete the results": lambda ch: ch.queue_delete(RESULTS_QUEUE),
        "purge rotate.b": lambda ch: ch.queue_purge(rotate_queue("b")),
        "delete the bus": lambda ch: ch.exchange_delete(BUS_EXCHANGE),
        "declare a queue of another name": lambda ch: ch.queue_declare("rotate.ab", durable=True),
        "delete its own queue": lambda ch: ch.queue_delete(rotate_queue("a")),
    }
    for what, action in refused.items():
        assert refusal(zone_a, action).startswith("403 ACCESS_REFUSED"), what
    assert refusal(zone_a, publish(BUS_EXCHANGE, RESULTS_QUEUE)) == "allowed"
    assert drain(bus["controller"], RESULTS_QUEUE) == [b"{}"]      # it did arrive (and is gone)
    assert refusal(zone_a, lambda ch: ch.basic_get(rotate_queue("a"))) == "allowed"

    # A worker started for zone b with zone a's account stops at once, with one line.
    inventory.add_zone(ctl, "b", None, trust_first_use=True)
    group = ProcessGroup(keyturn_env(ctl.settings, zone_a), tmp_path)
    done = group.run("worker", "--zone", "b", timeout=60)
    assert done.returncode == 1
    line, = done.stderr.strip().splitlines()
    assert "ACCESS_REFUSED" in line and "rotate.b" in line and "keyturn broker-account" in line


def test_an_integration_account_sends_requests_and_reads_events_only(bus):
    tickets = bus["tickets"]
    own = "integration.tickets.events"

    def listen(channel):
        channel.queue_declare(own, durable=True)
        channel.queue_bind(own, EVENTS_EXCHANGE, routing_key="io.keyturn.#")
        channel.basic_get(own)

    set_up_bus(bus)
    assert refusal(tickets, listen) == "allowed"
    assert refusal(tickets, publish(BUS_EXCHANGE, REQUESTS_QUEUE)) == "allowed"
    drain(bus["controller"], REQUESTS_QUEUE)    # bound there if a daemon declared it: no trace left
    for what, action in {
        "publish a command": publish(BUS_EXCHANGE, rotate_queue("a")),
        "publish directly": publish("", REQUESTS_QUEUE),
        "publish an event": publish(EVENTS_EXCHANGE, "io.keyturn.record.succeeded"),
        "read the results": lambda ch: ch.basic_get(RESULTS_QUEUE),
        "read a zone's queue": lambda ch: ch.basic_get(rotate_queue("a")),
        "bind to the bus": lambda ch: ch.queue_bind(own, BUS_EXCHANGE, routing_key=RESULTS_QUEUE),
        "declare another's queue": lambda ch: ch.queue_declare("integration.other.events"),
    }.items():
        assert refusal(tickets, action).startswith("403 ACCESS_REFUSED"), what


def test_broker_account_prints_the_commands_or_applies_them_once(rabbit_node, bus_accounts):
    printed = subprocess.run([*KEYTURN, "zone", "broker-account", "g", "--vhost", "prod"],
                             capture_output=True, text=True, timeout=60, env=keyturn_env_only())
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[1] == "rabbitmqctl add_user keyturn-zone-g   # asks for the password"
    assert lines[2].startswith("rabbitmqctl set_permissions -p prod keyturn-zone-g '^$' ")
    assert any(line.startswith("rabbitmqctl set_topic_permissions -p prod keyturn-zone-g "
                               "keyturn.bus ") for line in lines)

    bad = subprocess.run([*KEYTURN, "broker-account", "zone", "g", "--user", "a b\nc"],
                         capture_output=True, text=True, timeout=60, env=keyturn_env_only())
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "printable" in bad.stderr
    bad = subprocess.run([*KEYTURN, "zone", "broker-account", "Zone!"], capture_output=True,
                         text=True, timeout=60, env=keyturn_env_only())
    assert bad.returncode == 1 and "lowercase ASCII letters" in bad.stderr

    vhost = bus_accounts.vhost
    command = shlex.join(rabbit_node.rabbitmqctl)
    apply = [*KEYTURN, "broker-account", "zone", "g", "--apply", "--vhost", vhost,
             "--rabbitmqctl", command]
    first = subprocess.run(apply, capture_output=True, text=True, timeout=120, env=rabbit_node.env
                           | keyturn_env_only())
    assert first.returncode == 0, first.stderr
    password = first.stdout.strip()
    assert len(password) >= 24 and password not in first.stderr
    again = subprocess.run(apply, capture_output=True, text=True, timeout=120, env=rabbit_node.env
                           | keyturn_env_only())
    assert again.returncode == 0 and again.stdout == ""          # kept: no new password
    url = rabbit_node.url(vhost, ("keyturn-zone-g", password))
    assert refusal(url, lambda ch: ch.basic_get(rotate_queue("g"))).startswith("404")  # not yet declared
    assert password not in rabbit_node.log_text()
    rabbit_node.ctl("delete_user", "keyturn-zone-g")


def keyturn_env_only() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1])}
