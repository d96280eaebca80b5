"""The controller daemon: consumes results and heartbeats in batches, and runs the housekeeping
loop (dispatcher for pending records, reaper). Results wait in RabbitMQ while it is down."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from dramatiq.errors import BrokerConnectionError
from pika.exceptions import AMQPConnectionError

from controller.amqp_queue import RawQueues
from controller.bus_requests import REQUESTS_QUEUE, RequestHandler, prune_seen
from controller.consumers import BatchConsumer
from controller.db import database, refresh_statistics
from controller.dispatch import dispatch_pending
from controller.events import announce_lost_workers, relay_events
from controller.models import WorkerSeen, Zone, utcnow
from controller.progress import apply_progress_batch
from controller.reaper import reap
from controller.silence import report_silent
from controller.steering import steer
from controller.metrics import apply_measured
from controller.runtime import Controller
from shared.broker import HEARTBEATS_QUEUE, RESULTS_QUEUE, rotate_queue
from shared.bus import check_bus, declare_queues
from shared.errors import KeyturnError
from shared.messages import (SCHEMA_VERSION, BadMessage, ForeignHeartbeat, Heartbeat,
                             RotateProgress, RotateResult, claimed_version, open_envelope,
                             open_foreign_heartbeat, parse_envelope)

logger = logging.getLogger(__name__)
HOUSEKEEPING_SECONDS = 1.0
STATISTICS_SECONDS = 3600     # the database's planner statistics refreshed (SQLite; at start too)


def zone_channel(ctl: Controller, zone: str):
    try:
        return ctl.channel_for_zone_name(zone)
    except KeyturnError as exc:
        raise BadMessage(str(exc)) from None


def open_body(ctl: Controller, raw: object, expected: type | tuple[type, ...]):
    envelope = parse_envelope(raw)
    body = open_envelope(envelope, zone_channel(ctl, envelope.zone))
    if not isinstance(body, expected):
        raise BadMessage(f"expected a {getattr(expected, '__name__', 'result')}, got {envelope.kind}")
    return body


def apply_worker_reports(bodies: list[RotateResult | RotateProgress]) -> dict[int, str]:
    """The results queue carries results and, from workers of this release on, progress
    messages (a worker publishes its "started" before its result, so applying a batch's
    progress first keeps each record's story in order); returns {index: reason} refused."""
    progress = [(i, body) for i, body in enumerate(bodies) if isinstance(body, RotateProgress)]
    results = [(i, body) for i, body in enumerate(bodies) if not isinstance(body, RotateProgress)]
    refused = {}
    for batch, apply in ((progress, apply_progress_batch),
                         (results, lambda items: apply_measured(items).refused)):
        if batch:
            answer = apply([body for _, body in batch])
            refused |= {batch[index][0]: reason for index, reason in answer.items()}
    return refused


def open_heartbeat(ctl: Controller, raw: object) -> Heartbeat | ForeignHeartbeat:
    """A heartbeat of our schema, or of a worker speaking another one (the zones page says so)."""
    if claimed_version(raw) in (None, SCHEMA_VERSION):
        return open_body(ctl, raw, Heartbeat)
    return open_foreign_heartbeat(raw, lambda zone: zone_channel(ctl, zone))


def record_heartbeats(beats: list[Heartbeat | ForeignHeartbeat]) -> None:
    """Remember the latest heartbeat of each worker (for the zones page); of a worker speaking
    another schema, only who it is, which schema it speaks, and when we heard it."""
    with database.atomic():
        for beat in beats:
            seen = {"zone": beat.zone, "host": beat.host, "version": beat.version,
                    "message_schema": beat.v, "lost_at": None}
            if isinstance(beat, Heartbeat):
                seen |= {"in_flight": beat.in_flight, "last_seen": datetime.fromtimestamp(
                    beat.sent_at, timezone.utc).replace(tzinfo=None)}
            else:
                seen |= {"in_flight": 0, "last_seen": utcnow()}
            (WorkerSeen.insert(worker_id=beat.worker_id, **seen)
             .on_conflict(conflict_target=[WorkerSeen.worker_id, WorkerSeen.zone], update=seen)
             .execute())


class Daemon:
    """Owns the results consumer and the housekeeping thread of one controller process."""

    def __init__(self, ctl: Controller, clock=utcnow):
        self.ctl = ctl
        self.clock = clock        # maintenance windows read it (tests move it)
        self._statistics_due = 0.0   # time.monotonic() of the next refresh_statistics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._housekeeping, name="keyturn-housekeeping",
                                        daemon=True)
        self._consumers = [
            BatchConsumer(ctl.broker, RESULTS_QUEUE,
                          lambda raw: open_body(ctl, raw, (RotateResult, RotateProgress)),
                          apply_worker_reports),
            BatchConsumer(ctl.broker, HEARTBEATS_QUEUE, lambda raw: open_heartbeat(ctl, raw),
                          record_heartbeats),
        ]
        if not ctl.settings.embedded:   # other systems reach keyturn over RabbitMQ only
            requests = RequestHandler(ctl)
            queues = RawQueues(ctl.broker.parameters, quorum=ctl.broker.quorum)
            self._consumers.append(BatchConsumer(queues, REQUESTS_QUEUE, requests.parse,
                                                 requests.apply, batch_size=1))

    def start(self) -> None:
        check_bus(self.ctl.broker, [RESULTS_QUEUE, HEARTBEATS_QUEUE])   # and sets up the bus
        for consumer in self._consumers:
            consumer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for consumer in self._consumers:
            consumer.stop()

    def housekeeping_once(self) -> None:
        # Workers may not create their queues: every zone's is declared here, soon after it is
        # registered, so its workers find it before the first command.
        declare_queues(self.ctl.broker, [rotate_queue(zone.name) for zone in Zone.select(Zone.name)])
        reap(self.ctl)
        report_silent(self.ctl)
        now = self.clock()
        steer(self.ctl, now)
        dispatch_pending(self.ctl, now)
        announce_lost_workers(self.ctl)
        relay_events(self.ctl)
        prune_seen()
        if time.monotonic() >= self._statistics_due:
            refresh_statistics()
            self._statistics_due = time.monotonic() + STATISTICS_SECONDS

    def _housekeeping(self) -> None:
        while not self._stop.wait(HOUSEKEEPING_SECONDS):
            try:
                self.housekeeping_once()
            except (AMQPConnectionError, BrokerConnectionError, KeyturnError) as exc:
                logger.warning("housekeeping waits for the broker: %s", exc or type(exc).__name__)
            except Exception:   # the loop must outlive a database blip too
                logger.exception("housekeeping failed; retrying")


def daemon_services(ctl: Controller) -> list:
    """Everything `keyturn daemon` runs: results, requests and housekeeping, schedules,
    result mail, webhooks."""
    from controller.notify import Notifier
    from controller.scheduling import Scheduler
    from controller.webhooks import WebhookSender

    return [Daemon(ctl), Scheduler(ctl), Notifier(ctl), WebhookSender(ctl)]
