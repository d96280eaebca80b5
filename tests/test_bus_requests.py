"""Signed requests from integrations: what is accepted acts through planning and is answered
with its execution; what is forged, replayed, expired, too long-lived, malformed, unknown,
disabled, over the rate limit or out of scope changes nothing, is audited, announced as an
event, answered with a reason and dead-lettered."""
import base64
import json
import time
import uuid

import pika
import pytest
from click.testing import CliRunner
from nacl.signing import SigningKey

from controller.amqp_queue import dead_letter_queue
from controller.bus_requests import handle
from controller.daemon import Daemon
from controller.integration_cli import integration
from controller.integrations import IntegrationError, add_integration, keygen, set_active
from controller.models import AuditEvent, Execution, OutboxEvent, Record, RequestSeen
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from shared.broker import BUS_EXCHANGE, REQUESTS_QUEUE, RESULTS_QUEUE
from tests.inventory_helpers import build_fleet
from tests.processes import wait_until


def signed(private: str, request: dict, integration: str = "hr") -> bytes:
    payload = json.dumps(request)
    signature = SigningKey(base64.b64decode(private)).sign(payload.encode()).signature
    return json.dumps({"integration": integration, "payload": payload,
                       "signature": base64.b64encode(signature).decode()}).encode()


def request(action="rotate", validity=60, issued=None, **fields) -> dict:
    now = int(time.time()) if issued is None else issued
    return {"v": 1, "integration": "hr", "id": str(uuid.uuid4()), "time": now,
            "expires": now + validity, "action": action, **fields}


ALICE = {"accounts": [{"asset": "web-1", "username": "alice"}]}


@pytest.fixture
def fleet(ctl):
    build_fleet(ctl, assets=("web-1",), users=("alice", "bob"), node="/prod/web")
    build_fleet(ctl, zone="lab", assets=("lab-1",), users=("alice",), node="/lab")
    private, public = keygen()
    add_integration("hr", public, ["rotate:node:/prod", "verify:asset:web-1", "run_plan:plan:p",
                                   "status"], 5, "test")
    return private


def refusals() -> list[str]:
    return [a.detail for a in AuditEvent.select().where(AuditEvent.action == "request.refused")
            .order_by(AuditEvent.id)]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_requests_over_rabbitmq_are_answered_and_refusals_dead_lettered(bus_ctl, fleet, rabbitmq_url,
                                                                         tmp_path):
    ctl = bus_ctl
    daemon = Daemon(ctl)
    daemon.start()
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    reply_to = channel.queue_declare("", exclusive=True).method.queue
    try:
        def send(body: bytes) -> dict:
            correlation_id = str(uuid.uuid4())
            channel.basic_publish(BUS_EXCHANGE, REQUESTS_QUEUE, body, pika.BasicProperties(
                reply_to=reply_to, correlation_id=correlation_id))

            def answered():
                method, properties, answer = channel.basic_get(reply_to, auto_ack=True)
                if method is not None:
                    assert properties.correlation_id == correlation_id
                    return json.loads(answer)
            return wait_until(answered, 30, what="the reply")

        wait_until(lambda: consumed(connection, REQUESTS_QUEUE), 30, what="the requests consumer")
        good = signed(fleet, request(**ALICE))
        accepted = send(good)
        assert accepted["outcome"] == "accepted"
        execution = Execution.get_by_id(accepted["execution"])
        assert (execution.trigger, execution.started_by, execution.total) == ("api", "integration:hr", 1)
        wait_until(lambda: Record.get().status == "dispatched", 30, what="the dispatcher")
        key_file = tmp_path / "hr.key"
        key_file.write_text(fleet)
        sent = CliRunner().invoke(integration, ["send", "hr", "status", "--key-file", str(key_file),
                                                "--execution", str(execution.id)],
                                  env={"KEYTURN_BROKER_URL": rabbitmq_url})
        assert sent.exit_code == 0, sent.output
        assert json.loads(sent.output)["state"]["total"] == 1

        other_key, _ = keygen()
        cases = {
            "replayed": good,
            "bad signature": signed(other_key, request(**ALICE)),
            "expired": signed(fleet, request(issued=int(time.time()) - 120, **ALICE)),
            "longer than": signed(fleet, request(validity=86400, **ALICE)),
            "not in this integration's scope": signed(fleet, request(
                accounts=[{"asset": "lab-1", "username": "alice"}])),
            "malformed": b'{"integration": "hr", "payload": 3',
            "Invalid JSON": b'{"integration": "hr", "payload": "\\ud800", "signature": "AA=="}',   # a lone surrogate
        }
        for reason, body in cases.items():
            answer = send(body)
            assert answer["outcome"] == "refused" and reason in answer["reason"], (reason, answer)
        # a reply is never sent into keyturn's own queues, where it would pose as a message
        channel.basic_publish(BUS_EXCHANGE, REQUESTS_QUEUE, b"{}", pika.BasicProperties(
            reply_to=RESULTS_QUEUE, correlation_id="aimed at the results queue"))
        wait_until(lambda: channel.queue_declare(dead_letter_queue(REQUESTS_QUEUE), passive=True)
                   .method.message_count == len(cases) + 1, 30, what="the dead letters")
        assert channel.queue_declare(dead_letter_queue(RESULTS_QUEUE), passive=True
                                     ).method.message_count == 0
        ctl.broker.declare_queue(REQUESTS_QUEUE, ensure=True)   # dramatiq's arguments agree
    finally:
        connection.close()
        daemon.stop()
    assert Execution.select().count() == 1 and Record.select().count() == 1
    assert len(refusals()) == len(cases) + 1
    assert OutboxEvent.select().where(
        OutboxEvent.routing_key == "io.keyturn.request.refused").count() == len(cases) + 1
    accepted_audit = AuditEvent.get(AuditEvent.action == "request.accepted")
    assert accepted_audit.actor == "integration:hr" and str(execution.id) in accepted_audit.detail


def consumed(connection, name) -> bool:
    """Whether the daemon consumes the queue (so it is bound to the bus exchange too). Asked on
    a channel of its own: RabbitMQ closes the channel that asks for a missing queue."""
    try:
        probe = connection.channel()
        consumers = probe.queue_declare(name, passive=True).method.consumer_count
        probe.close()
        return consumers > 0
    except pika.exceptions.ChannelClosedByBroker:
        return False


def test_scopes_rules_and_limits(ctl, fleet):
    """Straight to the handler (no bus): every action, each limit."""
    plan = save_plan(parse_spec({"name": "p", "usernames": ["bob"], "nodes": ["/prod"]}), ctl.vault)
    save_plan(parse_spec({"name": "q", "usernames": ["bob"], "nodes": ["/prod"]}), ctl.vault)

    def reason(body: dict, **kwargs) -> str:
        answer = handle(ctl, signed(fleet, body, **kwargs))
        assert answer["outcome"] == "refused", answer
        return answer["reason"]

    rotate = handle(ctl, signed(fleet, request(node="/prod", usernames=["alice", "root"])))
    first = Execution.get_by_id(rotate["execution"])
    assert (first.total, first.skipped) == (1, 1)          # secure mode still protects root
    assert handle(ctl, signed(fleet, request("run_plan", plan="p")))["outcome"] == "accepted"
    status = handle(ctl, signed(fleet, request("status", execution=first.id)))
    assert status["state"]["total"] == 1 and status["state"]["status"] == "running"
    assert reason(request(node="/lab", usernames=["alice"])) == \
        "1 of the accounts are not in this integration's scope"
    assert reason(request("run_plan", plan="q")) == "plan q is not in this integration's scope"
    assert reason(request("status", execution=first.id)).startswith("rate limit: at most 5")
    RequestSeen.delete().execute()                          # a new minute
    verify = handle(ctl, signed(fleet, request("verify", accounts=[
        {"asset": "web-1", "username": "bob"}])))
    assert Execution.get_by_id(verify["execution"]).trigger == "verify"
    theirs = start_execution(ctl, plan, started_by="cli:someone")
    assert reason(request("status", execution=theirs.id)) == \
        f"execution {theirs.id} is not in this integration's scope"
    assert "do not exist" in reason(request(accounts=[{"asset": "web-1", "username": "nobody"}]))
    assert "run_plan takes plan" in reason(request("run_plan", execution=1))
    set_active("hr", False, "test")
    assert reason(request("status", execution=first.id)) == "the integration is disabled"
    assert reason(request(**ALICE), integration="ghost") == "unknown integration"
    assert Execution.select().count() == 4
    assert len(refusals()) == 8


def test_a_redelivered_request_gets_its_answer_again_and_acts_once(ctl, fleet):
    """RabbitMQ redelivers a request whose acknowledgement was lost: the same answer, no
    second execution. The same copy sent again by anyone else is a replay."""
    body = signed(fleet, request(**ALICE))
    first = handle(ctl, body)
    assert handle(ctl, body, redelivered=True) == first
    assert handle(ctl, body)["reason"] == "replayed: this request id was seen before"
    assert Execution.select().count() == 1 and len(refusals()) == 1


def test_grants_and_keys_are_checked_when_added(ctl):
    _, public = keygen()
    for grants, key, problem in ((["rotate"], public, "needs a scope"),
                                 (["delete:*"], public, "the action is one of"),
                                 (["run_plan:node:/x"], public, "takes a scope"),
                                 (["status"], "bm90IGEga2V5", "32 bytes")):
        with pytest.raises(IntegrationError, match=problem):
            add_integration("x", key, grants, 60, "test")


def test_a_flood_of_forged_messages_is_audited_in_one_line_past_the_budget(ctl, fleet, monkeypatch):
    from controller import bus_requests

    monkeypatch.setattr(bus_requests, "UNVOUCHED", bus_requests.Budget(3))
    forger, _ = keygen()
    answers = [handle(ctl, signed(forger, request(**ALICE))) for _ in range(10)]
    assert {a["reason"] for a in answers} == {"bad signature"}
    assert len(refusals()) == 3 and OutboxEvent.select().count() == 3
    valid = handle(ctl, signed(fleet, request(validity=86400, **ALICE)))   # vouched: recorded
    assert "longer than" in valid["reason"] and len(refusals()) == 4
    bus_requests.UNVOUCHED._window_end = 0              # the minute ends
    handle(ctl, signed(forger, request(**ALICE)))
    assert "7 more messages no key vouches for" in refusals()[-2]
    assert Execution.select().count() == 0
