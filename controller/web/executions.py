"""Execution history: the list, one execution with its live log and per-account report (also
as CSV), and the actions on an execution's failures."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, request, stream_template, url_for
from flask_babel import gettext, ngettext
from flask_login import current_user
from peewee import JOIN, fn

from controller import actions, steering
from controller.models import Account, Asset, Execution, Record, utcnow
from controller.web import execution_log, forms, serialize, shapes
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


def requested_filter() -> execution_log.LogFilter:
    return execution_log.log_filter(request.args.get("level", ""), request.args.get("account", ""))


@page(bp, "/executions/<int:execution_id>", "executions/show.html",
      response=shapes.ExecutionPage, query=forms.ExecutionPageQuery)
def show(execution_id: int):
    """The execution with the latest lines of its log (or those before `log_before`), narrowed
    by `level` and `account`; the page then polls for newer ones."""
    execution = found_execution(execution_id)
    wanted = requested_filter()
    before = int_arg("log_before")
    window = execution_log.latest(execution_id, wanted, before)
    if before is not None:    # paging back: the poll follows the state only, from the newest line
        follow_from = execution_log.last_id(execution_id)
    else:
        follow_from = window.lines[-1]["id"] if window.lines else 0
    return {"execution": serialize.execution_row(execution),
            "retryable": actions.retryable(execution_id).exists(),
            "log": window.lines, "log_older": window.older, "log_paged": before is not None,
            "log_after": follow_from, "log_filter": wanted.args(),
            "records": record_page({"execution": str(execution_id)})}


@api_route("/executions/<int:execution_id>/log", "log", response=shapes.ExecutionLog,
           query=forms.LogQuery)
def log(execution_id: int):
    """What the execution page polls while it runs: the state and up to 500 log lines after
    `after` (narrowed by `level` and `account` as the page is); a full answer means more wait."""
    return answer(shapes.ExecutionLog, {
        "execution": serialize.execution_row(found_execution(execution_id)),
        "log": execution_log.after(execution_id, int_arg("after", 0), requested_filter())})


def report_rows(execution_id: int):
    """Each record's outcome in CSV_COLUMNS order, read as it is written out: any number of
    rows in constant memory. Never a secret column. A generator: its query runs when first
    read, in the streamed response, after the request gave its connection back."""
    rows = (Record.select(Record.id, fn.COALESCE(Asset.name, Record.asset_name), Asset.address,
                          fn.COALESCE(Account.username, Record.account_name), Record.action,
                          Record.status, Record.error_code, Record.error, Record.worker_id,
                          Record.attempt, Record.started_at, Record.finished_at)
            .join(Account, JOIN.LEFT_OUTER).join(Asset, JOIN.LEFT_OUTER)
            .where(Record.execution == execution_id)
            .order_by(Record.id).tuples())
    yield from rows.iterator()


def report_csv(execution_id: int):
    """The per-account report as CSV, streamed. No secrets."""
    found_execution(execution_id)
    return csv_response(f"execution-{execution_id}.csv", CSV_COLUMNS, report_rows(execution_id))


@bp.route("/executions/<int:execution_id>/report")
def report(execution_id: int):
    """The per-account report as a page to print or save as PDF (for auditors: no navigation,
    no actions, no secrets): the summary, then each account's outcome with its reason and times,
    streamed like the CSV."""
    execution = serialize.execution_row(found_execution(execution_id))
    rows = (dict(zip(CSV_COLUMNS, row)) for row in report_rows(execution_id))
    return stream_template("executions/report.html", execution=execution, rows=rows,
                           printed_at=utcnow())


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
