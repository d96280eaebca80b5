"""The daemon over the in-process broker: batched results, heartbeats, poison messages, and the
dispatcher that publishes what the console planned. (RabbitMQ: see the end-to-end tests.)"""
import time

import pytest

from controller.daemon import Daemon
from controller.models import Account, Execution, Record, WorkerSeen
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from shared import zonecrypto
from shared.broker import (HEARTBEAT_ACTOR, HEARTBEATS_QUEUE, RESULT_ACTOR, RESULTS_QUEUE, publish,
                           rotate_queue)
from shared.messages import Heartbeat, RotateResult, seal
from tests.inventory_helpers import build_fleet
from tests.processes import wait_until


@pytest.fixture
def daemon(ctl):
    build_fleet(ctl, assets=("web-1",), users=("alice", "bob"))
    running = Daemon(ctl)
    running.start()
    yield running
    running.stop()


def worker_channel(ctl):
    return zonecrypto.Channel(zonecrypto.read_private_key(ctl.settings.zone_key_path("dmz")),
                              ctl.private_key.public_key)


def test_dispatcher_publishes_planned_records_and_results_end_them(ctl, daemon):
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice", "bob"], "nodes": ["/prod"]}),
                     ctl.vault)
    execution = start_execution(ctl, plan, trigger="api")      # the console's path: plan only
    # Records are claimed as `dispatched` before they are published: wait for the messages.
    def queued():
        return len(getattr(ctl.broker.queues.get(rotate_queue("dmz")), "queue", ()))
    wait_until(lambda: queued() == 2, 30, what="the dispatcher")
    assert Record.select().where(Record.status == "dispatched").count() == 2
    channel = worker_channel(ctl)
    now = time.time()
    for record in Record.select():
        result = RotateResult(record_id=record.id, attempt=1, zone="dmz", worker_id="w",
                              status="success", started_at=now, finished_at=now)
        publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", result, channel))
    publish(ctl.broker, HEARTBEATS_QUEUE, HEARTBEAT_ACTOR, seal("heartbeat", Heartbeat(
        worker_id="host:1", zone="dmz", host="host", version="0.1.0", in_flight=0, sent_at=now),
        channel))
    wait_until(lambda: Execution.get_by_id(execution.id).status == "success", 30, what="results")
    assert Account.select().where(Account.busy_execution.is_null(False)).count() == 0
    wait_until(lambda: WorkerSeen.select().count() == 1, 30, what="the heartbeat")


def test_poison_results_are_dead_lettered_and_the_daemon_keeps_going(ctl, daemon):
    forged = zonecrypto.Channel(zonecrypto.generate_private_key(), ctl.private_key.public_key)
    now = time.time()
    fake = RotateResult(record_id=1, attempt=1, zone="dmz", worker_id="evil", status="success",
                        started_at=now, finished_at=now)
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, {"garbage": True})
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", fake, forged))
    misrouted = dict(seal("result", fake, worker_channel(ctl)), zone="nowhere")
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, misrouted)
    wait_until(lambda: len(ctl.broker.dead_letters) == 3, 30, what="dead letters")
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice"], "nodes": ["/prod"]}), ctl.vault)
    record = start_execution(ctl, plan).records.get()
    good = RotateResult(record_id=record.id, attempt=1, zone="dmz", worker_id="w", status="failed",
                        error="down", started_at=now, finished_at=now)
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", good, worker_channel(ctl)))
    wait_until(lambda: Record.get_by_id(record.id).status == "failed", 30, what="a good result")
