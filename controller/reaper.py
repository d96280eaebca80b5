"""The reaper (step 5 of the protocol): dispatched records with no result past their deadline
are dispatched again with the same new secret, and after the last attempt marked `unverified`."""
from __future__ import annotations

from controller.db import database, lock_rows
from controller.executions import Line, record_name, write_lines
from controller.models import Account, Asset, Record, Zone, utcnow
from controller.results import Outcome, count_settled, settle_records
from controller.runtime import Controller
from shared.broker import ready_messages, rotate_queue


def reap(ctl: Controller) -> tuple[int, int]:
    """Re-queue or give up overdue records; returns (re-queued, given up).

    A record is overdue when it has had no result for `rotation_deadline` seconds and its zone's
    queue holds no waiting message (else it may just be waiting its turn). A second dispatch is
    safe: the first command has expired by the deadline, so it can no longer change anything,
    and a repeated message proves the host still has the old secret before it changes it."""
    late = list(Record.select(Record, Account, Asset, Zone).join(Account).join(Asset).join(Zone)
                .where((Record.status == "dispatched") & (Record.deadline < utcnow())))
    zones = {record.account.asset.zone.name for record in late}
    waiting = {zone for zone in zones if ready_messages(ctl.broker, rotate_queue(zone))}
    overdue = [record for record in late if record.account.asset.zone.name not in waiting]
    requeued, gave_up, lines = 0, [], []
    attempts = ctl.settings.max_dispatch_attempts
    with database.atomic():
        lock_rows(Record, [record.id for record in overdue])
        for record in overdue:
            if record.attempt < attempts:
                # As read: another daemon's reaper may have re-queued it, and the dispatcher
                # sent it again, since. Its next pick-up and silence are new ones.
                again = (Record.update(status="pending", attempt=Record.attempt + 1,
                                       started_at=None, silent_at=None)
                         .where((Record.id == record.id) & (Record.status == "dispatched")
                                & (Record.attempt == record.attempt)).execute())
                requeued += again
                if again:
                    lines.append(Line(record.execution_id, f"{name_of(record)}: no result by "
                                      f"its deadline; dispatched again (attempt "
                                      f"{record.attempt + 1} of {attempts})", "warning", record.id))
            else:
                gave_up.append(Outcome(record.id, "dispatched", "unverified", "no_result",
                                       f"no result after {record.attempt} attempts; both "
                                       f"candidate secrets are kept until verify or restore "
                                       f"settles the account"))
        settled = settle_records(gave_up)     # not a record whose result arrived meanwhile
        by_id = {record.id: record for record in overdue}
        lines += [Line(s.execution_id, f"{name_of(by_id[s.record_id])}: no result after "
                                       f"{by_id[s.record_id].attempt} attempts; given up as "
                                       f"unverified (both candidate secrets kept)", "warning",
                       s.record_id) for s in settled]
        write_lines(lines)
        count_settled(settled)
    return requeued, len(settled)


def name_of(record: Record) -> str:
    return record_name(record.id, record.account.username, record.account.asset.name)
