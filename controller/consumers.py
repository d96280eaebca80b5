"""Consuming the controller's queues in batches: one database transaction per batch of results
instead of one per message, acknowledged only after it committed (so a crash loses nothing:
unacknowledged messages come back, and applying a result twice changes nothing).

One bad message never stalls the others: a message that does not parse, that `apply` refuses,
or that makes the database refuse its batch is dead-lettered alone, with its reason logged,
and the rest of its batch is applied."""
from __future__ import annotations

import logging
import threading
from typing import Callable

import dramatiq
import peewee
from dramatiq.errors import BrokerConnectionError

from shared.messages import BadMessage

logger = logging.getLogger(__name__)
# What a database that is down, restarting or locked raises (peewee wraps both drivers' errors).
OUTAGE = (peewee.OperationalError, peewee.InterfaceError)
REASON_CHARS = 300


def describe(exc: Exception) -> str:
    """Why a message could not be applied, bounded (messages carry no secret)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"


class BatchConsumer:
    """Consumes one queue: `parse` opens a message's body (raising `BadMessage`), `apply` applies
    a list of bodies in one transaction and returns {index: reason} for those it refused."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str, parse: Callable[[object], object],
                 apply: Callable[[list], dict[int, str] | None], *, batch_size: int = 500,
                 wait_ms: int = 100):
        self.broker = broker
        self.queue_name = queue_name
        self.parse = parse
        self.apply = apply
        self.batch_size = batch_size
        self.wait_ms = wait_ms
        self._held: list = []       # (message, body) an outage kept from being applied
        self._backoff = 0.5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consume-{queue_name}", daemon=True)

    def start(self) -> None:
        self.broker.declare_queue(self.queue_name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                consumer = self.broker.consume(self.queue_name, prefetch=2 * self.batch_size,
                                               timeout=self.wait_ms)
            except BrokerConnectionError:
                logger.warning("cannot reach the broker for %s; retrying in %.1f s",
                               self.queue_name, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)
                continue
            backoff = 0.5
            try:
                while not self._stop.is_set():
                    self.handle(consumer, self.take(consumer))
            except BrokerConnectionError:
                logger.warning("lost the broker while consuming %s; reconnecting", self.queue_name)
            except Exception:   # unacknowledged messages come back once RabbitMQ sees us go
                logger.exception("consuming %s failed; reconnecting", self.queue_name)
                self._stop.wait(backoff)
            finally:
                self._held = []   # unacknowledged: the broker delivers them again
                try:
                    consumer.close()
                except BrokerConnectionError:
                    pass

    def take(self, consumer) -> list:
        """Up to `batch_size` messages, or fewer once the queue is idle for `wait_ms`."""
        batch = []
        for message in consumer:
            if message is None or self._stop.is_set():
                break
            batch.append(message)
            if len(batch) >= self.batch_size:
                break
        return batch

    def handle(self, consumer, batch: list) -> None:
        """Apply a batch (and what an outage held back from earlier ones) and settle each
        message: acknowledged once applied, dead-lettered if it cannot be applied."""
        items = []
        for message in batch:
            try:
                items.append((message, self.parse(message.args[0] if message.args else None)))
            except BadMessage as exc:
                self.dead_letter(consumer, message, str(exc))
        # Held messages go last: a database seen working on the new ones judges them.
        items += self._held
        self._held = self.apply_or_sort(consumer, items) if items else []
        if self._held:
            logger.error("the database refuses %s; %d messages wait, trying again in %.1f s",
                         self.queue_name, len(self._held), self._backoff)
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, 30)
        else:
            self._backoff = 0.5

    def apply_or_sort(self, consumer, items: list) -> list:
        """Apply the batch in one go; if that fails, message by message. A message that fails
        for a reason other than an outage, or after another message applied (the database is
        up), is dead-lettered; returns those that failed as in an outage, to hold and retry.
        Held messages stay unacknowledged: after a crash RabbitMQ delivers them again, and the
        in-process broker, which never redelivers, loses nothing either."""
        try:
            self.settle(consumer, items, self.apply([body for _, body in items]))
            return []
        except Exception as exc:
            if len(items) == 1:
                return self.judge(consumer, items[0], exc, database_up=False)
            logger.warning("applying a batch of %d from %s failed (%s); applying them one by one",
                           len(items), self.queue_name, describe(exc))
        held, database_up = [], False
        for item in items:
            try:
                self.settle(consumer, [item], self.apply([item[1]]))
                database_up = True
            except Exception as exc:
                held += self.judge(consumer, item, exc, database_up)
        return held

    def judge(self, consumer, item: tuple, exc: Exception, database_up: bool) -> list:
        """A message failed alone: dead-letter it, unless an outage may be why (hold it)."""
        if isinstance(exc, OUTAGE) and not database_up:
            return [item]
        self.dead_letter(consumer, item[0], describe(exc))
        return []

    def settle(self, consumer, items: list, refused: dict[int, str] | None) -> None:
        """Acknowledge what was applied; dead-letter what `apply` refused."""
        refused = refused or {}
        for index, (message, _) in enumerate(items):
            if index in refused:
                self.dead_letter(consumer, message, refused[index])
            else:
                consumer.ack(message)

    def dead_letter(self, consumer, message, reason: str) -> None:
        logger.error("dead-lettered message %s from %s: %s", getattr(message, "message_id", "?"),
                     self.queue_name, reason)
        consumer.nack(message)
