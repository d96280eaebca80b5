"""Publishing to the real RabbitMQ with streaming confirms: every message arrives once, and when
RabbitMQ refuses some, exactly the records it did not confirm go back to pending."""
import json
import subprocess
from urllib.parse import urlparse

import pika
import pytest

from controller.dispatch import dispatch_pending
from controller.inventory import initialise
from controller.models import Record
from controller.planning import run_plan
from controller.plans import parse_spec, save_plan
from controller.runtime import start_controller
from shared.broker import make_broker, rotate_queue
from shared.errors import KeyturnError
from shared.publisher import Publisher
from tests.inventory_helpers import build_fleet

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def drain(url: str, queue: str) -> list[dict]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    messages = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        messages.append(json.loads(body))
    connection.close()
    return messages


def test_publisher_confirms_every_message_in_order(rabbitmq_url, database_url):
    broker = make_broker(rabbitmq_url)
    with Publisher(broker) as publisher:
        for number in range(3000):          # several pumps and more than one confirm window
            publisher.publish("rotate.dmz", "rotate", {"n": number})
        publisher.wait_confirmed()
        assert publisher.published == publisher.confirmed == 3000
    messages = drain(rabbitmq_url, "rotate.dmz")
    assert [m["args"][0]["n"] for m in messages] == list(range(3000))
    assert {(m["actor_name"], m["queue_name"]) for m in messages} == {("rotate", "rotate.dmz")}
    assert len({m["message_id"] for m in messages}) == 3000


def test_an_unreachable_broker_leaves_every_record_pending(settings):
    settings.broker_url = "amqp://guest:guest@127.0.0.1:1/%2F"      # nothing listens there
    initialise(settings)
    ctl = start_controller(settings)
    build_fleet(ctl, users=("u1", "u2"))
    plan = save_plan(parse_spec({"name": "p", "usernames": ["u1", "u2"], "nodes": ["/prod"]}),
                     ctl.vault)
    with pytest.raises(KeyturnError, match="cannot publish: connection to RabbitMQ lost.*"
                                           "2 records wait as pending"):
        run_plan(ctl, plan)
    assert {r.status for r in Record.select()} == {"pending"}


def test_refused_messages_send_exactly_their_records_back_to_pending(settings, rabbitmq_url,
                                                                    request):
    # A classic queue refuses exactly what is beyond its max-length; a quorum queue notices
    # its limit only after a few more messages.
    settings.broker_queue_type = "classic"
    ctl = request.getfixturevalue("bus_ctl")
    build_fleet(ctl, assets=("web-1", "web-2"), users=("u1", "u2", "u3", "u4"))
    plan = save_plan(parse_spec({"name": "p", "usernames": ["u1", "u2", "u3", "u4"],
                                 "nodes": ["/prod"]}), ctl.vault)
    vhost = urlparse(rabbitmq_url).path.lstrip("/")
    # RabbitMQ itself refuses (nacks) publishes beyond three messages in the zone's queue.
    subprocess.run(["rabbitmqctl", "set_policy", "-p", vhost, "--apply-to", "queues", "cap",
                    r"^rotate\.", '{"max-length": 3, "overflow": "reject-publish"}'],
                   check=True, capture_output=True, timeout=60)
    with pytest.raises(KeyturnError, match="publishing stopped .*nack.*5 records wait as pending"):
        run_plan(ctl, plan)
    queued = {m["args"][0]["record_id"] for m in drain(rabbitmq_url, rotate_queue("dmz"))}
    dispatched = {r.id for r in Record.select().where(Record.status == "dispatched")}
    assert len(queued) == 3 and dispatched == queued
    assert Record.select().where(Record.status == "pending").count() == 5

    subprocess.run(["rabbitmqctl", "clear_policy", "-p", vhost, "cap"],
                   check=True, capture_output=True, timeout=60)
    assert dispatch_pending(ctl) == 5           # the daemon's dispatcher sends the rest, once
    resent = {m["args"][0]["record_id"] for m in drain(rabbitmq_url, rotate_queue("dmz"))}
    assert resent | queued == {r.id for r in Record.select()} and not resent & queued
    assert {r.status for r in Record.select()} == {"dispatched"}
