"""One place that knows the bus: queue and actor names, broker construction, publishing.

The controller publishes `rotate` messages without importing worker code, and workers publish
results without importing controller code: both only build `dramatiq.Message`s by name here.
"""
from __future__ import annotations

import json

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware

ROTATE_ACTOR = "rotate"
RESULT_ACTOR = "apply_result"
HEARTBEAT_ACTOR = "record_heartbeat"
RESULTS_QUEUE = "keyturn.results"
HEARTBEATS_QUEUE = "keyturn.heartbeats"


def rotate_queue(zone: str) -> str:
    return f"rotate.{zone}"


def make_broker(broker_url: str | None) -> dramatiq.Broker:
    """A RabbitMQ broker with publisher confirms, or the in-process one when no URL is set."""
    middleware = [factory() for factory in default_middleware] + [CurrentMessage()]
    if broker_url is None:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=broker_url, confirm_delivery=True, middleware=middleware)
    dramatiq.set_broker(broker)
    return broker


def publish(broker: dramatiq.Broker, queue_name: str, actor_name: str, envelope: dict) -> None:
    """Publish to a queue by name (declared first: the in-process broker refuses unknown queues)."""
    broker.declare_queue(queue_name)
    broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=actor_name,
                                    args=(envelope,), kwargs={}, options={}))


class BatchPublisher:
    """Publishes many messages that become durable together: on RabbitMQ an AMQP transaction per
    batch (about ten times faster than a publisher confirm per message, with the same guarantee
    once `commit` returns); on the in-process broker, plain enqueues.

    Messages are ordinary dramatiq messages on dramatiq-declared queues, so any dramatiq worker
    consumes them. One instance belongs to one thread (pika is not thread-safe)."""

    def __init__(self, broker: dramatiq.Broker):
        self.broker = broker
        self._channel = None
        if not isinstance(broker, StubBroker):
            import pika

            self._connection = pika.BlockingConnection(broker.parameters)
            self._channel = self._connection.channel()
            self._channel.tx_select()
            self._properties = pika.BasicProperties(delivery_mode=2)
            self._json_properties = pika.BasicProperties(delivery_mode=2,
                                                         content_type="application/json")
            self._exchanges: set[str] = set()

    def publish(self, queue_name: str, actor_name: str, envelope: dict) -> None:
        if self._channel is None:
            publish(self.broker, queue_name, actor_name, envelope)
            return
        self.broker.declare_queue(queue_name, ensure=True)
        message = dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(envelope,),
                                   kwargs={}, options={})
        self._channel.basic_publish("", queue_name, message.encode(), self._properties)

    def publish_event(self, exchange: str, routing_key: str, body: dict) -> None:
        """A plain JSON message on a topic exchange, for systems that are not dramatiq actors."""
        if exchange not in self._exchanges:
            self._channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            self._exchanges.add(exchange)
        self._channel.basic_publish(exchange, routing_key, json.dumps(body).encode(),
                                    self._json_properties)

    def commit(self) -> None:
        """Return once every message published so far is safely in the broker."""
        if self._channel is not None:
            self._channel.tx_commit()

    def close(self) -> None:
        if self._channel is not None and self._connection.is_open:
            self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def ready_messages(broker: dramatiq.Broker, queue_name: str) -> int:
    """Messages waiting in a queue (not those a worker holds): the reaper re-dispatches nothing
    while a zone's queue still has work, since its records may simply be waiting their turn."""
    if isinstance(broker, StubBroker):
        queue = broker.queues.get(queue_name)
        return queue.qsize() if queue is not None else 0
    import pika

    connection = pika.BlockingConnection(broker.parameters)
    try:
        return connection.channel().queue_declare(queue_name, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:   # never declared: nothing waits in it
        return 0
    finally:
        if connection.is_open:
            connection.close()


def message_redelivered() -> bool:
    """Was the message being handled delivered before (a worker died holding it)?"""
    message = CurrentMessage.get_current_message()
    return bool(getattr(message, "redelivered", False))
