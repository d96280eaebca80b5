"""The controller daemon: consumes results and heartbeats, and runs the housekeeping loop
(dispatcher for pending records, reaper). Results wait in RabbitMQ while it is down."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

import dramatiq

from controller.dispatch import dispatch_pending
from controller.models import WorkerSeen
from controller.reaper import reap
from controller.results import apply_results
from controller.runtime import Controller
from shared.broker import HEARTBEAT_ACTOR, HEARTBEATS_QUEUE, RESULT_ACTOR, RESULTS_QUEUE
from shared.errors import KeyturnError
from shared.messages import BadMessage, Heartbeat, RotateResult, open_envelope, parse_envelope

logger = logging.getLogger(__name__)
HOUSEKEEPING_SECONDS = 1.0


def open_body(ctl: Controller, raw: object, expected: type):
    envelope = parse_envelope(raw)
    try:
        channel = ctl.channel_for_zone_name(envelope.zone)
    except KeyturnError as exc:
        raise BadMessage(str(exc)) from None
    body = open_envelope(envelope, channel)
    if not isinstance(body, expected):
        raise BadMessage(f"expected a {expected.__name__}, got {envelope.kind}")
    return body


def register_actors(ctl: Controller, broker: dramatiq.Broker) -> None:
    """The controller-side actors; bad messages fail at once into the dead-letter queue."""

    def apply_result(envelope: dict) -> None:
        apply_results([open_body(ctl, envelope, RotateResult)])

    def record_heartbeat(envelope: dict) -> None:
        beat = open_body(ctl, envelope, Heartbeat)
        seen = {"zone": beat.zone, "host": beat.host, "version": beat.version,
                "in_flight": beat.in_flight,
                "last_seen": datetime.fromtimestamp(beat.sent_at, timezone.utc).replace(tzinfo=None)}
        (WorkerSeen.insert(worker_id=beat.worker_id, **seen)
         .on_conflict(conflict_target=[WorkerSeen.worker_id], update=seen).execute())

    options = {"broker": broker, "max_retries": 5, "min_backoff": 500, "max_backoff": 10_000,
               "throws": (BadMessage,)}
    dramatiq.actor(apply_result, actor_name=RESULT_ACTOR, queue_name=RESULTS_QUEUE, **options)
    dramatiq.actor(record_heartbeat, actor_name=HEARTBEAT_ACTOR, queue_name=HEARTBEATS_QUEUE,
                   **options)


class Daemon:
    """Owns the results consumer and the housekeeping thread of one controller process."""

    def __init__(self, ctl: Controller, *, consume: bool = True):
        self.ctl = ctl
        self.consume = consume
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._housekeeping, name="keyturn-housekeeping",
                                        daemon=True)
        self._worker: dramatiq.Worker | None = None

    def start(self) -> None:
        if self.consume:
            register_actors(self.ctl, self.ctl.broker)
            self._worker = dramatiq.Worker(self.ctl.broker, queues={RESULTS_QUEUE, HEARTBEATS_QUEUE},
                                           worker_threads=4)
            self._worker.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._worker is not None:
            self._worker.stop()

    def housekeeping_once(self) -> None:
        reap(self.ctl)
        dispatch_pending(self.ctl)

    def _housekeeping(self) -> None:
        while not self._stop.wait(HOUSEKEEPING_SECONDS):
            try:
                self.housekeeping_once()
            except Exception:   # the loop must outlive a broker or database blip
                logger.exception("housekeeping failed; retrying")
