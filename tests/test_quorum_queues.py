"""Queues as the controller declares them on a RabbitMQ virtual host of the test's own: quorum
queues (replicated in a cluster) with a delivery limit, so a message that kills every worker
taking it is dead-lettered after DELIVERY_LIMIT deliveries instead of looping; classic queues
when configured; and a broker URL setting naming several nodes, of which the first may be down."""
from __future__ import annotations

import json
import subprocess
import sys

import pika
import pytest

from controller.amqp_queue import RawQueues
from shared.broker import (HEARTBEATS_QUEUE, REQUESTS_QUEUE, RESULTS_QUEUE, make_broker, publish,
                           rotate_queue)
from shared.bus import DELIVERY_LIMIT, BrokerSetupError, broker_parameters, check_bus
from shared.settings import SettingsError, load_settings
from tests.processes import free_port

ZONE_QUEUE = rotate_queue("dmz")
CONSUMED = (ZONE_QUEUE, RESULTS_QUEUE, HEARTBEATS_QUEUE, REQUESTS_QUEUE)


def queues_of(vhost: str) -> dict[str, dict]:
    """Every queue of the virtual host: name -> {type, arguments}, as RabbitMQ reports them."""
    listed = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "type",
                             "arguments", "--formatter", "json"],
                            check=True, capture_output=True, text=True, timeout=60).stdout
    return {q["name"]: {"type": q["type"], "arguments": {k: v for k, _, v in q["arguments"]}}
            for q in json.loads(listed)}


def vhost_of(url: str) -> str:
    return pika.URLParameters(url).virtual_host


def declare_all(url: str, quorum: bool) -> None:
    """What the controller's daemon declares: zone, results and heartbeat queues through
    dramatiq, the requests queue through RawQueues."""
    broker = make_broker(url, quorum=quorum)
    try:
        for queue in (ZONE_QUEUE, RESULTS_QUEUE, HEARTBEATS_QUEUE):
            broker.declare_queue(queue, ensure=True)
        RawQueues(broker.parameters, quorum=quorum).consume(REQUESTS_QUEUE, 1, 100).close()
    finally:
        broker.close()


def test_every_consumed_queue_is_a_quorum_queue_with_a_delivery_limit(rabbitmq_url):
    declare_all(rabbitmq_url, quorum=True)
    queues = queues_of(vhost_of(rabbitmq_url))
    for name in CONSUMED:
        for queue in (name, f"{name}.XQ"):
            assert queues[queue]["type"] == "quorum", queue
        arguments = queues[name]["arguments"]
        assert arguments["x-delivery-limit"] == DELIVERY_LIMIT
        assert arguments["x-dead-letter-routing-key"] == f"{name}.XQ"
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert queues[f"{name}.XQ"]["arguments"]["x-message-ttl"] == 7 * 86400 * 1000
    assert queues[f"{ZONE_QUEUE}.DQ"]["type"] == "quorum"      # dramatiq's retries wait there


def test_classic_queues_when_configured(rabbitmq_url):
    declare_all(rabbitmq_url, quorum=False)
    queues = queues_of(vhost_of(rabbitmq_url))
    assert {queues[name]["type"] for name in CONSUMED} == {"classic"}
    assert "x-delivery-limit" not in queues[ZONE_QUEUE]["arguments"]
    assert queues[f"{ZONE_QUEUE}.XQ"]["type"] == "classic"


def test_a_queue_of_the_other_type_stops_start_up_with_one_line(rabbitmq_url):
    """A deployment that ran with classic queues, started with the quorum default."""
    declare_all(rabbitmq_url, quorum=False)
    broker = make_broker(rabbitmq_url)
    try:
        with pytest.raises(BrokerSetupError, match="keyturn.results.*the queue exists with other "
                                                   "arguments .*KEYTURN_BROKER_QUEUE_TYPE"):
            check_bus(broker, [RESULTS_QUEUE])
    finally:
        broker.close()


TAKE_AND_DIE = """
import os, signal, sys, pika
channel = pika.BlockingConnection(pika.URLParameters(sys.argv[1])).channel()
method, _, body = channel.basic_get(sys.argv[2])
print("none" if method is None else body.decode(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)      # dies holding the message, unacknowledged
"""


def test_a_message_that_kills_every_worker_is_dead_lettered(rabbitmq_url):
    broker = make_broker(rabbitmq_url)
    publish(broker, ZONE_QUEUE, "rotate", {"poison": True})
    broker.close()
    deliveries = 0
    for _ in range(DELIVERY_LIMIT + 3):
        taken = subprocess.run([sys.executable, "-c", TAKE_AND_DIE, rabbitmq_url, ZONE_QUEUE],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        if taken == "none":
            break
        assert '"poison":true' in taken
        deliveries += 1
    assert deliveries == DELIVERY_LIMIT + 1      # the first delivery and DELIVERY_LIMIT more
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        method, _, body = channel.basic_get(f"{ZONE_QUEUE}.XQ", auto_ack=True)
        assert method is not None and b'"poison":true' in body
        assert channel.queue_declare(ZONE_QUEUE, passive=True).method.message_count == 0
    finally:
        connection.close()


def test_several_broker_urls_first_one_down(rabbitmq_url):
    """The controller reaches RabbitMQ through the second node named when the first is down."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/{vhost_of(rabbitmq_url)}"
    settings = load_settings(broker_url=f" {dead} ; {rabbitmq_url}")
    assert settings.broker_url == f"{dead};{rabbitmq_url}"
    assert [p.port for p in broker_parameters(settings.broker_url)] == [
        pika.URLParameters(dead).port, 5672]
    broker = make_broker(settings.broker_url)
    try:
        check_bus(broker, [RESULTS_QUEUE])
        publish(broker, RESULTS_QUEUE, "apply_result", {"x": 1})
    finally:
        broker.close()
    assert queues_of(vhost_of(rabbitmq_url))[RESULTS_QUEUE]["type"] == "quorum"


@pytest.mark.parametrize("url, complaint", [
    ("amqp://a:b@127.0.0.1:1/v;http://x", "must start with amqp:// or amqps://"),
    ("amqp://a:b@127.0.0.1:1/v;amqps://a:b@127.0.0.2:1/v", "mixes amqp:// and amqps://"),
    ("amqp://a:b@127.0.0.1:1/v;", "must start with amqp:// or amqps://"),
])
def test_bad_broker_urls_are_refused_by_name(url, complaint):
    with pytest.raises(SettingsError, match=f"KEYTURN_BROKER_URL: .*{complaint}"):
        load_settings(broker_url=url)


def test_unknown_queue_type_is_refused_by_name():
    with pytest.raises(SettingsError, match="KEYTURN_BROKER_QUEUE_TYPE"):
        load_settings(broker_queue_type="stream")
