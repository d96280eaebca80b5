"""Applying results (step 3 of the protocol), idempotently and in batches.

`success` promotes pending → current (current → previous); `failed` drops the pending secret,
which never reached the host; `unverified` keeps both candidates and the account stays busy until
a verify or restore settles it. A result for a record that has already ended changes nothing,
with one exception that protects secrets: a late `success` means the host now has the new secret,
so it is promoted even if the record had been given up.
"""
from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timezone

from controller.db import database
from controller.executions import finish_if_done, log
from controller.models import Account, Asset, Execution, Record, utcnow
from shared.messages import RotateResult

logger = logging.getLogger(__name__)
COUNTER = {"success": "succeeded", "failed": "failed", "unverified": "unverified"}


def apply_results(results: list[RotateResult]) -> int:
    """Apply a batch of results in one transaction; returns how many changed a record."""
    with database.atomic():
        records = {r.id: r for r in Record.select(Record, Account, Asset).join(Account).join(Asset)
                   .where(Record.id.in_([result.record_id for result in results]))}
        counts: dict[int, Counter] = {}
        applied = 0
        for result in results:
            record = records.get(result.record_id)
            if record is None:
                logger.warning("dropped a result for unknown record %s", result.record_id)
                continue
            changed = apply_one(record, result)
            if changed:
                applied += 1
                counts.setdefault(record.execution_id, Counter()).update(changed)
        for execution_id, counter in counts.items():
            bump_counts(execution_id, counter)
            finish_if_done(execution_id)
    return applied


def apply_one(record: Record, result: RotateResult) -> dict[str, int] | None:
    """Apply one result to its record and account; returns the counter changes, or None."""
    if record.action == "verify":
        return apply_verify(record, result)
    if record.status == "success" or (record.status in COUNTER and result.status != "success"):
        return None   # already ended: a redelivered or stale result changes nothing
    previous_status = record.status
    settle_record(record, result.status, result.error_code, result.error, result.worker_id,
                  _time(result.started_at), _time(result.finished_at))
    pin_host_key(record.account.asset, result.host_key)
    settle_account(record, result.status)
    changed = {COUNTER[result.status]: 1}
    if previous_status in COUNTER:   # a late success replaces a given-up outcome
        changed[COUNTER[previous_status]] = -1
    return changed


def apply_verify(record: Record, result: RotateResult) -> dict[str, int] | None:
    """Settle an account on the candidate that logs in: current (0) or pending (1)."""
    if record.status in COUNTER:
        return None
    pin_host_key(record.account.asset, result.host_key)
    found = result.working_index
    if result.status == "success" and found in (0, 1):
        settle_account(record, "success" if found == 1 else "failed")
        note = "the pending secret logs in: made current" if found == 1 else "the current secret logs in"
        settle_record(record, "success", None, None, result.worker_id)
        log(record.execution_id, f"record {record.id} ({record.account.username}@"
                                 f"{record.account.asset.name}): {note}")
        return {"succeeded": 1}
    error = result.error or "neither the current nor the pending secret logs in"
    settle_record(record, "failed", result.error_code or "no_candidate", error, result.worker_id)
    return {"failed": 1}


def settle_record(record: Record, status: str, error_code: str | None, error: str | None,
                  worker_id: str | None = None, started_at: datetime | None = None,
                  finished_at: datetime | None = None) -> None:
    record.status = status
    record.error_code = None if status == "success" else error_code
    record.error = None if status == "success" else error
    record.worker_id = worker_id or record.worker_id
    record.started_at = started_at or record.started_at
    record.finished_at = finished_at or utcnow()
    record.save(only=[Record.status, Record.error_code, Record.error, Record.worker_id,
                      Record.started_at, Record.finished_at])


def settle_account(record: Record, status: str) -> None:
    """Move the account's secret versions for a record that ended with `status`."""
    now = utcnow()
    ours = (Account.id == record.account_id) & (
        Account.busy_execution.is_null() | (Account.busy_execution == record.execution_id))
    if status == "success":
        (Account.update(secret_previous=Account.secret_current, previous_since=Account.current_since,
                        secret_current=record.new_secret, current_since=now,
                        secret_pending=None, pending_since=None, busy_execution=None)
         .where(ours).execute())
    elif status == "failed":
        (Account.update(secret_pending=None, pending_since=None, busy_execution=None)
         .where(ours).execute())
    # unverified: keep current and pending, and keep the account busy until it is settled


def pin_host_key(asset: Asset, host_key: str | None) -> None:
    """Pin the key a worker saw on first contact (only when none is pinned yet)."""
    if host_key and asset.host_key is None:
        Asset.update(host_key=host_key).where((Asset.id == asset.id) & Asset.host_key.is_null()).execute()
        asset.host_key = host_key


def bump_counts(execution_id: int, counter: Counter) -> None:
    changes = {getattr(Execution, field): getattr(Execution, field) + delta
               for field, delta in counter.items() if delta}
    if changes:
        Execution.update(changes).where(Execution.id == execution_id).execute()


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)
