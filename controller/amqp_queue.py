"""A plain AMQP queue behind `consumers.BatchConsumer`, for messages other systems publish
with any AMQP client (no dramatiq envelope): it stands in for the broker (`declare_queue`,
`consume`), and its consumer hands `BatchConsumer` messages whose one argument is the raw
delivery (`Delivery`: body, `reply_to`, `correlation_id`, redelivered flag and a `reply`).

The queue is declared durable with a dead-letter queue `<name>.XQ` beside it, with the very
arguments keyturn's dramatiq broker declares its own with (`shared.bus.queue_arguments`: a
quorum queue unless configured classic, dead letters kept 7 days), and bound to the
`keyturn.bus` exchange under its own name (where a least-privilege integration account may
publish: `shared.broker_accounts`); a message `BatchConsumer` dead-letters goes to
`<name>.XQ`, untouched."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import pika
from dramatiq.common import xq_name
from dramatiq.errors import ConnectionClosed

from shared.broker import BUS_EXCHANGE
from shared.bus import dead_letter_arguments, queue_arguments

REPLY_TYPE = "application/json"
OWN_QUEUES = ("rotate.", "keyturn.")     # never a reply target: a reply is not a command


@dataclass(frozen=True)
class Delivery:
    body: bytes
    reply_to: str | None
    correlation_id: str | None
    redelivered: bool
    reply: Callable[[dict], None]


@dataclass(frozen=True)
class Message:
    """What `BatchConsumer` handles: `args[0]` is the delivery."""
    message_id: str
    args: tuple
    delivery_tag: int


def dead_letter_queue(name: str) -> str:
    return xq_name(name)


class RawQueues:
    def __init__(self, parameters, *, quorum: bool):
        self.parameters = parameters if isinstance(parameters, list) else [parameters]
        self.quorum = quorum

    def declare_queue(self, name: str) -> None:
        """Nothing to do yet: `consume` declares the queue once connected."""

    def consume(self, name: str, prefetch: int, timeout: int) -> "RawConsumer":
        try:
            connection = pika.BlockingConnection(self.parameters)
        except pika.exceptions.AMQPError as exc:
            raise ConnectionClosed(exc) from None
        return RawConsumer(connection, name, prefetch, timeout / 1000, quorum=self.quorum)


class RawConsumer:
    def __init__(self, connection, name: str, prefetch: int, idle_seconds: float, *,
                 quorum: bool):
        self.connection = connection
        try:
            self.channel = connection.channel()
            self.channel.queue_declare(dead_letter_queue(name), durable=True,
                                       arguments=dead_letter_arguments(quorum=quorum))
            self.channel.queue_declare(name, durable=True,
                                       arguments=queue_arguments(name, quorum=quorum))
            self.channel.exchange_declare(BUS_EXCHANGE, exchange_type="topic", durable=True)
            self.channel.queue_bind(name, BUS_EXCHANGE, routing_key=name)
            self.channel.basic_qos(prefetch_count=prefetch)
            self.iterator = self.channel.consume(name, inactivity_timeout=idle_seconds)
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise ConnectionClosed(exc) from None

    def __iter__(self):
        return self

    def __next__(self) -> Message | None:
        try:
            method, properties, body = next(self.iterator)
        except pika.exceptions.AMQPError as exc:
            raise ConnectionClosed(exc) from None
        if method is None:
            return None
        delivery = Delivery(body, properties.reply_to, properties.correlation_id,
                            bool(method.redelivered),
                            lambda answer: self.reply(properties, answer))
        return Message(f"tag {method.delivery_tag}", (delivery,), method.delivery_tag)

    def reply(self, properties, answer: dict) -> None:
        """Answer on the sender's `reply_to` queue with its `correlation_id` (if it asked)."""
        if not properties.reply_to or properties.reply_to.startswith(OWN_QUEUES):
            return
        try:
            self.channel.basic_publish("", properties.reply_to, json.dumps(answer).encode(),
                                       pika.BasicProperties(content_type=REPLY_TYPE,
                                                            correlation_id=properties.correlation_id))
        except pika.exceptions.AMQPError as exc:
            raise ConnectionClosed(exc) from None

    def ack(self, message: Message) -> None:
        self._settle(self.channel.basic_ack, message.delivery_tag)

    def nack(self, message: Message) -> None:
        """Dead-letter: to `<queue>.XQ`, never back into the queue."""
        self._settle(lambda tag: self.channel.basic_nack(tag, requeue=False), message.delivery_tag)

    def _settle(self, how, tag: int) -> None:
        try:
            how(tag)
        except pika.exceptions.AMQPError as exc:
            raise ConnectionClosed(exc) from None

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except pika.exceptions.AMQPError:
            pass
