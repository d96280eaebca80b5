"""The worker agent: consumes its zones' rotate queues with dramatiq, rotates, and sends sealed
results and heartbeats back to the controller.

One dramatiq actor named `rotate` serves every zone: dramatiq finds actors by name and consumes
every declared queue we allow, so each zone's queue is declared and listed. A message that cannot
be opened is a permanent error (`BadMessage`) and goes straight to the dead letters; everything
else ends in a published result, because `rotate` never raises.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import dramatiq
from dramatiq.middleware import CurrentMessage

import shared
from shared.broker import (HEARTBEAT_ACTOR, HEARTBEATS_QUEUE, RESULT_ACTOR, RESULTS_QUEUE,
                           ROTATE_ACTOR, message_redelivered, publish, rotate_queue)
from shared.errors import KeyturnError
from shared.bounded import ZONE_NAME
from shared.messages import (SCHEMA_VERSION, BadMessage, Heartbeat, RotateProgress, open_envelope,
                             parse_envelope, seal)
from shared.settings import Settings
from shared.zonecrypto import Channel
from worker.concurrency import InFlightLimit
from worker.keys import load_channels
from worker.limits import Limits
from worker.metrics import IN_FLIGHT, IN_FLIGHT_LIMIT
from worker.rotate import rotate
from worker.connectors import Targets

logger = logging.getLogger(__name__)
MAX_RETRIES = 3          # only for surprises such as a broker blip while publishing the result
DRAIN_MS = 120_000       # in-flight rotations may finish; unfinished messages are redelivered
HEARTBEAT_JOIN_SECONDS = 10


class WorkerAgent:
    """A zone worker inside a process; `start`/`stop` (the CLI and the embedded mode)."""

    def __init__(self, settings: Settings, zones: list[str], broker: dramatiq.Broker):
        self.zones = list(dict.fromkeys(zones))
        if not self.zones:
            raise KeyturnError("a worker needs at least one zone (--zone NAME)")
        for zone in self.zones:
            if not ZONE_NAME.match(zone):
                raise KeyturnError(f"zone name {zone!r}: use lowercase ASCII letters, digits, - and _")
        self.settings = settings
        self.broker = broker
        self.channels: dict[str, Channel] = load_channels(settings, self.zones)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.targets = Targets()
        self.limits = Limits()
        self.in_flight = InFlightLimit(settings.worker_threads)   # adapts to the hosts' latency
        self._stopping = threading.Event()
        self._heartbeats = threading.Thread(target=self._beat, name="keyturn-heartbeats",
                                            daemon=True)
        self._worker: dramatiq.Worker | None = None

    def start(self) -> None:
        dramatiq.actor(self.handle, actor_name=ROTATE_ACTOR, queue_name=rotate_queue(self.zones[0]),
                       broker=self.broker, max_retries=MAX_RETRIES, min_backoff=1000,
                       max_backoff=30_000, throws=(BadMessage,))
        queues = {rotate_queue(zone) for zone in self.zones}
        for queue in queues:
            self.broker.declare_queue(queue)
        self._worker = dramatiq.Worker(self.broker, queues=queues,
                                       worker_threads=self.settings.worker_threads)
        self._worker.start()
        self._heartbeats.start()
        IN_FLIGHT.set_function(lambda: self.in_flight.in_flight)   # this process's agent
        IN_FLIGHT_LIMIT.set_function(lambda: self.in_flight.limit)
        logger.info("worker %s (keyturn %s, message schema %d) serves %s with up to %d commands "
                    "in flight", self.worker_id, shared.__version__, SCHEMA_VERSION,
                    ", ".join(sorted(queues)), self.settings.worker_threads)

    def stop(self) -> None:
        """Let in-flight rotations finish, stop consuming, close the pooled sessions."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop(timeout=DRAIN_MS)
            self.broker.actors.pop(ROTATE_ACTOR, None)   # a restarted agent registers it again
        if self._heartbeats.is_alive():
            self._heartbeats.join(timeout=HEARTBEAT_JOIN_SECONDS)
        self.targets.close()
        logger.info("worker %s stopped", self.worker_id)

    def handle(self, *args, **kwargs) -> None:
        """The `rotate` actor: open the sealed command, rotate, publish the sealed result."""
        command, channel = self._open(args, kwargs)
        message = CurrentMessage.get_current_message()
        retried = bool(message and message.options.get("retries"))   # a retry may follow a change
        started = self.in_flight.enter()    # waits while enough commands are in flight
        try:
            with self.limits.slot(command):    # the plan's per-asset and per-zone limits
                if self.settings.worker_progress:
                    self._started(command, channel)
                result = rotate(command, self.targets, self.worker_id,
                                message_redelivered() or retried)
        finally:
            self.in_flight.leave(started)
        publish(self.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", result, channel))

    def _started(self, command, channel: Channel) -> None:
        """Tell the controller this worker starts the command now (the execution log's "picked
        up"), once the in-flight and rollout limits let it talk to the asset. Best effort: the
        rotation does not depend on it, so a bus blip here is logged and the command goes on."""
        progress = RotateProgress(record_id=command.record_id, attempt=command.attempt,
                                  zone=command.zone, worker_id=self.worker_id, at=time.time())
        try:
            publish(self.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("progress", progress, channel))
        except Exception as exc:
            logger.warning("record %s: progress not sent: %s", command.record_id,
                           type(exc).__name__)

    def _open(self, args: tuple, kwargs: dict):
        try:
            if len(args) != 1 or kwargs:
                raise BadMessage("expected exactly one envelope argument")
            envelope = parse_envelope(args[0])
            channel = self.channels.get(envelope.zone)
            if channel is None:
                raise BadMessage(f"zone {envelope.zone!r} is not served by this worker")
            if envelope.kind != "rotate":
                raise BadMessage(f"a {envelope.kind} message on a rotate queue")
            return open_envelope(envelope, channel), channel
        except BadMessage as exc:
            message = CurrentMessage.get_current_message()
            logger.warning("message %s on %s goes to the dead letters: %s",
                           getattr(message, "message_id", "?"), getattr(message, "queue_name", "?"),
                           exc)
            raise

    def _beat(self) -> None:
        """Heartbeats every `heartbeat_interval`; also closes idle pooled sessions."""
        while True:
            for zone, channel in self.channels.items():
                beat = Heartbeat(worker_id=self.worker_id, zone=zone, host=socket.gethostname(),
                                 version=shared.__version__, in_flight=self.in_flight.in_flight,
                                 sent_at=time.time())
                try:
                    publish(self.broker, HEARTBEATS_QUEUE, HEARTBEAT_ACTOR,
                            seal("heartbeat", beat, channel))
                except Exception as exc:   # the bus may be down for a while: keep beating
                    logger.warning("heartbeat for zone %s not sent: %s", zone, type(exc).__name__)
            self.targets.prune()
            if self._stopping.wait(self.settings.heartbeat_interval):
                return


def start_worker(settings: Settings, zones: list[str], broker: dramatiq.Broker) -> WorkerAgent:
    """A running worker without signal handlers (for the embedded mode); `.stop()` ends it."""
    agent = WorkerAgent(settings, zones, broker)
    agent.start()
    return agent


def run_worker(settings: Settings, zones: list[str], broker: dramatiq.Broker) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (the `keyturn worker` command)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    agent = start_worker(settings, zones, broker)
    stop.wait()
    logger.info("signal received: stopping")
    agent.stop()
    broker.close()
