"""Applying results (step 3 of the protocol), idempotently and in batches.

`success` promotes pending → current (current → previous); `failed` frees the account but keeps
the pending secret as a candidate (a copy of the command may still set it while it is valid);
`unverified` keeps both candidates and the account stays busy until a verify or restore settles
it. A result for a record that has already ended changes nothing, with one exception that
protects secrets: a late `success` means the host now has the new secret, so it is promoted even
if the record had been given up. A worker that found a command expired changed nothing: its
record goes back to `pending` for a fresh command.

A result is only as trusted as the zone key that opened it: one for a record of another zone's
asset is refused (dead-lettered by the consumer) and audited, never applied.

A batch costs a handful of statements whatever its size: records, accounts and counters are
each updated by one statement over the whole batch.

Several daemons (and a daemon's own consumer and housekeeping threads) settle records at once,
so a record is written only if it still has the status it was read with, and the counters and
accounts follow the rows that statement changed (`RETURNING`), never a separate read: a
duplicate applied by two daemons counts once, and a success is never overwritten by a reaper
that read the record before it arrived.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timezone
from typing import NamedTuple

from peewee import Cast, ValuesList

from controller.audit import audit
from controller.db import database, id_in, is_postgres, lock_rows
from controller.events import record_events
from controller.executions import Line, finish_if_done, one_line, record_name, write_lines
from controller.models import Account, Asset, Execution, Record, Zone, utcnow
from shared.messages import RotateResult
from shared.platforms import platform

logger = logging.getLogger(__name__)
COUNTER = {"success": "succeeded", "failed": "failed", "unverified": "unverified"}


class Outcome(NamedTuple):
    """How one record ended (what `settle_records` writes), if it still has status `expected`."""

    record_id: int
    expected: str
    status: str
    error_code: str | None
    error: str | None
    worker_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Change(NamedTuple):
    """What one result does: the record's outcome, what its account gets if that outcome is
    written (`settle_accounts`'s status, or None), and a line for the execution log then."""

    outcome: Outcome
    account: str | None = None
    line: str | None = None
    level: str = "info"


class Settled(NamedTuple):
    """A record an outcome was written to: its execution, and its status before and after."""

    record_id: int
    execution_id: int
    was: str
    status: str


class Applied(NamedTuple):
    changed: int                 # results that changed a record
    refused: dict[int, str]      # index in the batch -> why it was not applied (dead-letter it)


def apply_results(results: list[RotateResult]) -> int:
    """Apply a batch of results; returns how many changed a record."""
    return apply_result_batch(results).changed


def apply_result_batch(results: list[RotateResult]) -> Applied:
    """Apply a batch of results in one transaction."""
    with database.atomic():
        lock_rows(Record, [result.record_id for result in results])
        records = {r.id: r for r in Record.select(
            Record.id, Record.status, Record.action, Record.attempt, Record.account, Record.execution,
            Record.dispatched_at, Record.old_secret, Record.new_secret, Asset.id.alias("asset_id"),
            Asset.host_key, Asset.platform, Account.username, Account.secret_type,
            Asset.name.alias("asset"), Zone.name.alias("zone"))
            .join(Account).join(Asset).join(Zone)
            .where(id_in(Record.id, [result.record_id for result in results])).objects()}
        changes: dict[int, Change] = {}      # record id -> its last change in this batch
        pins, again, refused, refusals = {}, [], {}, {}
        for index, result in enumerate(results):
            record = records.get(result.record_id)
            if record is None:
                logger.warning("dropped a result for unknown record %s", result.record_id,
                               extra={"record": result.record_id})
                continue
            if record.zone != result.zone:
                refused[index] = refuse_foreign(record, result)
                continue
            if (result.host_key and record.host_key is None
                    and platform(record.platform).host_keys):   # SSH platforms only
                pins.setdefault(record.asset_id, result.host_key)
            if result.refusal_seen:
                refusals.setdefault(record.asset_id, {})[record.secret_type] = time.time()
            if result.error_code == "expired":     # nothing was changed: never an outcome
                if expired_now(record, result):
                    again.append(record.id)
                    record.status = "pending"
                continue
            change = (verify_change(record, result) if record.action == "verify"
                      else rotation_change(record, result))
            if change is not None:
                first = changes.get(record.id)   # a duplicate in the batch: one write, from the first status
                changes[record.id] = change._replace(outcome=change.outcome._replace(
                    expected=first.outcome.expected)) if first else change
                record.status = change.outcome.status   # a duplicate later in the batch is stale
        redispatch(again)
        settled = settle_records([change.outcome for change in changes.values()])
        for status in ("success", "failed"):
            settle_accounts([s.record_id for s in settled
                             if changes[s.record_id].account == status], status)
        for asset_id, host_key in pins.items():
            pin_host_key(asset_id, host_key)
        remember_refusals(refusals)
        write_lines([Line(s.execution_id, changes[s.record_id].line, changes[s.record_id].level,
                          s.record_id) for s in settled if changes[s.record_id].line])
        count_settled(settled)
    return Applied(len(settled), refused)


def refuse_foreign(record, message, kind: str = "result") -> str:
    """A zone's key spoke for a record of another zone (a result, or a `progress`): audit it,
    apply nothing."""
    reason = (f"a {kind} sealed by zone {message.zone} for record {record.id}, whose asset "
              f"{record.asset} is in zone {record.zone}: refused")
    logger.error("%s (worker %s)", reason, message.worker_id, extra={"record": record.id})
    audit(f"{kind}.refused", f"record/{record.id}", reason, actor=f"zone:{message.zone}",
          refused=True)
    return reason


def expired_now(record, result: RotateResult) -> bool:
    """Did a worker find the command *now* in flight for this record expired? (It changed
    nothing.) A copy of an earlier dispatch, valid until before the current one was sent,
    says nothing about the current one."""
    return (result.status == "failed" and result.expired_not_after is not None
            and record.status == "dispatched"
            and record.action == "rotate" and result.attempt == record.attempt
            and result.expired_not_after >= _epoch(record.dispatched_at))


def redispatch(record_ids: list[int]) -> None:
    """Expired commands: the dispatcher sends their records again with a fresh validity."""
    if record_ids:    # picked up afresh: its next "picked up" and "silent" lines are new ones
        Record.update(status="pending", started_at=None, silent_at=None).where(
            id_in(Record.id, record_ids) & (Record.status == "dispatched")).execute()


def rotation_change(record, result: RotateResult) -> Change | None:
    """What a rotation result does to its record and account (None: nothing)."""
    if record.status == "success" or (record.status in COUNTER and result.status != "success"):
        return None   # already ended: a redelivered or stale result changes nothing
    if result.attempt < record.attempt and result.status != "success":
        return None   # an earlier dispatch's failure says nothing about the one now in flight
    success = result.status == "success"
    outcome = Outcome(record.id, record.status, result.status,
                      None if success else result.error_code, None if success else result.error,
                      result.worker_id, _time(result.started_at), _time(result.finished_at))
    line, level = outcome_line(record, result)
    return Change(outcome, result.status if result.status in ("success", "failed") else None,
                  line, level)


def outcome_line(record, result: RotateResult) -> tuple[str, str]:
    """The log line of a rotation's end and its level: changed and proven, or why not (the
    error code and the worker's scrubbed message, as one bounded line)."""
    name = record_name(record.id, record.username, record.asset)
    note = f": {one_line(result.note)}" if result.note else ""
    by = f"worker {one_line(result.worker_id, 255)}"
    if result.status == "success":
        kind = "password" if record.secret_type == "password" else "key"
        return f"{name}: changed and proven by {by} (the new {kind} logs in){note}", "info"
    reason = f"{result.error_code or 'error'}: {one_line(result.error or 'no reason given')}"
    return f"{name}: {result.status} ({reason}; {by}){note}", (
        "error" if result.status == "failed" else "warning")


def verify_candidates(current, pending) -> list:
    """What a verify tries, in order: the current secret, then the pending one (those known);
    dispatch builds the command with it and `apply_verify` maps the working index back."""
    return [secret for secret in (current, pending) if secret is not None]


def verify_change(record, result: RotateResult) -> Change | None:
    """Settle an account on the candidate that logs in: current (0) or pending (1)."""
    if record.status in COUNTER:
        return None
    tried = verify_candidates(record.old_secret and "current", record.new_secret and "pending")
    found = tried[result.working_index] if result.working_index is not None else None
    if result.status == "success" and found is not None:
        line = (f"record {record.id} ({record.username}@{record.asset}): the {found} secret "
                f"logs in" + (": made current" if found == "pending" else ""))
        return Change(Outcome(record.id, record.status, "success", None, None, result.worker_id),
                      "success" if found == "pending" else "failed", line)
    error = result.error or "neither the current nor the pending secret logs in"
    code = result.error_code or "no_candidate"
    line = (f"{record_name(record.id, record.username, record.asset)}: verify failed ({code}: "
            f"{one_line(error)})")
    return Change(Outcome(record.id, record.status, "failed", code, error, result.worker_id),
                  None, line, "error")


def settle_records(outcomes: list[Outcome]) -> list[Settled]:
    """Write how records ended, in one statement, each only while it has the status its outcome
    expects; returns the records written (one outcome per record)."""
    if not outcomes:
        return []
    expected = {o.record_id: o.expected for o in outcomes}
    values = ValuesList([tuple(o) for o in outcomes], alias="v").cte("outcome", columns=Outcome._fields)
    written = (Record.update(status=values.c.status, error_code=values.c.error_code,
                             error=values.c.error, worker_id=values.c.worker_id,
                             started_at=as_timestamp(values.c.started_at),
                             finished_at=as_timestamp(values.c.finished_at))
               .with_cte(values).from_(values)
               .where((Record.id == values.c.record_id) & (Record.status == values.c.expected))
               .returning(Record.id, Record.execution, Record.status).execute())
    settled = [Settled(row.id, row.execution_id, expected[row.id], row.status) for row in written]
    # Outcomes without times (the reaper's, an operator's) end now.
    ids = [s.record_id for s in settled]
    Record.update(finished_at=utcnow()).where(id_in(Record.id, ids) & Record.finished_at.is_null()).execute()
    record_events(ids)
    return settled


def count_settled(settled: list[Settled]) -> None:
    """Move each execution's counters by the records written, and end those that are done."""
    counts: dict[int, Counter] = {}
    for s in settled:
        counter = counts.setdefault(s.execution_id, Counter())
        counter[COUNTER[s.status]] += 1
        if s.was in COUNTER:    # a late success replaces a given-up outcome
            counter[COUNTER[s.was]] -= 1
    for execution_id, counter in sorted(counts.items()):   # in one order, as `lock_rows`
        bump_counts(execution_id, counter)
        finish_if_done(execution_id)


def settle_accounts(record_ids: list[int], status: str) -> None:
    """Move the secret versions of the records' accounts, unless a newer rotation holds them."""
    if not record_ids:
        return
    ours = ((Record.account == Account.id) & id_in(Record.id, record_ids)
            & (Account.busy_execution.is_null() | (Account.busy_execution == Record.execution)))
    if status == "success":
        changes = {Account.secret_previous: Account.secret_current,
                   Account.previous_since: Account.current_since,
                   Account.secret_current: Record.new_secret, Account.current_since: utcnow(),
                   Account.secret_pending: None, Account.pending_since: None}
    elif status == "failed":
        changes = {}   # the pending secret stays a candidate: a valid copy may still set it
    else:
        return   # unverified: keep current and pending, and keep the account busy until settled
    changes[Account.busy_execution] = None
    Account.update(changes).from_(Record).where(ours).execute()


def as_timestamp(column):
    """PostgreSQL types a VALUES column of NULLs as text; SQLite must not cast (its `timestamp`
    cast is numeric)."""
    return Cast(column, "timestamp") if is_postgres() else column


def remember_refusals(seen: dict[int, dict[str, float]]) -> None:
    """Workers saw these assets refuse a wrong secret (by secret type; when, by the controller's
    clock): the next commands for them say so, and their workers skip that check
    (`RotateCommand.refusal_known`)."""
    for asset in Asset.select(Asset.id, Asset.refusals).where(id_in(Asset.id, list(seen))):
        Asset.update(refusals=(asset.refusals or {}) | seen[asset.id]).where(
            Asset.id == asset.id).execute()


def pin_host_key(asset_id: int, host_key: str) -> None:
    """Pin the key a worker saw on first contact (only when none is pinned yet)."""
    Asset.update(host_key=host_key).where((Asset.id == asset_id) & Asset.host_key.is_null()).execute()


def bump_counts(execution_id: int, counter: Counter) -> None:
    changes = {getattr(Execution, field): getattr(Execution, field) + delta
               for field, delta in counter.items() if delta}
    if changes:
        Execution.update(changes).where(Execution.id == execution_id).execute()


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)
