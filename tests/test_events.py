"""Events reach other systems on the `keyturn.events` topic exchange of the real RabbitMQ,
in order, once, and without secrets."""
import json
import time

import pika
import pytest

from controller.events import EXCHANGE, relay_events
from controller.models import OutboxEvent, Record
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from shared.messages import RotateResult
from tests.inventory_helpers import build_fleet

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def test_record_and_execution_events_are_relayed_without_secrets(bus_ctl, rabbitmq_url):
    ctl = bus_ctl
    build_fleet(ctl, users=("alice", "bob"))
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EXCHANGE, routing_key="#")
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
    assert relay_events(ctl) == 3 and OutboxEvent.select().count() == 0
    assert relay_events(ctl) == 0
    received = []
    for _ in range(3):
        method, _, body = channel.basic_get(queue, auto_ack=True)
        received.append((method.routing_key, json.loads(body)))
    connection.close()
    assert [key for key, _ in received] == ["record.success", "record.failed", "execution.finished"]
    assert received[1][1]["error"] == "user bob does not exist"
    assert received[2][1]["succeeded"] == 1 and received[2][1]["failed"] == 1
    secrets = [ctl.vault.decrypt(r.new_secret) for r in Record.select()] + ["rootpw"]
    text = json.dumps(received)
    assert not any(secret in text for secret in secrets)
