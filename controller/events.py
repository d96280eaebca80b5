"""Events for other systems (SIEM, ticketing, chat), as CloudEvents 1.0.

An event is written to the outbox (`OutboxEvent`) in the transaction of the change it reports,
together with one webhook delivery per subscription that wants its type (`webhooks`). The
daemon's relay claims unrelayed events (`claims`), publishes each to the `keyturn.events`
topic exchange in the AMQP binding's structured mode (content type
`application/cloudevents+json`, routing key = the event's type) and marks it relayed once
RabbitMQ confirmed it; so an event is neither lost while the broker is down nor published by
two daemons. Its `id` is the outbox row's id: a consumer deduplicates a redelivery with
(`source`, `id`). Events carry names, outcomes and reasons, never a secret; `schemas/events/`
holds the JSON Schema of each type."""
from __future__ import annotations

import json
import time
from datetime import timedelta

from peewee import chunked

from controller.claims import claim, release
from controller.db import database, id_in
from controller.models import (Account, Asset, Execution, OutboxEvent, Record, WebhookDelivery,
                               WorkerSeen, utcnow)
from controller.runtime import Controller
from shared.broker import EVENTS_EXCHANGE
from shared.publisher import Publisher

EXCHANGE = EVENTS_EXCHANGE
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
RELAY_BATCH = 1000
INSERT_CHUNK = 500
RETENTION = timedelta(days=7)          # relayed events (and their deliveries) kept this long
PRUNE_EVERY = 600.0                    # seconds between two prunings

PREFIX = "io.keyturn."
EXECUTION_STARTED = PREFIX + "execution.started"
EXECUTION_FINISHED = PREFIX + "execution.finished"
EXECUTION_PAUSED = PREFIX + "execution.paused"
RECORD_ENDED = {"success": PREFIX + "record.succeeded", "failed": PREFIX + "record.failed",
                "unverified": PREFIX + "record.unverified"}
WORKER_LOST = PREFIX + "worker.lost"
HOST_KEY_MISMATCH = PREFIX + "asset.host_key_mismatch"
REQUEST_REFUSED = PREFIX + "request.refused"
TYPES = (EXECUTION_STARTED, EXECUTION_FINISHED, EXECUTION_PAUSED, *RECORD_ENDED.values(), WORKER_LOST,
         HOST_KEY_MISMATCH, REQUEST_REFUSED)

LOST_AFTER_BEATS = 3        # a worker silent for this many heartbeat intervals is lost
LOST_AFTER_MIN = 30.0       # ... and for at least this many seconds


def emit(events: list[tuple[str, str | None, dict]]) -> None:
    """Queue events (type, subject, data) in the caller's transaction, with their webhook
    deliveries."""
    from controller.webhooks import queue_deliveries

    now = utcnow()
    for chunk in chunked(events, INSERT_CHUNK):
        ids = [row_id for (row_id,) in OutboxEvent.insert_many(
            [{"at": now, "routing_key": kind, "subject": subject, "body": data}
             for kind, subject, data in chunk]).returning(OutboxEvent.id).tuples().execute()]
        queue_deliveries([(row_id, kind) for row_id, (kind, _, _) in zip(ids, chunk, strict=True)])


def record_events(record_ids: list[int]) -> None:
    """One event per ended record (inside the transaction that ended them), and a host key
    mismatch event for each asset whose host key was found changed."""
    events = []
    for r in (Record.select(Record, Account.username, Asset.name.alias("asset"))
              .join(Account).join(Asset).where(id_in(Record.id, record_ids)).objects()):
        events.append((RECORD_ENDED[r.status], f"{r.asset}/{r.username}", {
            "record": r.id, "execution": r.execution_id, "asset": r.asset, "account": r.username,
            "action": r.action, "status": r.status, "error_code": r.error_code, "error": r.error,
            "worker": r.worker_id, "attempt": r.attempt}))
        if r.error_code == "host_key_mismatch":
            events.append((HOST_KEY_MISMATCH, r.asset, {
                "asset": r.asset, "record": r.id, "execution": r.execution_id,
                "worker": r.worker_id, "error": r.error}))
    emit(events)


def execution_started(execution: Execution) -> None:
    emit([(EXECUTION_STARTED, f"execution/{execution.id}", {
        "execution": execution.id, "plan": execution.plan_name, "trigger": execution.trigger,
        "started_by": execution.started_by, "total": execution.total,
        "skipped": execution.skipped})])


def execution_event(execution: Execution) -> None:
    emit([(EXECUTION_FINISHED, f"execution/{execution.id}", {
        "execution": execution.id, "plan": execution.plan_name, "trigger": execution.trigger,
        "status": execution.status, "total": execution.total, "succeeded": execution.succeeded,
        "failed": execution.failed, "unverified": execution.unverified,
        "skipped": execution.skipped})])


def execution_paused(execution: Execution) -> None:
    """An execution stopped dispatching: its failure brake, its maintenance window or an
    operator (`paused_by`), and why in words."""
    emit([(EXECUTION_PAUSED, f"execution/{execution.id}", {
        "execution": execution.id, "plan": execution.plan_name, "paused_by": execution.paused_by,
        "reason": execution.pause_reason, "wave": execution.wave,
        "waves": len((execution.rollout or {}).get("waves") or []), "total": execution.total,
        "succeeded": execution.succeeded, "failed": execution.failed,
        "unverified": execution.unverified})])


def request_refused(integration: str | None, request_id: str | None, action: str | None,
                    reason: str) -> None:
    emit([(REQUEST_REFUSED, f"integration/{integration}" if integration else None, {
        "integration": integration, "request": request_id, "action": action, "reason": reason})])


def lost_after(settings) -> float:
    """Seconds of silence after which a worker is lost."""
    return max(LOST_AFTER_BEATS * settings.heartbeat_interval, LOST_AFTER_MIN)


def announce_lost_workers(ctl: Controller) -> int:
    """One `worker.lost` event per worker whose heartbeats stopped (once: a heartbeat clears
    `lost_at`); the conditional update makes two daemons announce it once."""
    silence = lost_after(ctl.settings)
    now = utcnow()
    with database.atomic():
        lost = list(WorkerSeen.update(lost_at=now).where(
            WorkerSeen.lost_at.is_null()
            & (WorkerSeen.last_seen < now - timedelta(seconds=silence))).returning(WorkerSeen))
        emit([(WORKER_LOST, w.worker_id, {
            "worker": w.worker_id, "zone": w.zone, "host": w.host,
            "last_seen": w.last_seen.isoformat() + "Z"}) for w in lost])
    return len(lost)


def cloudevent(ctl: Controller, event: OutboxEvent) -> dict:
    """The outbox row as a CloudEvents 1.0 event (structured JSON)."""
    structured = {"specversion": "1.0", "id": str(event.id), "source": ctl.settings.event_source,
                  "type": event.routing_key, "time": event.at.isoformat() + "Z",
                  "datacontenttype": "application/json", "data": event.body}
    if event.subject:
        structured["subject"] = event.subject
    return structured


def encode(ctl: Controller, event: OutboxEvent) -> bytes:
    return json.dumps(cloudevent(ctl, event), separators=(",", ":")).encode()


def relay_events(ctl: Controller) -> int:
    """Claim, publish and mark relayed every unrelayed event, in order; returns how many.
    Those RabbitMQ did not confirm are given back for the next turn. With the in-process
    broker nobody can subscribe, so they are only marked (webhooks still get them)."""
    relayed = 0
    publisher = None
    try:
        while ids := claim(OutboxEvent, OutboxEvent.relayed_at.is_null(), limit=RELAY_BATCH):
            before = publisher.published if publisher else 0
            try:
                publisher = publisher or Publisher(ctl.broker)
                for event in OutboxEvent.select().where(id_in(OutboxEvent.id, ids)).order_by(
                        OutboxEvent.id):
                    publisher.publish_event(EXCHANGE, event.routing_key, encode(ctl, event),
                                            CONTENT_TYPE)
                publisher.wait_confirmed()
            except Exception:
                if publisher is not None:
                    publisher.settle(timeout=5)
                confirmed = ids[:max(0, publisher.confirmed - before)] if publisher else []
                mark_relayed(confirmed)
                release(OutboxEvent, ids[len(confirmed):])
                raise
            mark_relayed(ids)
            relayed += len(ids)
    finally:
        if publisher is not None:
            publisher.close()
    prune()
    return relayed


def mark_relayed(ids: list[int]) -> None:
    if ids:
        OutboxEvent.update(relayed_at=utcnow(), claimed_until=None).where(
            id_in(OutboxEvent.id, ids)).execute()


_next_prune = 0.0


def prune() -> int:
    """Forget events relayed more than `RETENTION` ago whose deliveries are all settled."""
    global _next_prune
    if time.monotonic() < _next_prune:
        return 0
    _next_prune = time.monotonic() + PRUNE_EVERY
    unsettled = WebhookDelivery.select(WebhookDelivery.event).where(
        WebhookDelivery.status == "pending")
    return (OutboxEvent.delete().where((OutboxEvent.relayed_at < utcnow() - RETENTION)
                                       & OutboxEvent.id.not_in(unsettled)).execute())
