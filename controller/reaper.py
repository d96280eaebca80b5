"""The reaper (step 5 of the protocol): dispatched records with no result past their deadline
are dispatched again with the same new secret, and after the last attempt marked `unverified`."""
from __future__ import annotations

from collections import Counter

from controller.db import database
from controller.executions import finish_if_done, log
from controller.models import Account, Asset, Record, Zone, utcnow
from controller.results import Outcome, bump_counts, settle_records
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
    requeued, given_up = 0, Counter()
    with database.atomic():
        for record in overdue:
            if record.attempt >= ctl.settings.max_dispatch_attempts:
                settle_records([Outcome(record.id, "unverified", "no_result",
                                        f"no result after {record.attempt} attempts; both "
                                        f"candidate secrets are kept until verify or restore "
                                        f"settles the account")])
                given_up[record.execution_id] += 1
                log(record.execution_id, f"record {record.id} ({record.account.username}): "
                                         f"no result after {record.attempt} attempts, unverified",
                    level="warning")
            else:
                (Record.update(status="pending", attempt=Record.attempt + 1)
                 .where((Record.id == record.id) & (Record.status == "dispatched")).execute())
                requeued += 1
        for execution_id, count in given_up.items():
            bump_counts(execution_id, Counter(unverified=count))
            finish_if_done(execution_id)
    return requeued, sum(given_up.values())
