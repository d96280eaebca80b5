"""The overview: what ran over the last 7 or 30 days, what runs now, and what failed.

Counts come from the executions' own counters (indexed by start time), never by scanning
records; the failed list reads failed records through the status index, newest first."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, redirect, url_for
from peewee import JOIN, Case, fn

from controller.models import (Asset, Execution, Node, Plan, PlanAsset, PlanNode, Record,
                               utcnow)
from controller.web import forms, serialize, shapes
from controller.web.forms import int_arg
from controller.web.records import listing
from controller.web.views import page

bp = Blueprint("overview", __name__)
WINDOWS = (7, 30)
RECENT = 10
FAILED_SHOWN = 50
FAILED_BATCH, FAILED_BATCHES = 200, 5


@bp.route("/")
def root():
    return redirect(url_for("overview.index"))


@page(bp, "/overview", "overview.html", response=shapes.Overview, query=forms.OverviewQuery)
def index():
    days = int_arg("days")
    days = days if days in WINDOWS else WINDOWS[0]
    since = utcnow() - timedelta(days=days)
    return {"days": days, "windows": WINDOWS, "counts": counts(since),
            "daily": daily(since, days),
            "running": [serialize.execution_row(e) for e in Execution.select()
                        .where(Execution.status == "running").order_by(Execution.id.desc())
                        .limit(RECENT)],
            "recent": [serialize.execution_row(e) for e in Execution.select()
                       .order_by(Execution.id.desc()).limit(RECENT)],
            "failed": [serialize.record_row(r) | {"failures": count}
                       for r, count in failed_accounts(since)]}


def counts(since) -> dict:
    plans, periodic = Plan.select(
        fn.COUNT(Plan.id),
        fn.SUM(Case(None, [((Plan.interval_hours.is_null(False) | Plan.crontab.is_null(False))
                            & Plan.active, 1)], 0))).scalar(as_tuple=True)
    executions = {status: (n, total, ok, bad) for status, n, total, ok, bad in Execution.select(
        Execution.status, fn.COUNT(Execution.id), fn.SUM(Execution.total),
        fn.SUM(Execution.succeeded), fn.SUM(Execution.failed + Execution.unverified))
        .where(Execution.created_at >= since).group_by(Execution.status).tuples()}
    column = list(zip(*executions.values())) or [(), (), (), ()]
    return {"plans": plans, "periodic_plans": periodic or 0, "assets_covered": assets_covered(),
            "executions": sum(column[0]),
            "executions_succeeded": executions.get("success", (0,))[0],
            "executions_failed": executions.get("failed", (0,))[0],
            "executions_running": executions.get("running", (0,))[0],
            "records": sum(n or 0 for n in column[1]),
            "records_succeeded": sum(n or 0 for n in column[2]),
            "records_failed": sum(n or 0 for n in column[3])}


def assets_covered() -> int:
    """Assets some plan targets, by name or under one of its nodes."""
    target = Node.alias()
    under = (PlanNode.select(PlanNode.id).join(target, on=(PlanNode.node == target.id))
             .where((Node.path == target.path)
                    | (fn.SUBSTR(Node.path, 1, fn.LENGTH(target.path) + 1) == target.path.concat("/"))))
    return (Asset.select().join(Node, JOIN.LEFT_OUTER)
            .where(Asset.id.in_(PlanAsset.select(PlanAsset.asset)) | fn.EXISTS(under)).count())


def daily(since, days: int) -> list[dict]:
    """Rotations per day (UTC) by outcome, every day of the window present. (The database
    answers a date, a datetime or a string, depending on the driver: the first ten
    characters are the day in all three.)"""
    day = fn.DATE(Execution.created_at)
    found = {str(d)[:10]: (ok or 0, bad or 0) for d, ok, bad in Execution.select(
        day, fn.SUM(Execution.succeeded), fn.SUM(Execution.failed + Execution.unverified))
        .where(Execution.created_at >= since).group_by(day).tuples()}
    today = utcnow().date()
    span = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    return [{"day": d.isoformat(), "succeeded": found.get(d.isoformat(), (0, 0))[0],
             "failed": found.get(d.isoformat(), (0, 0))[1]} for d in span]


def failed_accounts(since) -> list[tuple[Record, int]]:
    """Accounts with failed or unverified records in the window, not ignored, each once: its
    newest such record and how many there are, newest first, leaving out a failure its
    account has made good since (a later success). Candidates come through the status index
    in batches, and the check reads only their accounts' later records (account index), so
    the cost does not grow with the table; at most FAILED_BATCHES are looked at (the counts
    are of those)."""
    shown: dict[int, list] = {}          # account id: [newest record, failures]
    before = None
    for _ in range(FAILED_BATCHES):
        batch = newest_failures(since, before)
        good = made_good(batch)
        for record in batch:
            if record.id not in good:
                shown.setdefault(record.account_id, [record, 0])[1] += 1
        if len(shown) >= FAILED_SHOWN or len(batch) < FAILED_BATCH:
            break
        before = batch[-1].id
    return [(record, count) for record, count in shown.values()][:FAILED_SHOWN]


def newest_failures(since, before: int | None) -> list[Record]:
    """The newest FAILED_BATCH failed or unverified records in the window (with ids below
    `before`): one query per status, merged, so that each reads the status index newest first
    and stops early. (SQLite keeps an index's entries in id order within one status; with
    `status IN (...)` it reads every failure of the window and sorts them.)"""
    found: list[Record] = []
    for status in ("failed", "unverified"):
        query = listing().where((Record.status == status) & ~Record.ignored
                                & (Record.created_at >= since))
        if before is not None:
            query = query.where(Record.id < before)
        found.extend(query.order_by(Record.id.desc()).limit(FAILED_BATCH))
    return sorted(found, key=lambda record: record.id, reverse=True)[:FAILED_BATCH]


def made_good(records: list[Record]) -> set[int]:
    """The ids of `records` whose account succeeded in a later record. The status is checked
    here, not in SQL, so the planner has only the account index to choose."""
    if not records:
        return set()
    last_success: dict[int, int] = {}
    for account_id, record_id, status in (
            Record.select(Record.account, Record.id, Record.status)
            .where(Record.account.in_({r.account_id for r in records})
                   & (Record.id > min(r.id for r in records))).tuples()):
        if status == "success":
            last_success[account_id] = max(record_id, last_success.get(account_id, 0))
    return {r.id for r in records if last_success.get(r.account_id, 0) > r.id}
