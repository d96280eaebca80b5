"""Webhooks to real HTTP receivers on loopback: each checks the Standard Webhooks signature
with the secret shown once; one that fails for a while gets the event after backoff; one that
never recovers ends dead; destinations that are not allowed are refused."""
import json
import time

import pytest

from controller.events import emit, execution_started
from controller.models import AuditEvent, Execution, WebhookDelivery
from controller.webhooks import Refused, add_subscription, deliver_due, destination, set_active
from tests.event_schemas import validate
from tests.webhook_receiver import Receiver


@pytest.fixture
def loopback_allowed(ctl):
    ctl.settings.webhook_allow_private = True
    ctl.settings.webhook_retry_seconds = 0.2
    ctl.settings.webhook_max_attempts = 4
    return ctl


@pytest.fixture
def receivers():
    made = []
    yield lambda **kwargs: made.append(Receiver(**kwargs)) or made[-1]
    for receiver in made:
        receiver.close()


def subscribe(ctl, receiver, name, types):
    _, receiver.secret = add_subscription(ctl, name, receiver.url, types, "test")


def deliver_until(ctl, done, timeout=20):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "deliveries did not settle"
        deliver_due(ctl)
        time.sleep(0.05)


def test_signed_deliveries_retries_and_dead_letters(loopback_allowed, receivers):
    ctl = loopback_allowed
    steady, flaky, broken = receivers(), receivers(fail_first=2), receivers(fail_first=99)
    subscribe(ctl, steady, "steady", ["io.keyturn.execution.*"])
    subscribe(ctl, flaky, "flaky", ["io.keyturn.execution.started"])
    subscribe(ctl, broken, "broken", ["*"])
    execution = Execution.create(plan_name="p", started_by="cli")
    execution_started(execution)
    emit([("io.keyturn.worker.lost", "w", {"worker": "w", "zone": "z", "host": "h",
                                           "last_seen": "2026-01-01T00:00:00Z"})])
    deliver_until(ctl, lambda: not WebhookDelivery.select().where(
        WebhookDelivery.status == "pending").exists())
    assert [e["type"] for e in steady.delivered()] == ["io.keyturn.execution.started"]
    assert flaky.delivered() == steady.delivered() and len(flaky.seen) == 3
    for event in steady.delivered():
        validate(event)
    ids = {headers["webhook-id"] for headers, _, _ in flaky.seen}
    assert ids == {steady.delivered()[0]["id"]}               # one id across the retries
    assert steady.bad_signatures == flaky.bad_signatures == broken.bad_signatures == 0
    by_name = {d.subscription.name: d for d in WebhookDelivery.select()
               if d.event.routing_key == "io.keyturn.execution.started"}
    assert (by_name["flaky"].status, by_name["flaky"].attempts) == ("delivered", 3)
    assert (by_name["broken"].status, by_name["broken"].attempts) == ("dead", 4)
    assert by_name["broken"].last_error == "the receiver answered HTTP 503"
    assert len(broken.seen) == 8                               # two events, four attempts each
    secret_shown = steady.secret
    assert all(secret_shown not in json.dumps(e) for e in steady.delivered())
    assert AuditEvent.select().where(AuditEvent.action == "webhook.add").count() == 3

    set_active("steady", False, "test")
    execution_started(Execution.create(plan_name="p", started_by="cli"))
    deliver_until(ctl, lambda: not WebhookDelivery.select().where(
        WebhookDelivery.status == "pending").exists())
    assert len(steady.delivered()) == 1                        # disabled: nothing more posted


def test_destinations_that_are_not_allowed_are_refused(ctl):
    for url, why in (("http://127.0.0.1:9/x", "loopback"), ("http://10.1.2.3/x", "private"),
                     ("http://169.254.169.254/latest", "metadata"), ("http://[::1]/x", "loopback"),
                     ("http://[::ffff:127.0.0.1]/x", "loopback"), ("ftp://example.org/", "http"),
                     ("http://user:pw@127.0.0.1/", "password"), ("http://0.0.0.0/", "unicast")):
        with pytest.raises(Refused, match=why):
            destination(url, allow_private=False)
    with pytest.raises(Refused, match="metadata"):
        destination("http://169.254.169.254/latest", allow_private=True)
    assert destination("http://127.0.0.1:9/x", allow_private=True)[2] == ["127.0.0.1"]
    with pytest.raises(Refused, match="loopback"):
        add_subscription(ctl, "local", "http://localhost:9/x", ["*"], "test")
    with pytest.raises(Refused, match="not an event type"):
        ctl.settings.webhook_allow_private = True
        add_subscription(ctl, "typo", "http://127.0.0.1:9/x", ["io.keyturn.record.succeded"], "t")


def test_two_senders_deliver_each_event_once(loopback_allowed, receivers):
    """Two daemons' senders share the deliveries by claims: each event is posted once."""
    import threading

    ctl = loopback_allowed
    receiver = receivers()
    subscribe(ctl, receiver, "once", ["*"])
    emit([("io.keyturn.worker.lost", f"w{i}", {"worker": f"w{i}", "zone": "z", "host": "h",
                                               "last_seen": "2026-01-01T00:00:00Z"})
          for i in range(200)])

    def sender():
        while WebhookDelivery.select().where(WebhookDelivery.status == "pending").exists():
            deliver_due(ctl)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = [headers["webhook-id"] for headers, _, _ in receiver.seen]
    assert len(ids) == len(set(ids)) == 200 and receiver.bad_signatures == 0


def test_a_delivery_connects_to_the_address_it_checked(loopback_allowed, receivers, monkeypatch):
    """DNS rebinding: the name resolves to the receiver when checked and elsewhere afterwards;
    the POST still goes to the checked address, never to a second lookup's."""
    import socket

    from controller import webhooks

    receiver = receivers()
    port = receiver.server.server_port
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host != "hooks.example":
            return real(host, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"   # nothing listens there
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", rebinding)
    receiver.secret = "whsec_" + "A" * 44
    now = int(time.time())
    headers = {"webhook-id": "1", "webhook-timestamp": str(now),
               "webhook-signature": webhooks.signature(receiver.secret, "1", now, b"{}")}
    status = webhooks.post(f"http://hooks.example:{port}/h", True, headers, b"{}")
    assert status == 204 and len(receiver.seen) == 1 and lookups == ["hooks.example"]
    assert receiver.seen[0][0]["Host"] == f"hooks.example:{port}"
