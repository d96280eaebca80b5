"""Consuming the controller's queues in batches: one database transaction per batch of results
instead of one per message, acknowledged only after it committed (so a crash loses nothing:
unacknowledged messages come back, and applying a result twice changes nothing)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

import dramatiq
from dramatiq.errors import BrokerConnectionError

from shared.messages import BadMessage

logger = logging.getLogger(__name__)


class BatchConsumer:
    def __init__(self, broker: dramatiq.Broker, queue_name: str, parse: Callable[[object], object],
                 apply: Callable[[list], object], *, batch_size: int = 500, wait_ms: int = 100):
        self.broker = broker
        self.queue_name = queue_name
        self.parse = parse
        self.apply = apply
        self.batch_size = batch_size
        self.wait_ms = wait_ms
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
        good, bodies = [], []
        for message in batch:
            try:
                bodies.append(self.parse(message.args[0] if message.args else None))
                good.append(message)
            except BadMessage as exc:
                logger.error("dead-lettered a message from %s: %s", self.queue_name, exc)
                consumer.nack(message)
        if bodies and not self.apply_until_done(bodies):
            return   # stopping: the batch stays unacknowledged
        for message in good:
            consumer.ack(message)

    def apply_until_done(self, bodies: list) -> bool:
        """Apply a batch, trying again while the database refuses (down, restarting, locked);
        False if asked to stop first. Its messages stay unacknowledged meanwhile: after a crash
        RabbitMQ delivers them again, and the in-process broker, which never redelivers, loses
        nothing either."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.apply(bodies)
                return True
            except Exception:
                logger.exception("applying a batch of %d from %s failed; trying again in %.1f s",
                                 len(bodies), self.queue_name, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)
        return False
