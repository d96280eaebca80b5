"""Execution history: the list, one execution with its live log and per-account report (also
as CSV), and the actions on an execution's failures."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, request, url_for
from flask_babel import gettext, ngettext
from flask_login import current_user
from peewee import JOIN, fn

from controller import actions, steering
from controller.models import Account, Asset, Execution, LogLine, Record
from controller.web import forms, serialize, shapes
from controller.web.csv_download import csv_response
from controller.web.forms import int_arg
from controller.web.i18n import number
from controller.web.paging import keyset
from controller.web.records import record_page
from controller.web.security import admin_required
from controller.web.views import Done, action, answer, api_route, page
from controller.web.views import started as started_execution

bp = Blueprint("executions", __name__)
STATUSES = ("running", "paused", "success", "failed", "empty", "cancelled")
TRIGGERS = ("manual", "schedule", "retry", "api", "verify")
LOG_SHOWN = 2000
CSV_COLUMNS = ("record", "asset", "address", "account", "action", "status", "error_code", "error",
               "worker", "attempt", "started_at", "finished_at")


@page(bp, "/executions", "executions/list.html", response=shapes.ExecutionList,
      query=forms.ExecutionQuery)
def index():
    filters = {name: request.args.get(name, "").strip() for name in ("plan", "status", "trigger")}
    query = Execution.select()
    if filters["plan"]:
        query = query.where(Execution.plan_name == filters["plan"])
    if filters["status"] in STATUSES:
        query = query.where(Execution.status == filters["status"])
    if filters["trigger"] in TRIGGERS:
        query = query.where(Execution.trigger == filters["trigger"])
    return {"filters": filters, "statuses": STATUSES, "triggers": TRIGGERS,
            "executions": keyset(query, Execution.id, serialize=serialize.execution_row)}


def found_execution(execution_id: int) -> Execution:
    found = Execution.get_or_none(Execution.id == execution_id)
    if found is None:
        abort(404, f"no execution {execution_id}")
    return found


def log_after(execution_id: int, after: int, limit: int = LOG_SHOWN) -> list[dict]:
    return [serialize.log_row(line) for line in LogLine.select()
            .where((LogLine.execution == execution_id) & (LogLine.id > after))
            .order_by(LogLine.id).limit(limit)]


@page(bp, "/executions/<int:execution_id>", "executions/show.html",
      response=shapes.ExecutionPage, query=forms.ById)
def show(execution_id: int):
    return {"execution": serialize.execution_row(found_execution(execution_id)),
            "retryable": actions.retryable(execution_id).exists(),
            "log": log_after(execution_id, 0),
            "records": record_page({"execution": str(execution_id)})}


@api_route("/executions/<int:execution_id>/log", "log", response=shapes.ExecutionLog,
           query=forms.LogQuery)
def log(execution_id: int):
    """What the execution page polls while it runs: the state and the log lines after `after`."""
    return answer(shapes.ExecutionLog, {
        "execution": serialize.execution_row(found_execution(execution_id)),
        "log": log_after(execution_id, int_arg("after", 0))})


def report_csv(execution_id: int):
    """The per-account report, streamed: any number of rows in constant memory. No secrets."""
    found_execution(execution_id)
    rows = (Record.select(Record.id, Record.action, Record.status, Record.error_code,
                          Record.error, Record.worker_id, Record.attempt, Record.started_at,
                          Record.finished_at, fn.COALESCE(Asset.name, Record.asset_name),
                          Asset.address, fn.COALESCE(Account.username, Record.account_name))
            .join(Account, JOIN.LEFT_OUTER).join(Asset, JOIN.LEFT_OUTER)
            .where(Record.execution == execution_id)
            .order_by(Record.id).tuples())

    def lines():
        for (record_id, act, status, code, error, worker, attempt, started, finished, asset,
             address, username) in rows.iterator():
            yield (record_id, asset, address, username, act, status, code, error, worker,
                   attempt, started, finished)

    return csv_response(f"execution-{execution_id}.csv", CSV_COLUMNS, lines())


bp.add_url_rule("/executions/<int:execution_id>/report.csv", "report_csv", report_csv)
api_route("/executions/<int:execution_id>/report.csv", "executions_report_csv", response=None,
          media="text/csv")(report_csv)


@action(bp, "/executions/<int:execution_id>/retry-failed", response=shapes.Started,
        statuses=(201,))
@admin_required
def retry_failed(execution_id: int):
    started = actions.retry_failed(current_app.extensions["keyturn.ctl"], execution_id,
                                   current_user.username)
    return started_execution(started, gettext("retry of the failed records"))


@action(bp, "/executions/<int:execution_id>/verify", response=shapes.MaybeStarted,
        statuses=(200, 201))
@admin_required
def verify(execution_id: int):
    accounts = actions.unverified_accounts(execution_id)
    if not accounts:
        return Done(gettext("no unverified accounts to verify"),
                    url_for("executions.show", execution_id=execution_id))
    started = actions.verify_accounts(current_app.extensions["keyturn.ctl"], accounts,
                                      current_user.username)
    return started_execution(started, gettext("verification"))


@action(bp, "/executions/<int:execution_id>/pause", response=shapes.Steered)
@admin_required
def pause(execution_id: int):
    found_execution(execution_id)
    steering.pause_execution(execution_id, current_user.username)
    return Done(gettext("execution %(execution)s paused: records in flight finish",
                        execution=execution_id),
                url_for("executions.show", execution_id=execution_id),
                {"execution": execution_id, "status": "paused"})


@action(bp, "/executions/<int:execution_id>/resume", response=shapes.Steered)
@admin_required
def resume(execution_id: int):
    found_execution(execution_id)
    resumed = steering.resume_execution(current_app.extensions["keyturn.ctl"], execution_id,
                                        current_user.username)
    said = (gettext("execution %(execution)s resumed (%(reason)s)", execution=execution_id,
                    reason=resumed.pause_reason) if resumed.pause_reason
            else gettext("execution %(execution)s resumed", execution=execution_id))
    return Done(said,
                url_for("executions.show", execution_id=execution_id),
                {"execution": execution_id, "status": resumed.status})


@action(bp, "/executions/<int:execution_id>/cancel", response=shapes.Steered)
@admin_required
def cancel(execution_id: int):
    found_execution(execution_id)
    steering.cancel_execution(execution_id, current_user.username)
    cancelled = steering.cancelled_count(execution_id)
    return Done(ngettext("execution %(execution)s cancelled: %(count)s record not sent",
                         "execution %(execution)s cancelled: %(count)s records not sent",
                         cancelled, execution=execution_id, count=number(cancelled)),
                url_for("executions.show", execution_id=execution_id),
                {"execution": execution_id, "status": "cancelled", "cancelled": cancelled})
