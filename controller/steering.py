"""Changing an execution's course: the daemon's turn (a wave that ended opens the next one, or
trips the failure brake; a maintenance window that closed pauses the execution and its next
one resumes it) and the operator's pause, resume and cancel (CLI, console, API; audited).

Several daemons and operators may decide at once, so every change is a conditional UPDATE
from the state it was decided on (compare-and-set): of two daemons opening the same wave one
matches the row, and the brake racing an operator's pause makes one pause. Nothing in flight
is dropped: pausing and cancelling only hold back records not yet dispatched, and a record
already sent settles normally whatever its execution's state."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

from peewee import JOIN, fn

from controller.audit import audit as write_audit
from controller.db import database, id_in
from controller.events import execution_event, execution_paused
from controller.executions import finish_if_done, log
from controller.gates import window_open, windows
from controller.models import IN_FLIGHT, Account, Execution, Record, utcnow
from controller.rollout import brake_exceeded
from controller.runtime import Controller
from shared.errors import KeyturnError
from shared.words import plural

CODES_SAID = 3      # failure codes a brake's reason names


def steer(ctl: Controller, now: datetime) -> None:
    """One turn of the daemon's housekeeping, at `now` (naive UTC; the windows' clock)."""
    for execution in list(Execution.select().where(
            Execution.status.in_(("running", "paused")) & Execution.rollout.is_null(False))):
        if execution.status == "running":
            if not window_open(ctl, execution.rollout, now):
                hold(execution, "window", window_reason(ctl, execution, now), "running")
            else:
                advance(execution)
        elif execution.paused_by == "window" and window_open(ctl, execution.rollout, now):
            if reopen(execution, "paused", "window"):
                log(execution.id, "maintenance window open: dispatching again")


def advance(execution: Execution) -> bool:
    """Open the next wave once the current one has ended, unless its failures exceed the
    brake, which pauses the execution instead; True if this call changed it."""
    counts = (execution.rollout or {}).get("waves") or []
    wave = execution.wave
    if not 0 < wave < len(counts):
        return False
    if Record.select().where((Record.execution == execution.id) & (Record.wave <= wave)
                             & Record.status.in_(IN_FLIGHT)).exists():
        return False
    size, failed, codes = wave_outcome(execution.id, wave)
    brake = execution.rollout.get("max_failures", "0")
    if brake_exceeded(brake, failed, size):
        share = f"{failed * 100 / size:.0f}%" if size else "0%"
        reason = (f"wave {wave}: {failed} of {size} failed or unverified ({share}) > {brake}: "
                  f"{codes}; resume to go on with wave {wave + 1}, or cancel")
        return hold(execution, "brake", reason, "running", wave=wave)
    opened = (Execution.update(wave=wave + 1)
              .where((Execution.id == execution.id) & (Execution.status == "running")
                     & (Execution.wave == wave)).execute())
    if opened:
        log(execution.id, f"wave {wave} ended ({failed} of {size} failed or unverified, brake "
                          f"{brake}): wave {wave + 1} of {len(counts)} opened "
                          f"({plural(counts[wave] - counts[wave - 1], 'account')})")
    return bool(opened)


def wave_outcome(execution_id: int, wave: int) -> tuple[int, int, str]:
    """A wave's size, how many of its records failed or are unverified, and their main error
    codes in words (`login_failed on 3 hosts, policy_refused on 1 host`)."""
    rows = list(Record.select(Record.status, Record.error_code, Account.asset)
                .join(Account, JOIN.LEFT_OUTER).where((Record.execution == execution_id) & (Record.wave == wave))
                .tuples())
    bad = [(code or status, asset) for status, code, asset in rows
           if status in ("failed", "unverified")]
    hosts = {code: len({asset for c, asset in bad if c == code}) for code, _ in bad}
    ranked = Counter(code for code, _ in bad).most_common()
    said = [f"{code} on {plural(hosts[code], 'host')}" for code, _ in ranked[:CODES_SAID]]
    if len(ranked) > CODES_SAID:
        said.append(f"{plural(len(ranked) - CODES_SAID, 'other code')}")
    return len(rows), len(bad), ", ".join(said) or "no failure"


def window_reason(ctl: Controller, execution: Execution, now: datetime) -> str:
    text = execution.rollout["window"]
    opens = windows(text).next_open(now, ctl.settings.tz)
    return (f"outside its maintenance window ({text}, {ctl.settings.tz}): resumes by itself at "
            f"{opens:%Y-%m-%d %H:%M} UTC")


def hold(execution: Execution, by: str, reason: str, expected: str, *,
         wave: int | None = None, paused_by: str | None = None) -> bool:
    """Pause an execution in state `expected` (and `wave`, `paused_by` when given), saying why:
    its log, the `execution.paused` event, and for the brake the result mail; True if this
    call paused it."""
    condition = (Execution.id == execution.id) & (Execution.status == expected)
    if wave is not None:
        condition &= Execution.wave == wave
    if paused_by is not None:
        condition &= Execution.paused_by == paused_by
    with database.atomic():
        rows = list(Execution.update(status="paused", paused_by=by, pause_reason=reason)
                    .where(condition).returning(Execution).execute())
        if rows:
            execution_paused(rows[0])
            log(execution.id, f"paused ({by}): {reason}", "warning" if by == "brake" else "info")
    return bool(rows)


def reopen(execution: Execution, expected: str, paused_by: str, *,
           next_wave: bool = False) -> bool:
    """Back to running from a pause by `paused_by`; True if this call did it."""
    changes = {Execution.status: "running", Execution.paused_by: None,
               Execution.pause_reason: None, Execution.notified_at: None}
    if next_wave:
        changes[Execution.wave] = Execution.wave + 1
    resumed = (Execution.update(changes)
               .where((Execution.id == execution.id) & (Execution.status == expected)
                      & (Execution.paused_by == paused_by)).execute())
    if resumed:
        finish_if_done(execution.id)     # what was in flight may all have ended meanwhile
    return bool(resumed)


def wait_for_window(execution: Execution, reason: str, *, next_wave: bool) -> bool:
    """A paused execution resumed outside its window: paused by the window from now on."""
    changes = {Execution.paused_by: "window", Execution.pause_reason: reason,
               Execution.notified_at: None}
    if next_wave:
        changes[Execution.wave] = Execution.wave + 1
    return bool(Execution.update(changes).where(
        (Execution.id == execution.id) & (Execution.status == "paused")
        & (Execution.paused_by == execution.paused_by)).execute())


# ---- the operator's actions -------------------------------------------------------------

def found(execution_id: int) -> Execution:
    execution = Execution.get_or_none(Execution.id == execution_id)
    if execution is None:
        raise KeyturnError("no execution %(id)s", id=execution_id)
    return execution


def audit(actor: str, action: str, execution: Execution, detail: str) -> None:
    write_audit(action, f"execution/{execution.id}", detail, actor=actor)


def pause_execution(execution_id: int, actor: str) -> Execution:
    """Stop dispatching an execution's records (those in flight finish); it waits for resume.
    One paused by its window stays paused when the window reopens."""
    execution = found(execution_id)
    reason = f"paused by {actor}"
    done = (hold(execution, "operator", reason, "running")
            or hold(execution, "operator", reason, "paused", paused_by="window"))
    if not done:
        raise KeyturnError("execution %(id)s is %(state)s: only a running execution pauses",
                           id=execution_id, state=state(execution))
    audit(actor, "execution.pause", execution, reason)
    return found(execution_id)


def resume_execution(ctl: Controller, execution_id: int, actor: str,
                     now: datetime | None = None) -> Execution:
    """Dispatch a paused execution's records again: after the brake, from the next wave on."""
    execution = found(execution_id)
    if execution.status != "paused":
        raise KeyturnError("execution %(id)s is %(state)s: only a paused execution resumes",
                           id=execution_id, state=state(execution))
    brake = execution.paused_by == "brake"
    now = now or utcnow()
    if window_open(ctl, execution.rollout, now):
        done = reopen(execution, "paused", execution.paused_by, next_wave=brake)
        detail = f"resumed by {actor}"
    else:    # it goes on by itself when its window opens
        done = wait_for_window(execution, window_reason(ctl, execution, now), next_wave=brake)
        detail = f"resumed by {actor}, waiting for its window"
    if not done:
        raise KeyturnError("execution %(id)s changed meanwhile: look again", id=execution_id)
    detail += f": wave {execution.wave + 1} opened" if brake else ""
    log(execution.id, detail)
    audit(actor, "execution.resume", execution, detail)
    return found(execution_id)


def cancel_execution(execution_id: int, actor: str) -> Execution:
    """End an execution: its records not yet dispatched become `cancelled` and their accounts
    are free again; those in flight settle as they come."""
    execution = found(execution_id)
    now = utcnow()
    with database.atomic():
        ended = (Execution.update(status="cancelled", finished_at=now, paused_by=None,
                                  pause_reason=None)
                 .where((Execution.id == execution_id)
                        & Execution.status.in_(("running", "paused"))).execute())
        if not ended:
            raise KeyturnError("execution %(id)s is %(state)s: only a running or paused execution "
                               "is cancelled", id=execution_id, state=state(execution))
        cancelled = list(Record.update(status="cancelled", error_code="cancelled",
                                       error=f"cancelled by {actor} before it was sent",
                                       finished_at=now)
                         .where((Record.execution == execution_id) & (Record.status == "pending"))
                         .returning(Record.id, Record.account, Record.dispatched_at).execute())
        release_accounts(execution_id, cancelled)
        in_flight = Record.select().where((Record.execution == execution_id)
                                          & (Record.status == "dispatched")).count()
        detail = (f"cancelled by {actor}: {plural(len(cancelled), 'record')} not sent, "
                  f"{in_flight} in flight settle as they come")
        log(execution_id, detail, "warning")
        audit(actor, "execution.cancel", execution, detail)
        execution_event(found(execution_id))
    return found(execution_id)


def release_accounts(execution_id: int, cancelled: list) -> None:
    """Free the accounts of cancelled records. A record never sent leaves no candidate: its
    pending secret goes. One sent before (then put back to pending) keeps it, as a failure
    does: a copy of that command may still set it while it is valid."""
    never_sent = [r.account_id for r in cancelled if r.dispatched_at is None]
    sent = [r.account_id for r in cancelled if r.dispatched_at is not None]
    ours = Account.busy_execution == execution_id
    if never_sent:
        Account.update(busy_execution=None, secret_pending=None, pending_since=None).where(
            id_in(Account.id, never_sent) & ours).execute()
    if sent:
        Account.update(busy_execution=None).where(id_in(Account.id, sent) & ours).execute()


def state(execution: Execution) -> str:
    return execution.status + (f" ({execution.paused_by})" if execution.paused_by else "")


def cancelled_count(execution_id: int) -> int:
    return (Record.select(fn.COUNT(Record.id))
            .where((Record.execution == execution_id) & (Record.status == "cancelled")).scalar())
