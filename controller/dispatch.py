"""Publishing records: claim pending records, seal one command per account to its zone and
publish it to `rotate.<zone>`. The one path for the CLI, the daemon's dispatcher and the reaper."""
from __future__ import annotations

import time
from datetime import timedelta, timezone

from peewee import chunked

from controller.models import Account, Asset, Record, Zone, utcnow
from controller.planning import login_accounts
from controller.results import apply_results
from controller.runtime import Controller
from shared.broker import ROTATE_ACTOR, BatchPublisher, rotate_queue
from shared.errors import KeyturnError
from shared.messages import AssetTarget, RotateCommand, RotateResult, seal

BATCH = 1000


def dispatch_execution(ctl: Controller, execution_id: int) -> int:
    return dispatch_where(ctl, Record.execution == execution_id)


def dispatch_pending(ctl: Controller) -> int:
    return dispatch_where(ctl, Record.status == "pending")


def dispatch_where(ctl: Controller, condition) -> int:
    """Publish every pending record matching `condition`; returns how many were published."""
    sent = 0
    with BatchPublisher(ctl.broker) as publisher:
        while claimed := claim_batch(ctl, condition):
            sent += publish_records(ctl, claimed, publisher)
    return sent


def claim_batch(ctl: Controller, condition) -> list[int]:
    """Move up to BATCH pending records to `dispatched`; only the claimer publishes them."""
    now = utcnow()
    ids = [row for (row,) in Record.select(Record.id)
           .where(condition & (Record.status == "pending")).order_by(Record.id).limit(BATCH).tuples()]
    if not ids:
        return []
    query = (Record.update(status="dispatched", dispatched_at=now,
                           deadline=now + timedelta(seconds=ctl.settings.rotation_deadline))
             .where(Record.id.in_(ids) & (Record.status == "pending")).returning(Record.id))
    return [row.id for row in query.execute()]


def publish_records(ctl: Controller, record_ids: list[int], publisher: BatchPublisher) -> int:
    """Publish claimed records as one batch; if the bus fails they all go back to pending
    (a message that did get through is harmless twice: it carries the same new secret)."""
    records = list(Record.select(Record, Account, Asset, Zone)
                   .join(Account).join(Asset).join(Zone)
                   .where(Record.id.in_(record_ids)).order_by(Record.id))
    logins = login_accounts({record.account.asset_id for record in records})
    login_secrets = {}
    unusable = [r for r in records if r.account.asset_id not in logins]
    if unusable:
        fail_without_login(unusable)
    try:
        for record in records:
            asset = record.account.asset
            if asset.id not in logins:
                continue
            if asset.id not in login_secrets:
                login_secrets[asset.id] = candidate_secrets(ctl, logins[asset.id])
            command = build_command(ctl, record, login_secrets[asset.id], logins[asset.id])
            publisher.publish(rotate_queue(asset.zone.name), ROTATE_ACTOR,
                              seal("rotate", command, ctl.channel(asset.zone)))
        publisher.commit()
        return len(records) - len(unusable)
    except Exception as exc:
        for ids in chunked(record_ids, 500):
            Record.update(status="pending").where(Record.id.in_(ids)).execute()
        raise KeyturnError(f"publishing stopped ({type(exc).__name__}); "
                           f"{len(record_ids)} records wait as pending for the dispatcher") from None


def fail_without_login(records: list[Record]) -> None:
    """Records whose asset lost its privileged account since planning fail at once, with a
    reason, through the normal results path (nothing was sent to any host)."""
    now = time.time()
    apply_results([RotateResult(record_id=r.id, attempt=r.attempt, zone=r.account.asset.zone.name,
                                worker_id="controller", status="failed", error_code="no_login",
                                error=f"{r.account.asset.name} has no privileged account to log in with",
                                started_at=now, finished_at=now) for r in records])


def candidate_secrets(ctl: Controller, login: Account) -> list[str]:
    """The login account's secrets to try: current, then pending (it may be in rotation too)."""
    candidates = [ctl.vault.decrypt(login.secret_current)]
    if login.secret_pending is not None:
        candidates.append(ctl.vault.decrypt(login.secret_pending))
    return candidates


def build_command(ctl: Controller, record: Record, login_secrets: list[str],
                  login: Account) -> RotateCommand:
    account, asset = record.account, record.account.asset
    new_secret = ctl.vault.decrypt(record.new_secret)
    if record.action == "verify":     # try the current secret, then the pending one
        secrets = {"candidates": [s for s in (ctl.vault.decrypt(record.old_secret), new_secret) if s]}
    else:
        secrets = {"new_secret": new_secret}
    return RotateCommand(
        action=record.action, record_id=record.id, attempt=record.attempt, zone=asset.zone.name,
        asset=AssetTarget(name=asset.name, address=asset.address, port=asset.port,
                          platform=asset.platform, host_key=asset.host_key,
                          trust_first_use=asset.zone.trust_first_use),
        login_username=login.username, login_secrets=login_secrets,
        username=account.username, secret_type=account.secret_type, **secrets,
        timeout=ctl.settings.ssh_timeout,
        valid_until=record.deadline.replace(tzinfo=timezone.utc).timestamp())
