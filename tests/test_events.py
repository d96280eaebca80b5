"""Events reach other systems on the `keyturn.events` topic exchange of the real RabbitMQ as
CloudEvents (structured JSON, routing key = type), valid against their schemas, without
secrets; none is lost while the broker is down, and two relays publish each event once."""
import json
import threading
import time

import pika
import pytest

from controller.events import CONTENT_TYPE, EXCHANGE, cloudevent, emit, relay_events
from controller.models import OutboxEvent, Record
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from shared.broker import make_broker
from shared.messages import RotateResult
from shared.publisher import PublishError
from tests.event_schemas import validate
from tests.inventory_helpers import build_fleet
from tests.processes import free_port


def listen(url: str):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EXCHANGE, routing_key="io.keyturn.#")
    return connection, channel, queue


def drain(channel, queue) -> list:
    got = []
    while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
        got.append(message)
    return got


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_record_and_execution_events_are_cloudevents_without_secrets(bus_ctl, rabbitmq_url):
    ctl = bus_ctl
    build_fleet(ctl, users=("alice", "bob"))
    connection, channel, queue = listen(rabbitmq_url)
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice", "bob"], "nodes": ["/prod"]}),
                     ctl.vault)
    execution = start_execution(ctl, plan)
    ok, bad = list(execution.records)
    now = time.time()
    apply_results([RotateResult(record_id=ok.id, attempt=1, zone="dmz", worker_id="w", status="success",
                                started_at=now, finished_at=now),
                   RotateResult(record_id=bad.id, attempt=1, zone="dmz", worker_id="w", status="failed",
                                error_code="user_missing", error="user bob does not exist",
                                started_at=now, finished_at=now)])
    assert relay_events(ctl) == 4
    assert not OutboxEvent.select().where(OutboxEvent.relayed_at.is_null()).exists()
    assert relay_events(ctl) == 0
    received = drain(channel, queue)
    connection.close()
    events = [json.loads(body) for _, _, body in received]
    assert [method.routing_key for method, _, _ in received] == [e["type"] for e in events] == [
        "io.keyturn.execution.started", "io.keyturn.record.succeeded", "io.keyturn.record.failed",
        "io.keyturn.execution.finished"]
    assert all(props.content_type == CONTENT_TYPE and props.delivery_mode == 2
               for _, props, _ in received)
    for event in events:
        validate(event)
    assert [e["id"] for e in events] == [str(r.id) for r in OutboxEvent.select().order_by(OutboxEvent.id)]
    assert events[2]["data"]["error"] == "user bob does not exist"
    assert events[2]["subject"] == "web-1/bob" and events[0]["subject"] == f"execution/{execution.id}"
    assert events[3]["data"]["succeeded"] == 1 and events[3]["data"]["failed"] == 1
    secrets = [ctl.vault.decrypt(r.new_secret) for r in Record.select()] + ["rootpw", "old-bob-web-1"]
    text = json.dumps(events)
    assert not any(secret in text for secret in secrets)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_event_waits_while_the_broker_is_down(bus_ctl, rabbitmq_url):
    ctl = bus_ctl
    emit([("io.keyturn.worker.lost", "w1", {"worker": "w1", "zone": "dmz", "host": "h",
                                            "last_seen": "2026-01-01T00:00:00Z"})])
    ctl.__dict__["broker"] = make_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(PublishError):
        relay_events(ctl)
    event = OutboxEvent.get()
    assert event.relayed_at is None and event.claimed_until is None   # given back at once
    ctl.__dict__["broker"] = make_broker(rabbitmq_url)
    connection, channel, queue = listen(rabbitmq_url)
    assert relay_events(ctl) == 1
    (method, _, body), = drain(channel, queue)
    connection.close()
    assert json.loads(body)["id"] == str(event.id) and method.routing_key == "io.keyturn.worker.lost"


def test_two_relays_publish_each_event_once(bus_ctl, rabbitmq_url):
    """Two relays (as in two daemons) drain one outbox at once: every event arrives once."""
    ctl = bus_ctl
    count = 3000
    emit([("io.keyturn.worker.lost", f"w{i}", {"worker": f"w{i}", "zone": "dmz", "host": "h",
                                               "last_seen": "2026-01-01T00:00:00Z"})
          for i in range(count)])
    connection, channel, queue = listen(rabbitmq_url)
    relayed, errors = [], []

    def relay():
        try:
            while OutboxEvent.select().where(OutboxEvent.relayed_at.is_null()).exists():
                relayed.append(relay_events(ctl))
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and sum(relayed) == count
    ids = []
    deadline = time.monotonic() + 30
    while len(ids) < count and time.monotonic() < deadline:
        ids += [json.loads(body)["id"] for _, _, body in drain(channel, queue)]
    connection.close()
    assert len(ids) == len(set(ids)) == count


def test_lost_workers_host_key_mismatches_and_pruning(ctl):
    from datetime import timedelta

    from controller.events import RETENTION, announce_lost_workers, prune
    from controller.models import WebhookDelivery, WebhookSubscription, WorkerSeen, utcnow
    from controller import events

    WorkerSeen.create(worker_id="w-1", zone="dmz", host="h", version="1",
                      last_seen=utcnow() - timedelta(minutes=5))
    WorkerSeen.create(worker_id="w-2", zone="dmz", host="h", version="1", last_seen=utcnow())
    assert announce_lost_workers(ctl) == 1 and announce_lost_workers(ctl) == 0
    lost = OutboxEvent.get(OutboxEvent.routing_key == "io.keyturn.worker.lost")
    assert lost.subject == "w-1" and lost.body["zone"] == "dmz"

    build_fleet(ctl, users=("alice",))
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice"], "nodes": ["/prod"]}), ctl.vault)
    record = start_execution(ctl, plan).records.get()
    now = time.time()
    apply_results([RotateResult(record_id=record.id, attempt=1, zone="dmz", worker_id="w",
                                status="failed", error_code="host_key_mismatch",
                                error="web-1: the host key changed", started_at=now,
                                finished_at=now)])
    mismatch = OutboxEvent.get(OutboxEvent.routing_key == "io.keyturn.asset.host_key_mismatch")
    assert mismatch.subject == "web-1" and mismatch.body["record"] == record.id
    for event in OutboxEvent.select():
        validate(cloudevent(ctl, event))

    old = utcnow() - RETENTION - timedelta(hours=1)
    OutboxEvent.update(relayed_at=old).execute()
    hook = WebhookSubscription.create(name="h", url="http://x/", event_types=["*"], secret=b"")
    WebhookDelivery.create(subscription=hook, event=lost)           # still to be delivered
    events._next_prune = 0.0
    before = OutboxEvent.select().count()
    assert prune() == before - 1
    assert [e.id for e in OutboxEvent.select()] == [lost.id]
