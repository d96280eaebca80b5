"""The reaper (step 5 of the protocol): dispatched records with no result past their deadline
are dispatched again with the same new secret, and after the last attempt marked `unverified`."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

from controller.db import database
from controller.executions import finish_if_done, log
from controller.models import Account, Record, utcnow
from controller.results import Outcome, bump_counts, settle_records
from controller.runtime import Controller


def grace_seconds(ctl: Controller) -> float:
    """How long past its deadline a worker may still be acting on a message: it starts no change
    after the deadline, and a change already begun ends within its commands and the verifying
    login, each bounded by the SSH timeout."""
    return 5 * ctl.settings.ssh_timeout + 10


def reap(ctl: Controller) -> tuple[int, int]:
    """Re-queue or give up overdue records; returns (re-queued, given up)."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds(ctl))
    overdue = list(Record.select(Record, Account).join(Account)
                   .where((Record.status == "dispatched") & (Record.deadline < cutoff)))
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
