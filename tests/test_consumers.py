"""A batch the database refuses is applied again, not lost (the in-process broker never
redelivers), and SQLite transactions that read before they write survive a concurrent writer."""
import threading
import time

import pytest
from dramatiq.brokers.stub import StubBroker

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
            raise RuntimeError("database is restarting")
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
