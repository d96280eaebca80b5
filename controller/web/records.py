"""Execution records: the filtered list, one record, and the actions on it. Old and new secrets
appear only on the reveal page, after step-up MFA, and every reveal is audited."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, g, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user
from peewee import JOIN, SelectQuery

from controller import actions
from controller.audit import audit
from controller.models import Account, Asset, Execution, Record
from controller.web import forms, serialize, shapes
from controller.web.forms import number
from controller.web.i18n import N_
from controller.web.paging import keyset_union
from controller.web.security import admin_required, step_up_gate
from controller.web.views import Done, action, is_api, page
from controller.web.views import started as started_execution
from shared.platforms import RecordStatus

bp = Blueprint("records", __name__)
STATUSES = tuple(RecordStatus)
FILTERS = ("plan", "execution", "asset", "account", "status")


def listing() -> SelectQuery:
    """Records with what a row shows (never the secret columns), and whether a later record
    of the account superseded each, in one query."""
    return (Record.select(Record.id, Record.execution, Record.account, Record.retry_of,
                          Record.action, Record.status, Record.error_code, Record.error,
                          Record.worker_id, Record.attempt, Record.ignored, Record.created_at,
                          Record.started_at, Record.finished_at, Record.asset_name,
                          Record.account_name, Execution.id, Execution.plan_name, Account.id,
                          Account.username, Asset.id, Asset.name,
                          actions.superseded().alias("later"))
            .join(Account, JOIN.LEFT_OUTER).join(Asset, JOIN.LEFT_OUTER)
            .switch(Record).join(Execution))


def conditions(filters: dict) -> tuple[list, list]:
    """Filters as conditions on the record's own indexed columns (sub-selects for names), so
    the list and its count need no join to filter: (those every record listed meets, and the
    alternatives of which each meets one). An asset or account filter has two, disjoint: the
    records of such an account now, and those of a deleted one by the names kept."""
    found = []
    if filters.get("plan"):
        found.append(Record.execution.in_(Execution.select(Execution.id)
                                          .where(Execution.plan_name == filters["plan"])))
    if filters.get("execution"):
        found.append(Record.execution == number("execution", filters["execution"]))
    if filters.get("status") in STATUSES:
        found.append(Record.status == filters["status"])
    if not (filters.get("asset") or filters.get("account")):
        return found, []
    accounts = Account.select(Account.id)
    kept = Record.account.is_null()
    if filters.get("asset"):
        accounts = accounts.where(Account.asset.in_(Asset.select(Asset.id)
                                                    .where(Asset.name == filters["asset"])))
        kept &= Record.asset_name == filters["asset"]
    if filters.get("account"):
        accounts = accounts.where(Account.username == filters["account"])
        kept &= Record.account_name == filters["account"]
    return found, [Record.account.in_(accounts), kept]


def filtered(query: SelectQuery, where: list) -> SelectQuery:
    return query.where(*where) if where else query


def record_page(filters: dict) -> dict:
    """One keyset page of the records matching `filters`, newest first: one query per
    alternative (PostgreSQL filters an OR of them row by row over the whole table)."""
    where, alternatives = conditions(filters)
    branches = [where + [alternative] for alternative in alternatives] or [where]
    return keyset_union([filtered(listing(), branch) for branch in branches], Record.id,
                        serialize=serialize.record_row,
                        counts=[filtered(Record.select(Record.id), branch) for branch in branches])


@page(bp, "/records", "records/list.html", response=shapes.RecordList, query=forms.RecordQuery)
def index():
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    return {"filters": filters, "statuses": STATUSES, "records": record_page(filters)}


def found_record(record_id: int) -> Record:
    record = listing().where(Record.id == record_id).first()
    if record is None:
        abort(404, f"no record {record_id}")
    return record


@page(bp, "/records/<int:record_id>", "records/show.html", response=shapes.RecordPage)
def show(record_id: int):
    retries = listing().where(Record.retry_of == record_id).order_by(Record.id)
    return {"record": serialize.record_row(found_record(record_id)),
            "retries": [serialize.record_row(r) for r in retries]}


# ---- secrets: step-up, reveal, restore ----------------------------------------------------

def secrets_gate(record_id: int, purpose: str, scope: str | None = None):
    """None when the user may go on (after step-up, or with an API token granted `scope`);
    else the answer asking for a TOTP code."""
    record = found_record(record_id)
    asset, username = record.names()
    account = f"{username}@{asset}"
    return step_up_gate(f"{purpose} for {account} (record {record_id})",
                        url_for("records.show", record_id=record_id), scope,
                        gettext("%(purpose)s for %(account)s (record %(record)s)",
                                purpose=gettext(purpose), account=account, record=record_id))


@action(bp, "/records/<int:record_id>/reveal", response=shapes.Revealed, body=forms.StepUp,
        step_up=True)
@admin_required
def reveal(record_id: int):
    """The record's old and new secret, after step-up; audited with user, record, time and
    how the step-up was shown (window, code or token scope)."""
    if (asked := secrets_gate(record_id, N_("view its old and new secret"), scope="reveal")):
        return asked
    secret = Record.select(Record.old_secret, Record.new_secret).where(
        Record.id == record_id).first()
    if secret is None:
        abort(404, f"no record {record_id}")
    vault = current_app.extensions["keyturn.ctl"].vault
    shown = {"old_secret": vault.decrypt(secret.old_secret),
             "new_secret": vault.decrypt(secret.new_secret)}
    audit("secret.reveal", f"record/{record_id}", f"by {g.step_up}")
    if is_api():
        return {"record": record_id, **shown}
    return render_template("records/reveal.html",
                           record=serialize.record_row(found_record(record_id)), **shown)


@action(bp, "/records/<int:record_id>/restore", response=shapes.Message, body=forms.StepUp,
        step_up=True)
@admin_required
def restore(record_id: int):
    """Make an unverified record's new secret current (admin, after step-up)."""
    if (asked := secrets_gate(record_id, N_("make its new secret the account's current one"))):
        return asked
    actions.restore_record(record_id, current_user.username)
    return Done(gettext("record %(record)s: new secret is now the account's current one",
                        record=record_id),
                url_for("records.show", record_id=record_id))


@action(bp, "/records/<int:record_id>/retry", response=shapes.Started, statuses=(201,))
@admin_required
def retry(record_id: int):
    started = actions.retry_records(current_app.extensions["keyturn.ctl"], [record_id],
                                    current_user.username)
    return started_execution(started, "retry")


@action(bp, "/records/<int:record_id>/ignore", response=shapes.Message)
@admin_required
def ignore(record_id: int):
    actions.ignore_record(record_id, current_user.username)
    return Done(gettext("record %(record)s ignored", record=record_id), url_for("overview.index"))

