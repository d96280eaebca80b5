"""Publishing records: claim pending records, seal one command per account to its zone and
publish it to `rotate.<zone>`. The one path for the CLI, the daemon's dispatcher and the reaper."""
from __future__ import annotations

import time
from datetime import timedelta

from peewee import JOIN, chunked

from controller.db import id_in
from controller.models import Account, Asset, Execution, Plan, Record, Zone, utcnow
from controller.planning import login_accounts
from controller.results import apply_results, verify_candidates
from controller.runtime import Controller
from shared.broker import ROTATE_ACTOR, BatchPublisher, rotate_queue
from shared.errors import KeyturnError
from shared.messages import AssetTarget, Params, RotateCommand, RotateResult, seal

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
    batch = (Record.select(Record.id).where(condition & (Record.status == "pending"))
             .order_by(Record.id).limit(BATCH))
    query = (Record.update(status="dispatched", dispatched_at=now,
                           deadline=now + timedelta(seconds=ctl.settings.rotation_deadline))
             .where(Record.id.in_(batch) & (Record.status == "pending")).returning(Record.id))
    return [row.id for row in query.execute()]


def claimed_rows(record_ids: list[int]) -> list:
    """What a command needs of each record, as plain rows (no model objects on the hot path)."""
    return list(Record.select(
        Record.id, Record.attempt, Record.action, Record.old_secret, Record.new_secret,
        Account.username, Account.secret_type, Asset.id.alias("asset_id"),
        Asset.name.alias("asset_name"), Asset.address, Asset.port, Asset.platform,
        Asset.host_key, Zone.name.alias("zone"), Zone.public_key, Zone.trust_first_use,
        Plan.params, Plan.ssh_timeout)
        .join(Account).join(Asset).join(Zone)
        .switch(Record).join(Execution).join(Plan, JOIN.LEFT_OUTER)
        .where(id_in(Record.id, record_ids)).order_by(Record.id).namedtuples())


def publish_records(ctl: Controller, record_ids: list[int], publisher: BatchPublisher) -> int:
    """Publish claimed records as one batch; if the bus fails they all go back to pending
    (a message that did get through is harmless twice: it carries the same new secret)."""
    rows = claimed_rows(record_ids)
    logins = login_accounts({row.asset_id for row in rows})
    roots = root_secrets(ctl, {row.asset_id for row in rows if (row.params or {}).get("become") == "su"})
    unusable = [row.id for row in rows if row.asset_id not in logins]
    if unusable:
        fail_without_login(unusable)
    login_secrets = {}
    try:
        for row in rows:
            login = logins.get(row.asset_id)
            if login is None:
                continue
            if row.asset_id not in login_secrets:
                login_secrets[row.asset_id] = candidate_secrets(ctl, login)
            command = build_command(ctl, row, login, login_secrets[row.asset_id],
                                    roots.get(row.asset_id))
            publisher.publish(rotate_queue(row.zone), ROTATE_ACTOR,
                              seal("rotate", command, ctl.channel(row.zone, row.public_key)))
        publisher.commit()
        return len(rows) - len(unusable)
    except Exception as exc:
        for ids in chunked(record_ids, 1000):
            Record.update(status="pending").where(id_in(Record.id, ids)).execute()
        raise KeyturnError(f"publishing stopped ({type(exc).__name__}); "
                           f"{len(record_ids)} records wait as pending for the dispatcher") from None


def fail_without_login(record_ids: list[int]) -> None:
    """Records whose asset lost its privileged account since planning fail at once, with a
    reason, through the normal results path (nothing was sent to any host)."""
    now = time.time()
    apply_results([RotateResult(record_id=r.id, attempt=r.attempt, zone=r.account.asset.zone.name,
                                worker_id="controller", status="failed", error_code="no_login",
                                error=f"{r.account.asset.name} has no privileged account to log in with",
                                started_at=now, finished_at=now)
                   for r in Record.select().where(id_in(Record.id, record_ids))])


def candidate_secrets(ctl: Controller, login: Account) -> list[str]:
    """The login account's secrets to try: current, then pending (it may be in rotation too)."""
    candidates = [ctl.vault.decrypt(login.secret_current)]
    if login.secret_pending is not None:
        candidates.append(ctl.vault.decrypt(login.secret_pending))
    return candidates


def root_secrets(ctl: Controller, asset_ids: set[int]) -> dict[int, str]:
    """Root's current password on assets whose plan becomes root with `su`."""
    if not asset_ids:
        return {}
    return {a.asset_id: ctl.vault.decrypt(a.secret_current) for a in Account.select().where(
        id_in(Account.asset, sorted(asset_ids)) & (Account.username == "root"))}


def build_command(ctl: Controller, row, login: Account, login_secrets: list[str],
                  root_secret: str | None) -> RotateCommand:
    old_secret, new_secret = ctl.vault.decrypt(row.old_secret), ctl.vault.decrypt(row.new_secret)
    if row.action == "verify":
        secrets = {"candidates": verify_candidates(old_secret, new_secret)}
    else:
        secrets = {"new_secret": new_secret, "old_secret": old_secret}
    return RotateCommand(
        action=row.action, record_id=row.id, attempt=row.attempt, zone=row.zone,
        asset=AssetTarget(name=row.asset_name, address=row.address, port=row.port,
                          platform=row.platform, host_key=row.host_key,
                          trust_first_use=row.trust_first_use),
        login_username=login.username, login_secrets=login_secrets,
        login_secret_type=login.secret_type,
        username=row.username, secret_type=row.secret_type, **secrets,
        params=Params(**(row.params or {}), become_secret=root_secret),
        timeout=row.ssh_timeout or ctl.settings.ssh_timeout)

