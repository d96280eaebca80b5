"""A batch the database refuses is applied again, not lost (the in-process broker never
redelivers), and SQLite transactions that read before they write survive a concurrent writer."""
import threading
import time

import pytest
from dramatiq.brokers.stub import StubBroker
from peewee import DataError, OperationalError

from controller.consumers import BatchConsumer
from controller.db import database
from controller.models import Zone
from shared.broker import publish
from tests.processes import wait_until


def test_a_refused_batch_is_applied_again_and_then_acknowledged():
    broker = StubBroker()
    broker.emit_after("process_boot")
    applied, refusals = [], [2]

    def apply(bodies):
        if refusals[0]:
            refusals[0] -= 1
            raise OperationalError("database is restarting")
        applied.extend(bodies)

    consumer = BatchConsumer(broker, "keyturn.results", parse=lambda body: body["n"], apply=apply,
                             batch_size=10, wait_ms=50)
    consumer.start()
    try:
        for number in range(25):
            publish(broker, "keyturn.results", "apply_result", {"n": number})
        wait_until(lambda: len(applied) == 25, 20, what="every result applied")
        broker.join("keyturn.results", timeout=5000)          # every message acknowledged
    finally:
        consumer.stop()
    assert sorted(applied) == list(range(25)) and refusals == [0]
    assert broker.dead_letters == []


def run_consumer(apply, bodies, *, batch_size=10, parse=lambda body: body["n"]):
    """Publish `bodies` to a consumer on the in-process broker; returns its dead letters once
    every message is settled."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    consumer = BatchConsumer(broker, "keyturn.results", parse=parse, apply=apply,
                             batch_size=batch_size, wait_ms=50)
    consumer.start()
    try:
        for body in bodies:
            publish(broker, "keyturn.results", "apply_result", body)
        broker.join("keyturn.results", timeout=20_000, fail_fast=False)
    finally:
        consumer.stop()
    return [message.args[0] for message in broker.dead_letters]


def test_a_message_the_database_refuses_is_dead_lettered_alone():
    applied = []

    def apply(bodies):
        if 7 in bodies:
            raise DataError("integer out of range")     # what PostgreSQL says of a bad value
        applied.extend(bodies)

    dead = run_consumer(apply, [{"n": n} for n in range(25)])
    assert dead == [{"n": 7}]
    assert sorted(applied) == [n for n in range(25) if n != 7]


def test_a_lone_poison_message_does_not_wait_for_company():
    """A batch of one that fails for a reason other than an outage is not retried forever."""
    dead = run_consumer(lambda bodies: (_ for _ in ()).throw(ValueError("year 10000 is out of range")),
                        [{"n": 1}])
    assert dead == [{"n": 1}]


def test_an_outage_that_looks_like_poison_is_found_by_its_neighbours():
    """Only one message fails, with an outage's error type: once another message of a batch
    applies, the database is up, so the failing one is dead-lettered."""
    applied = []

    def apply(bodies):
        if 3 in bodies:
            raise OperationalError("too many SQL variables")
        applied.extend(bodies)

    assert run_consumer(apply, [{"n": n} for n in range(6)]) == [{"n": 3}]
    assert sorted(applied) == [0, 1, 2, 4, 5]


def test_messages_apply_refuses_are_dead_lettered_and_the_rest_acknowledged():
    applied = []

    def apply(bodies):
        applied.extend(b for b in bodies if b % 2 == 0)
        return {index: "odd" for index, body in enumerate(bodies) if body % 2}

    dead = run_consumer(apply, [{"n": n} for n in range(10)])
    assert sorted(d["n"] for d in dead) == [1, 3, 5, 7, 9] and sorted(applied) == [0, 2, 4, 6, 8]


def test_unparsable_messages_are_dead_lettered_without_stalling_the_batch():
    from shared.messages import BadMessage

    def parse(body):
        if body.get("bad"):
            raise BadMessage("not a keyturn envelope")
        return body["n"]

    applied = []
    dead = run_consumer(applied.extend, [{"n": 1}, {"bad": True}, {"n": 2}], parse=parse)
    assert dead == [{"bad": True}] and sorted(applied) == [1, 2]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_transaction_that_reads_first_waits_for_a_concurrent_writer(ctl):
    Zone.create(name="a")
    read, written, errors = threading.Event(), threading.Event(), []

    def reader_then_writer():
        try:
            with database.atomic():
                Zone.select().count()                 # a read first ...
                read.set()
                written.wait(2)                       # ... while another thread writes
                Zone.update(trust_first_use=False).execute()
        except Exception as exc:                      # DEFERRED: "database is locked" at once
            errors.append(exc)

    def writer():
        read.wait(5)
        Zone.create(name="b")                         # waits for the transaction's lock
        written.set()

    threads = [threading.Thread(target=reader_then_writer), threading.Thread(target=writer)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == [] and time.monotonic() - started < 15
    assert Zone.select().count() == 2 and not Zone.get(Zone.name == "a").trust_first_use
