"""An execution's log and its end: the final status once its last record has ended.

The log tells each account's story, one line per step (dispatched, picked up, changed and
proven, failed with its reason, silent, dispatched again, given up), each tied to its record so
the page can show one account's lines. Lines are written in batches (one statement per 500),
never a round trip per account, and never carry a secret: they are built from names, codes and
the workers' already scrubbed error texts, squeezed to one bounded line (`one_line`)."""
from __future__ import annotations

import re
from typing import NamedTuple

from peewee import chunked

from controller.db import database
from controller.events import execution_event
from controller.models import Execution, LogLine, utcnow
from shared.words import plural

USERS_SHOWN = 5
LINE_CHARS = 600              # a log line's text at most (an error may have 4,000)
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Line(NamedTuple):
    """One log line to write: its execution, text, level and the record it is about."""

    execution_id: int
    message: str
    level: str = "info"
    record_id: int | None = None


def one_line(text: str, limit: int = LINE_CHARS) -> str:
    """A text from a worker as one bounded line: a newline in an error cannot forge a line."""
    text = CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def record_name(record_id: int, username: str, asset: str) -> str:
    """How every line names a record: `record 7 (alice@web-1)`."""
    return f"record {record_id} ({username}@{asset})"


def log(execution_id: int, message: str, level: str = "info", record_id: int | None = None) -> None:
    write_lines([Line(execution_id, message, level, record_id)])


def log_many(execution_id: int, messages: list[str], level: str = "info") -> None:
    write_lines([Line(execution_id, message, level) for message in messages])


def write_lines(lines: list[Line]) -> None:
    """Insert log lines in batches of 500 (one statement each), in the order given. The
    statement is built here, not by `insert_many`: results write a line per account, and
    peewee's per-value work cost a quarter of applying a result."""
    if not lines:
        return
    at = LogLine.at.db_value(utcnow())
    for batch in chunked(lines, 500):
        params = []
        for line in batch:
            params += (line.execution_id, at, line.level, line.message, line.record_id)
        database.execute_sql(insert_lines_sql(len(batch)), params)


def insert_lines_sql(count: int) -> str:
    p = database.param
    return ('INSERT INTO "logline" ("execution_id", "at", "level", "message", "record") VALUES '
            + ", ".join([f"({p}, {p}, {p}, {p}, {p})"] * count))


def finish_if_done(execution_id: int) -> bool:
    """End a running execution whose records have all ended; True if this call ended it.
    One that had nothing to rotate ends `empty`, with the reason in its log: a plan that
    matches no account is a mistake to show, never a `success`."""
    running = (Execution.id == execution_id) & (Execution.status == "running")
    ended = Execution.succeeded + Execution.failed + Execution.unverified
    done = (Execution.update(status="empty", finished_at=utcnow())
            .where(running & (Execution.total == 0)).execute())
    done += (Execution.update(status="success", finished_at=utcnow())
             .where(running & (ended >= Execution.total)
                    & (Execution.failed + Execution.unverified == 0)).execute())
    done += (Execution.update(status="failed", finished_at=utcnow())
             .where(running & (ended >= Execution.total)).execute())
    if done:
        execution = Execution.get_by_id(execution_id)
        execution_event(execution)
        if execution.status == "empty":
            log(execution_id, f"finished: empty; {nothing_rotated(execution)}", "error")
        else:
            log(execution_id, f"finished: {execution.status}; success {execution.succeeded}, "
                              f"unverified {execution.unverified}, failed {execution.failed}, "
                              f"total {execution.total}")
    return bool(done)


def nothing_rotated(execution: Execution) -> str:
    """Why an execution had no account to rotate, in the terms of its plan."""
    if execution.skipped == 1:
        return "nothing rotated: the account it matched was skipped (the reason is above)"
    if execution.skipped:
        return (f"nothing rotated: all {execution.skipped} accounts it matched were skipped "
                f"(the reasons are above)")
    plan = execution.plan
    if plan is None or execution.trigger in ("retry", "verify"):
        return "nothing rotated: no account to rotate"
    users = ", ".join(plan.usernames[:USERS_SHOWN]) + (
        f" and {len(plan.usernames) - USERS_SHOWN} more" if len(plan.usernames) > USERS_SHOWN
        else "")
    return (f"no account matched: user names {users} on {plural(plan.asset_links.count(), 'asset')} "
            f"and {plural(plan.node_links.count(), 'node')} (with the assets under them), secret type "
            f"{plan.secret_type}")
