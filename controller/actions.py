"""Operator actions on records: retry, ignore, restore. Shared by the CLI, console and API."""
from __future__ import annotations

from peewee import fn

from controller.audit import audit
from controller.db import database
from controller.events import execution_started
from controller.executions import finish_if_done, log, log_many
from controller.models import Account, Asset, Execution, Record
from controller.planning import BUSY, Target, create_records
from controller.results import settle_accounts
from controller.runtime import Controller
from shared.errors import KeyturnError
from shared.words import plural

RETRYABLE = ("failed", "unverified")
AUDIT_NAMED = 10           # accounts a verify's audit row names (the execution has them all)


def superseded():
    """True for a record whose account has a later record (a retry, a verify, another run):
    retrying it would set an older intent over what came since, so only the latest record of
    an account is retried."""
    later = Record.alias()
    return fn.EXISTS(later.select(later.id).where((later.account == Record.account)
                                                  & (later.id > Record.id)))


def retry_records(ctl: Controller, record_ids: list[int], started_by: str) -> Execution:
    """A new execution (trigger `retry`) that sets the same new secrets again, linked to the
    originals. Accounts busy in another rotation are skipped and listed in its log."""
    found = list(Record.select(Record, Account, Asset, Execution, superseded().alias("later"))
                 .join(Account).join(Asset).switch(Record).join(Execution)
                 .where(Record.id.in_(record_ids)))
    missing = sorted(set(record_ids) - {r.id for r in found})
    if missing:
        raise KeyturnError(f"no record {', '.join(map(str, missing))}")
    originals = [r for r in found if r.status in RETRYABLE and not r.later]
    if not originals:
        raise KeyturnError("nothing to retry: " + (
            "only failed or unverified records can be retried"
            if not any(r.status in RETRYABLE for r in found)
            else "each was retried already, or its account has a later record (retry that one)"))
    first = originals[0].execution
    with database.atomic():
        execution = Execution.create(plan=first.plan_id, plan_name=first.plan_name, trigger="retry",
                                     retry_of=first.id, started_by=started_by)
        chosen = create_records(ctl, execution,
                                [Target(r.account, ctl.vault.decrypt(r.new_secret)) for r in originals],
                                take_over=True, retry_of={r.account_id: r.id for r in originals})
        held = {target.account.id for target in chosen}
        notes = [f"retry of {plural(len(originals), 'record')} from execution {first.id}"]
        notes += [f"skipped {r.account.username}@{r.account.asset.name}: {BUSY}"
                  for r in originals if r.account_id not in held]
        execution.total = len(chosen)
        execution.skipped = len(originals) - len(chosen)
        execution.save()
        execution_started(execution)
        log_many(execution.id, notes)
        finish_if_done(execution.id)   # every account skipped: it ends at once
        audit("record.retry", f"execution/{execution.id}",
              f"records {', '.join(str(r.id) for r in originals)} of execution {first.id}",
              actor=started_by)
    return execution


def retryable(execution_id: int):
    """The ids of an execution's failed and unverified records that are still their
    accounts' latest (a query)."""
    return Record.select(Record.id).where((Record.execution == execution_id)
                                          & Record.status.in_(RETRYABLE) & ~superseded())


def retry_failed(ctl: Controller, execution_id: int, started_by: str) -> Execution:
    if not Execution.select().where(Execution.id == execution_id).exists():
        raise KeyturnError(f"no execution {execution_id}")
    ids = [r for (r,) in retryable(execution_id).tuples()]
    if not ids:
        raise KeyturnError(f"nothing to retry: execution {execution_id} has no failed or "
                           "unverified record that was not retried already")
    return retry_records(ctl, ids, started_by)


def verify_accounts(ctl: Controller, accounts: list[Account], started_by: str) -> Execution:
    """Ask the zone's worker which of an account's candidate secrets (current, pending) logs
    in, and settle the account on it. Accounts in an active rotation are skipped."""
    with database.atomic():
        execution = Execution.create(plan_name="verify", trigger="verify", started_by=started_by)
        chosen = create_records(ctl, execution,
                                [Target(a, ctl.vault.decrypt(a.secret_pending)) for a in accounts],
                                take_over=True, action="verify")
        held = {target.account.id for target in chosen}
        execution.total = len(chosen)
        execution.skipped = len(accounts) - len(chosen)
        execution.save()
        execution_started(execution)
        log_many(execution.id, [f"verify {plural(len(chosen), 'account')}"] + [
            f"skipped {a.username}: in an active rotation" for a in accounts if a.id not in held])
        finish_if_done(execution.id)
        audit("account.verify", f"execution/{execution.id}",
              plural(len(accounts), "account") + ": " + ", ".join(
                  f"{a.username}@{a.asset.name}" for a in accounts[:AUDIT_NAMED])
              + (" …" if len(accounts) > AUDIT_NAMED else ""), actor=started_by)
    return execution


def unverified_accounts(execution_id: int) -> list[Account]:
    return list(Account.select(Account, Asset).join(Asset).switch(Account).join(
        Record, on=(Record.account == Account.id)).where(
        (Record.execution == execution_id) & (Record.status == "unverified")))


def ignore_record(record_id: int, actor: str) -> None:
    """Drop a failure from the overview's failed list (audited)."""
    updated = Record.update(ignored=True).where(
        (Record.id == record_id) & Record.status.in_(RETRYABLE)).execute()
    if not updated:
        raise KeyturnError(f"record {record_id} is not a failed or unverified record")
    audit("record.ignore", f"record/{record_id}", actor=actor)


def restore_record(record_id: int, actor: str) -> None:
    """Make an unverified record's new secret the account's current one (admin, audited),
    once: the record is claimed by a conditional update, so two admins restoring it at the
    same moment (two consoles) move the secret versions once, and the previous secret stays
    the one the host had before."""
    with database.atomic():
        claimed = list(Record.update(error_code="restored",
                                     error=f"new secret made current by {actor}")
                       .where((Record.id == record_id) & (Record.status == "unverified")
                              & (Record.error_code.is_null() | (Record.error_code != "restored")))
                       .returning(Record.execution).execute())
        if not claimed:
            raise KeyturnError(f"record {record_id} is not unverified, or was restored already")
        settle_accounts([record_id], "success")
        audit("record.restore", f"record/{record_id}", "its new secret made current", actor=actor)
        log(claimed[0].execution_id, f"record {record_id}: new secret made current by {actor}")
