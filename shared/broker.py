"""One place that knows the bus: queue, exchange and actor names, broker construction, publishing.

The controller publishes `rotate` messages without importing worker code, and workers publish
results without importing controller code: both only build `dramatiq.Message`s by name here.

dramatiq publishes through RabbitMQ's default exchange, which reaches every queue: an account
allowed to write to it may publish to any zone's queue. So dramatiq's messages go through the
`keyturn.bus` topic exchange instead, where every queue is bound under its own name, and RabbitMQ's
topic permissions say which queues an account may publish to (`shared.broker_accounts`).
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from shared.settings import BrokerTls

ROTATE_ACTOR = "rotate"
RESULT_ACTOR = "apply_result"
HEARTBEAT_ACTOR = "record_heartbeat"
RESULTS_QUEUE = "keyturn.results"
HEARTBEATS_QUEUE = "keyturn.heartbeats"
REQUESTS_QUEUE = "keyturn.requests"      # integrations' requests (published via BUS_EXCHANGE)
BUS_EXCHANGE = "keyturn.bus"             # topic exchange: every queue bound under its own name
EVENTS_EXCHANGE = "keyturn.events"       # topic exchange of events for other systems
WORKER_PUBLISHES = (RESULTS_QUEUE, HEARTBEATS_QUEUE)   # the controller's queues workers write to


def rotate_queue(zone: str) -> str:
    return f"rotate.{zone}"


def make_broker(broker_url: str | None, tls: BrokerTls | None = None, *,
                worker: bool = False, quorum: bool = True) -> dramatiq.Broker:
    """A RabbitMQ broker with publisher confirms (TLS for amqps:// URLs; several nodes of a
    cluster as `;`-separated URLs), or the in-process one when no URL is set. A worker's broker
    declares nothing; the controller's declares quorum queues unless `quorum` is false."""
    middleware = [factory() for factory in default_middleware] + [CurrentMessage()]
    if broker_url is None:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    else:
        from shared.bus import BusBroker

        broker = BusBroker(url=broker_url, confirm_delivery=True, middleware=middleware,
                           tls=tls, worker=worker, quorum=quorum)
    dramatiq.set_broker(broker)
    return broker


def publish(broker: dramatiq.Broker, queue_name: str, actor_name: str, envelope: dict) -> None:
    """Publish to a queue by name (declared first: the in-process broker refuses unknown queues)."""
    broker.declare_queue(queue_name)
    broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=actor_name,
                                    args=(envelope,), kwargs={}, options={}))


def ready_messages(broker: dramatiq.Broker, queue_name: str) -> int:
    """Messages waiting in a queue (not those a worker holds): the reaper re-dispatches nothing
    while a zone's queue still has work, since its records may simply be waiting their turn."""
    if isinstance(broker, StubBroker):
        queue = broker.queues.get(queue_name)
        return queue.qsize() if queue is not None else 0
    state = queue_state(broker, queue_name)
    return state.message_count if state is not None else 0    # never declared: nothing waits


def queue_state(broker: dramatiq.Broker, queue_name: str):
    """RabbitMQ's answer to a passive declare (its `message_count` and `consumer_count`), or
    None for a queue never declared; a broker that cannot be reached raises pika's error."""
    import pika

    connection = pika.BlockingConnection(broker.parameters)
    try:
        return connection.channel().queue_declare(queue_name, passive=True).method
    except pika.exceptions.ChannelClosedByBroker:
        return None
    finally:
        if connection.is_open:
            connection.close()


def message_redelivered() -> bool:
    """Was the message being handled delivered before (a worker died holding it)?"""
    message = CurrentMessage.get_current_message()
    return bool(getattr(message, "redelivered", False))
