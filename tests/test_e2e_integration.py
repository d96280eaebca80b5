"""The issue's "done when", all real: an integration registered with the CLI sends a signed
request from a client that does not import keyturn (raw pika and PyNaCl, `tests/bus_client.py`);
`keyturn daemon` and a worker per zone rotate the accounts on sshd hosts; the reply queue gets
the acceptance; a consumer bound to `keyturn.events` and a webhook receiver get the run's
CloudEvents, each valid against its schema, each id once and without a secret. Forged,
replayed, expired and out-of-scope requests change nothing and are audited."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pytest

from controller.models import AuditEvent, Execution, Record
from tests.e2e import USERS, ZONES, current_secret
from tests.event_schemas import validate
from tests.processes import ProcessGroup, keyturn_env, wait_until
from tests.test_no_leaks import every_secret
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
CLIENT = Path(__file__).with_name("bus_client.py")


def client(url: str, private_key: str, request: dict) -> dict:
    """Run the foreign client as its own process, with no keyturn on its path."""
    job = {"url": url, "integration": "tickets", "private_key": private_key, "request": request}
    done = subprocess.run([sys.executable, "-I", str(CLIENT)], input=json.dumps(job), text=True,
                          capture_output=True, timeout=90, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rotate_request(validity=60, issued=None, node="/dc/east") -> dict:
    now = int(time.time()) if issued is None else issued
    return {"v": 1, "integration": "tickets", "id": f"TICKET-{uuid.uuid4()}", "time": now,
            "expires": now + validity, "action": "rotate", "node": node,
            "usernames": ["alice", "bob"]}


def test_a_signed_request_rotates_and_its_events_arrive_once(ctl, zone_fleet, rabbitmq_url,
                                                              tmp_path):
    env = keyturn_env(ctl.settings, rabbitmq_url) | {"KEYTURN_WEBHOOK_ALLOW_PRIVATE": "true",
                                                     "KEYTURN_WEBHOOK_RETRY_SECONDS": "1"}
    group = ProcessGroup(env, tmp_path)
    receiver = Receiver(fail_first=1)            # down at first: the event waits and comes
    events = bind_events(rabbitmq_url)
    try:
        key_file = tmp_path / "tickets.key"
        public = group.run("integration", "keygen", "--key-file", str(key_file))
        assert public.returncode == 0, public.stderr
        added = group.run("integration", "add", "tickets", "--public-key", public.stdout.strip(),
                          "--allow", "rotate:node:/dc/east", "--allow", "status")
        assert added.returncode == 0, added.stderr
        hooked = group.run("webhook", "add", "siem", "--url", receiver.url, "--event", "io.keyturn.*")
        assert hooked.returncode == 0, hooked.stderr
        receiver.secret = hooked.stdout.split("shown once): ")[1].strip()
        group.start("daemon", "daemon")
        for zone in ZONES:
            group.start(f"worker-{zone}", "worker", "--zone", zone)
        private = key_file.read_text().strip()
        wait_until(lambda: consumed(rabbitmq_url, "keyturn.requests"), 60,
                   what="the daemon's requests consumer")

        first = client(rabbitmq_url, private, rotate_request())
        reply = first["reply"]
        assert reply["outcome"] == "accepted", reply
        execution_id = reply["execution"]
        wait_until(lambda: Execution.get_by_id(execution_id).status != "running", 180,
                   what="the execution")
        execution = Execution.get_by_id(execution_id)
        assert (execution.status, execution.succeeded, execution.total) == ("success", 4, 4)
        for asset in ("east-0", "east-1"):
            for user in ("alice", "bob"):
                new = current_secret(ctl, asset, user)
                assert new != USERS[user] and zone_fleet[asset].password_works(user, new)
                assert not zone_fleet[asset].password_works(user, USERS[user])
        for asset in ("west-2", "west-3"):
            assert current_secret(ctl, asset, "alice") == USERS["alice"]

        other_private = subprocess.run(
            [sys.executable, "-c", "import base64, nacl.signing as s; "
             "print(base64.b64encode(bytes(s.SigningKey.generate())).decode())"],
            capture_output=True, text=True, check=True).stdout.strip()
        refused = {
            "bad signature": client(rabbitmq_url, other_private, rotate_request())["reply"],
            "replayed": replay(rabbitmq_url, first["sent"]),
            "expired": client(rabbitmq_url, private,
                              rotate_request(issued=int(time.time()) - 600))["reply"],
            "not in this integration's scope": client(rabbitmq_url, private,
                                                      rotate_request(node="/dc/west"))["reply"],
        }
        for reason, answer in refused.items():
            assert answer["outcome"] == "refused" and reason in answer["reason"], (reason, answer)
        status = client(rabbitmq_url, private, {
            **rotate_request(), "action": "status", "execution": execution_id, "node": None,
            "usernames": None})
        assert status["reply"]["state"]["succeeded"] == 4

        run_types = {"io.keyturn.execution.started", "io.keyturn.execution.finished",
                     "io.keyturn.record.succeeded", "io.keyturn.request.refused"}

        def everything_arrived():
            events[2].extend(drain(events[0], events[1]))
            return (count(events[2], "io.keyturn.request.refused") >= len(refused)
                    and count(receiver.delivered(), "io.keyturn.request.refused") >= len(refused)
                    and count(receiver.delivered(), "io.keyturn.execution.finished") >= 1)

        wait_until(everything_arrived, 60, what="the events on the bus and at the webhook")
    finally:
        group.close()
        receiver.close()
        events[3].close()
    bus, hooks = events[2], receiver.delivered()
    for received in (bus, hooks):
        ids = [event["id"] for event in received]
        assert len(ids) == len(set(ids)), "an event id arrived twice"
        assert {event["type"] for event in received} == run_types
        assert count(received, "io.keyturn.record.succeeded") == 4
        for event in received:
            validate(event)
    assert sorted(e["id"] for e in bus) == sorted(e["id"] for e in hooks)
    assert receiver.bad_signatures == 0 and len(receiver.seen) > len(hooks)   # one was retried
    assert Execution.select().count() == 1 and Record.select().count() == 4
    audited = [a.detail for a in AuditEvent.select().where(AuditEvent.action == "request.refused")]
    assert len(audited) == len(refused)
    assert AuditEvent.select().where(AuditEvent.action == "request.accepted").count() == 2
    secrets = every_secret(ctl) | {receiver.secret, private}
    text = json.dumps(bus) + json.dumps(hooks) + "".join(p.log_text() for p in group.processes)
    assert not [s for s in secrets if s in text]
    for process in group.processes:
        assert "Traceback" not in process.log_text(), process.name


def replay(url: str, body: str) -> dict:
    """An attacker on the bus sends a copy of an accepted request again."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    reply_to = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", "keyturn.requests", body.encode(),
                          pika.BasicProperties(reply_to=reply_to, correlation_id="replay"))

    def answered():
        method, properties, answer = channel.basic_get(reply_to, auto_ack=True)
        return json.loads(answer) if method is not None else None

    try:
        return wait_until(answered, 30, what="the replay's answer")
    finally:
        connection.close()


def consumed(url: str, name: str) -> bool:
    """Whether the daemon consumes the queue (it is bound to the bus exchange by then)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(name, passive=True).method.consumer_count > 0
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        connection.close()


def bind_events(url: str):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare("keyturn.events", exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "keyturn.events", routing_key="io.keyturn.#")
    return channel, queue, [], connection


def drain(channel, queue) -> list[dict]:
    got = []
    while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
        assert message[1].content_type.startswith("application/cloudevents+json")
        event = json.loads(message[2])
        assert message[0].routing_key == event["type"]
        got.append(event)
    return got


def count(events: list[dict], kind: str) -> int:
    return sum(event["type"] == kind for event in events)
