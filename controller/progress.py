"""Applying workers' progress messages: "picked up by <worker>" in the execution log, and the
record's `started_at` (from which the silence watch counts, `controller.silence`).

A progress message is information, never an outcome: it changes no status, and is applied only
to a record still `dispatched` on the same attempt whose pick-up is not yet known, so a replay,
a duplicate or a late copy writes nothing and logs nothing. Like a result, it is only as trusted
as the zone key that sealed it: one for another zone's record is refused (dead-lettered by the
consumer) and audited. A batch costs a few statements whatever its size.
"""
from __future__ import annotations

import logging

from peewee import ValuesList

from controller.db import database, id_in, lock_rows
from controller.executions import Line, one_line, record_name, write_lines
from controller.models import Account, Asset, Record, Zone
from controller.results import _time, as_timestamp, refuse_foreign
from shared.messages import RotateProgress

logger = logging.getLogger(__name__)


def apply_progress_batch(messages: list[RotateProgress]) -> dict[int, str]:
    """Apply a batch of progress messages in one transaction; returns {index: reason} for
    those refused (to dead-letter)."""
    refused: dict[int, str] = {}
    with database.atomic():
        lock_rows(Record, [m.record_id for m in messages])
        records = {r.id: r for r in Record.select(
            Record.id, Record.status, Record.attempt, Record.execution, Record.started_at,
            Account.username, Asset.name.alias("asset"), Zone.name.alias("zone"))
            .join(Account).join(Asset).join(Zone)
            .where(id_in(Record.id, [m.record_id for m in messages])).objects()}
        started: dict[int, RotateProgress] = {}     # record id -> the first usable message
        for index, message in enumerate(messages):
            record = records.get(message.record_id)
            if record is None:
                logger.warning("dropped a progress message for unknown record %s",
                               message.record_id, extra={"record": message.record_id})
            elif record.zone != message.zone:
                refused[index] = refuse_foreign(record, message, "progress")
            elif (record.status == "dispatched" and record.attempt == message.attempt
                  and record.started_at is None):
                started.setdefault(record.id, message)
        picked = mark_started(list(started.values()))
        write_lines([Line(records[record_id].execution_id,
                          f"{record_name(record_id, records[record_id].username, records[record_id].asset)}: "
                          f"picked up by worker {one_line(started[record_id].worker_id, 255)} "
                          f"(attempt {started[record_id].attempt})", "info", record_id)
                     for record_id in picked])
    return refused


def mark_started(messages: list[RotateProgress]) -> list[int]:
    """Set `started_at` of each message's record, in one statement, only while it is still
    dispatched on that attempt and not yet picked up; returns the records written."""
    if not messages:
        return []
    values = ValuesList([(m.record_id, m.attempt, _time(m.at)) for m in messages],
                        alias="v").cte("progress", columns=("record_id", "attempt", "at"))
    written = (Record.update(started_at=as_timestamp(values.c.at))
               .with_cte(values).from_(values)
               .where((Record.id == values.c.record_id) & (Record.attempt == values.c.attempt)
                      & (Record.status == "dispatched") & Record.started_at.is_null())
               .returning(Record.id).execute())
    return sorted(row.id for row in written)
