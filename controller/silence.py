"""The silence watch: a record a worker picked up but that has had no result for longer than
its command's timeout gets one warning line in its execution log, naming the asset and how long
it has been silent, long before the reaper acts at the deadline. A worker normally ends a
command within a few timeouts, so this is an operator's early hint (a hung host, a stuck
worker), never an outcome: nothing about the record changes but `silent_at`, which makes the
line appear once per dispatch however many daemons watch.

Records of workers that send no progress (earlier releases) have no pick-up time: only the
reaper's lines speak for them.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from peewee import JOIN, fn

from controller.db import database, id_in, lock_rows
from controller.executions import Line, record_name, write_lines
from controller.models import Account, Asset, Execution, Plan, Record, utcnow
from controller.planning import command_timeout
from controller.runtime import Controller


def report_silent(ctl: Controller, now: datetime | None = None) -> int:
    """Log each newly silent record; returns how many."""
    now = now or utcnow()
    default = ctl.settings.ssh_timeout
    wanted = fn.COALESCE(Plan.ssh_timeout, default)
    timeouts = {t for (t,) in Record.select(wanted).join(Execution).join(Plan, JOIN.LEFT_OUTER)
                .switch(Record)
                .where((Record.status == "dispatched") & Record.started_at.is_null(False)
                       & Record.silent_at.is_null()).distinct().tuples()}
    if not timeouts:
        return 0
    late = None
    for wanted_timeout in timeouts:
        limit = now - timedelta(seconds=command_timeout(ctl, wanted_timeout))
        clause = (wanted == wanted_timeout) & (Record.started_at < limit)
        late = clause if late is None else late | clause
    rows = list(Record.select(Record.id, Record.execution, Record.started_at, Record.deadline,
                              Account.username, Asset.name.alias("asset"), wanted.alias("wanted"))
                .join(Account).join(Asset).switch(Record).join(Execution)
                .join(Plan, JOIN.LEFT_OUTER)
                .where((Record.status == "dispatched") & Record.started_at.is_null(False)
                       & Record.silent_at.is_null() & late).objects())
    if not rows:
        return 0
    with database.atomic():
        ids = [r.id for r in rows]
        lock_rows(Record, ids)
        claimed = {row.id for row in (Record.update(silent_at=now)
                   .where(id_in(Record.id, ids) & Record.silent_at.is_null()
                          & (Record.status == "dispatched")).returning(Record.id).execute())}
        write_lines([Line(r.execution_id, silent_line(ctl, r, now), "warning", r.id)
                     for r in rows if r.id in claimed])
    return len(claimed)


def silent_line(ctl: Controller, row, now: datetime) -> str:
    silent = max(0, round((now - row.started_at).total_seconds()))
    timeout = command_timeout(ctl, row.wanted)
    deadline = f" (the reaper acts at its deadline, {row.deadline:%H:%M:%S} UTC)" if row.deadline else ""
    return (f"{record_name(row.id, row.username, row.asset)}: silent: no result from {row.asset} "
            f"for {silent} s since it was picked up, longer than its {timeout:g} s "
            f"timeout{deadline}")
