"""Two `keyturn daemon` processes against one PostgreSQL and one RabbitMQ virtual host during a
200-account run on 20 sshd hosts, one of them killed with SIGKILL mid-run (holding results it
had not acknowledged, rows it had claimed): every execution's counters equal its records'
statuses, every account's stored secret logs in, and no event id reaches `keyturn.events`
twice (a queue of the test's own, bound to the exchange before the run, counts them)."""
from __future__ import annotations

import json
from collections import Counter

import pika
import pytest

from controller.models import Execution, OutboxEvent, Record, utcnow
from shared.broker import EVENTS_EXCHANGE
from tests.fleets import linux_fleet
from tests.processes import wait_until
from tests.test_faults import (assert_settled, current_execution, ended,  # noqa: F401
                               fault_bus, group, settle, start_run)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

HOSTS, USERS = 20, 10
EVENTS_QUEUE = "test.events"


@pytest.fixture
def farm(ctl, ssh_farm):
    with linux_fleet(ctl, ssh_farm, "pair", HOSTS, USERS) as hosts:
        yield hosts


def listen_for_events(url: str) -> None:
    """A queue of the test's own on `keyturn.events`, holding every event published from now."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        channel.queue_declare(EVENTS_QUEUE, durable=True)
        channel.queue_bind(EVENTS_QUEUE, EVENTS_EXCHANGE, routing_key="#")
    finally:
        connection.close()


def published_event_ids(url: str) -> Counter:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel, seen = connection.channel(), Counter()
        while True:
            method, _, body = channel.basic_get(EVENTS_QUEUE, auto_ack=True)
            if method is None:
                return seen
            seen[json.loads(body)["id"]] += 1
    finally:
        connection.close()


def assert_counts_match_records() -> None:
    for execution in Execution.select():
        statuses = Counter(status for (status,) in Record.select(Record.status).where(
            Record.execution == execution.id).tuples())
        counted = {"success": execution.succeeded, "failed": execution.failed,
                   "unverified": execution.unverified}
        assert counted == {s: statuses[s] for s in counted}, (execution.id, counted, statuses)
        assert execution.total == sum(statuses.values()), execution.id
        assert execution.status != "running", execution.id


def test_two_daemons_one_killed_mid_run(ctl, farm, group, fault_bus):
    listen_for_events(fault_bus)
    first = group.start("daemon-1", "daemon")
    group.start("daemon-2", "daemon")
    group.start("worker", "worker", "--zone", "pair")
    start_run(group)
    execution = current_execution()
    wait_until(lambda: ended(execution.id) >= 60, 120, what="60 records to end")
    first.kill()
    recovery = settle(group, execution.id)
    print(f"\ntwo daemons, one killed: settled {recovery:.1f} s after the SIGKILL")
    assert_settled(ctl, farm, group, execution.id, killed=(first,))
    assert_counts_match_records()
    assert Record.select().where(Record.execution == execution.id).count() == HOSTS * USERS

    wait_until(lambda: not OutboxEvent.select().where(
        OutboxEvent.relayed_at.is_null() & (OutboxEvent.claimed_until.is_null()
                                            | (OutboxEvent.claimed_until < utcnow()))).exists(),
               30, what="the live daemon to relay every unclaimed event")
    now = utcnow()
    relayed = {str(e.id) for e in OutboxEvent.select().where(OutboxEvent.relayed_at.is_null(False))}
    # Rows the killed daemon had claimed and not published wait for its lease to pass (never
    # lost): they are the only ones not relayed.
    stranded = list(OutboxEvent.select().where(OutboxEvent.relayed_at.is_null()))
    assert all(row.claimed_until is not None and row.claimed_until > now for row in stranded)
    seen = published_event_ids(fault_bus)
    assert seen, "no event reached keyturn.events"
    twice = {event_id: n for event_id, n in seen.items() if n > 1}
    assert not twice, f"events published more than once: {twice}"
    assert relayed <= set(seen), "an event marked relayed never reached the exchange"
    print(f"events: {len(seen)} published once each; {len(stranded)} still leased by the "
          f"killed daemon")
