"""Events for other systems (SIEM, ticketing, chat): `record.<status>` when a record ends and
`execution.finished` when an execution does, on the `keyturn.events` topic exchange. They carry
names, outcomes and reasons, never a secret."""
from __future__ import annotations

from controller.db import id_in
from controller.models import Account, Asset, Execution, OutboxEvent, Record, utcnow
from controller.runtime import Controller
from shared.publisher import Publisher

EXCHANGE = "keyturn.events"
RELAY_BATCH = 1000


def record_events(record_ids: list[int]) -> None:
    """Queue one event per ended record (inside the transaction that ended them)."""
    now = utcnow().isoformat()
    rows = [{"routing_key": f"record.{r.status}", "body": {
        "record": r.id, "execution": r.execution_id, "asset": r.asset, "account": r.username,
        "action": r.action, "status": r.status, "error_code": r.error_code, "error": r.error,
        "worker": r.worker_id, "attempt": r.attempt, "at": now}}
        for r in Record.select(Record, Account.username, Asset.name.alias("asset"))
        .join(Account).join(Asset).where(id_in(Record.id, record_ids)).objects()]
    for start in range(0, len(rows), 500):
        OutboxEvent.insert_many(rows[start:start + 500]).execute()


def execution_event(execution: Execution) -> None:
    OutboxEvent.create(routing_key="execution.finished", body={
        "execution": execution.id, "plan": execution.plan_name, "trigger": execution.trigger,
        "status": execution.status, "total": execution.total, "succeeded": execution.succeeded,
        "failed": execution.failed, "unverified": execution.unverified,
        "skipped": execution.skipped, "at": utcnow().isoformat()})


def relay_events(ctl: Controller) -> int:
    """Publish queued events in order, then forget them; returns how many were relayed. With the
    in-process broker nobody can subscribe, so they are only forgotten."""
    relayed = 0
    publisher = None
    try:
        while events := list(OutboxEvent.select().order_by(OutboxEvent.id).limit(RELAY_BATCH)):
            publisher = publisher or Publisher(ctl.broker)
            for event in events:
                publisher.publish_event(EXCHANGE, event.routing_key, event.body)
            publisher.wait_confirmed()
            OutboxEvent.delete().where(OutboxEvent.id <= events[-1].id).execute()
            relayed += len(events)
    finally:
        if publisher is not None:
            publisher.close()
    return relayed
