"""No secret leaks: a whole plan with debug logging on, then every log line, every result and
event message (raw and opened), every record's error text and the operator's CLI views are
searched for every secret involved (old, new and privileged)."""
from __future__ import annotations

import json

import pika
import pytest

from controller import inventory
from controller.events import EXCHANGE
from controller.models import Account, LogLine, Record
from shared import zonecrypto
from shared.broker import RESULTS_QUEUE
from shared.messages import open_envelope, parse_envelope
from tests.e2e import USERS, save
from tests.processes import ProcessGroup, keyturn_env, wait_until

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def test_no_secret_in_logs_results_events_errors_or_views(ctl, zone_fleet, rabbitmq_url, tmp_path):
    inventory.set_account(ctl, "west-2", "dave", "dave-secret-1", False)     # not on the host
    inventory.set_account(ctl, "east-1", "root", "wrong-root-secret", True)  # login fails
    save(ctl, "leaky", ["alice", "bob", "dave"])
    group = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url) | {"KEYTURN_LOG_LEVEL": "DEBUG"},
                         tmp_path)
    events = listen_to_events(rabbitmq_url)
    try:
        workers = [group.start(f"worker-{zone}", "worker", "--zone", zone) for zone in ("east", "west")]
        assert group.run("plan", "run", "leaky").returncode == 0
        total = Record.select().count()
        raw_results = wait_until(lambda: peek(rabbitmq_url, RESULTS_QUEUE, 2 * total), 120,
                                 what="every progress message and result in the queue")
        group.start("daemon", "daemon")
        wait_until(lambda: not Record.select().where(Record.status.in_(("pending", "dispatched")))
                   .exists(), 120, what="results applied")
        channel, queue, received = events

        def execution_event_arrived() -> bool:
            received.extend(drain(channel, queue))
            return any(event["type"] == "io.keyturn.execution.finished" for event in received)

        wait_until(execution_event_arrived, 30, what="the events")
        views = [group.run("records", "--json").stdout,
                 group.run("execution", "show", str(Record.get().execution_id)).stdout,
                 group.run("account", "list").stdout, group.run("plan", "list").stdout]
    finally:
        group.close()
    secrets = every_secret(ctl)
    channels = {zone: zonecrypto.Channel(zonecrypto.read_private_key(ctl.settings.zone_key_path(zone)),
                                         ctl.private_key.public_key) for zone in ("east", "west")}
    opened = [open_envelope(parse_envelope(json.loads(body)["args"][0]),
                            channels[json.loads(body)["args"][0]["zone"]]).model_dump_json()
              for body in raw_results]
    texts = {"logs": "".join(p.log_text() for p in group.processes),
             "raw results": b"".join(raw_results).decode(), "opened results": "".join(opened),
             "events": json.dumps(events[2]),
             "record errors": "".join(r.error or "" for r in Record.select()),
             "execution log": "\n".join(line.message for line in LogLine.select()),
             "views": "".join(views)}
    assert "DEBUG" in texts["logs"] and len(texts["opened results"]) > 1000 and events[2]
    assert any("user_missing" in t for t in texts.values())
    assert "picked up by worker" in texts["execution log"] and "user_missing" in texts["execution log"]
    for where, text in texts.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{len(leaked)} secret(s) in {where}"
    for process in workers:
        assert "Traceback" not in process.log_text()


def every_secret(ctl) -> set[str]:
    found = set(USERS.values()) | {"dave-secret-1", "wrong-root-secret", "ops-pw-1"}
    found |= {f"root-pw-{i}" for i in range(2)}
    for record in Record.select():
        found |= {ctl.vault.decrypt(record.old_secret), ctl.vault.decrypt(record.new_secret)}
    for account in Account.select():
        found |= {ctl.vault.decrypt(getattr(account, f"secret_{v}"))
                  for v in ("current", "pending", "previous")}
    return {secret for secret in found if secret}


def listen_to_events(url: str):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EXCHANGE, routing_key="#")
    return channel, queue, []


def drain(channel, queue) -> list:
    bodies = []
    while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
        bodies.append(json.loads(message[2]))
    return bodies


def peek(url: str, queue: str, count: int) -> list[bytes] | None:
    """The queue's messages once it holds `count`, left in place (not acknowledged)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        try:
            declared = channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as closed:
            if closed.reply_code == 404:     # no worker has published a result yet
                return None
            raise
        if declared.method.message_count < count:
            return None
        bodies = [channel.basic_get(queue)[2] for _ in range(count)]
        channel.basic_recover(requeue=True)
        return bodies
    finally:
        connection.close()
