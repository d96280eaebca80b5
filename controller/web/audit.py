"""The audit log (`controller.audit` writes it): every change, reveal and refused attempt with
who, from where, on what, and the fields before and after; newest first, filtered by actor,
action, target, outcome and time, and exported as CSV. Auditors read it as admins do."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from flask import Blueprint, request

from controller.models import AuditEvent
from controller.web import forms, serialize, shapes
from controller.web.csv_download import csv_response
from controller.web.paging import keyset
from controller.web.views import api_route, page

bp = Blueprint("audit", __name__)
FILTERS = ("actor", "action", "target", "outcome", "since", "until")
OUTCOMES = ("done", "refused")
CSV_COLUMNS = ("id", "at", "actor", "address", "action", "outcome", "target", "detail", "before",
               "after")


@page(bp, "/audit", "audit.html", response=shapes.AuditLog, query=forms.AuditQuery)
def index():
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    return {"filters": filters, "outcomes": list(OUTCOMES),
            "events": keyset(filtered(filters), AuditEvent.id, serialize=serialize.audit_row)}


def filtered(filters: dict):
    """The events matching `filters`: an exact actor; an action exactly, or all of a kind
    when it ends with `.` or `*` (`asset.`); a target or anything under it (`asset/web-1`,
    `account/web-1/`); an outcome; a time span (`since`, `until`: a date or a UTC time)."""
    query = AuditEvent.select()
    if filters.get("actor"):
        query = query.where(AuditEvent.actor == filters["actor"])
    action = filters.get("action", "")
    if action.endswith(("*", ".")):
        query = query.where(AuditEvent.action.startswith(action.rstrip("*")))
    elif action:
        query = query.where(AuditEvent.action == action)
    if filters.get("target"):
        query = query.where(AuditEvent.target.startswith(filters["target"]))
    if filters.get("outcome"):
        if filters["outcome"] not in OUTCOMES:
            raise forms.BadInput({"outcome": f"one of {', '.join(OUTCOMES)}"})
        query = query.where(AuditEvent.outcome == filters["outcome"])
    if filters.get("since"):
        query = query.where(AuditEvent.at >= moment("since", filters["since"]))
    if filters.get("until"):
        until = moment("until", filters["until"])
        if len(filters["until"]) == 10:                    # a date: to its end
            until += timedelta(days=1)
        query = query.where(AuditEvent.at < until)
    return query


def moment(name: str, value: str) -> datetime:
    """A date (`2026-12-01`) or a UTC time (`2026-12-01T14:00`), or `BadInput` naming it."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise forms.BadInput({name: "a date (2026-12-01) or a UTC time (2026-12-01T14:00)"}) \
            from None
    return parsed.replace(tzinfo=None)


def export_csv():
    """The events matching the filters as CSV, streamed in constant memory; text a
    spreadsheet could take for a formula is quoted (`csv_cell`)."""
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    rows = filtered(filters).order_by(AuditEvent.id.desc())

    def lines():
        for event in rows.iterator():
            yield (event.id, event.at.isoformat(), event.actor, event.address, event.action,
                   event.outcome, event.target, event.detail, as_json(event.before),
                   as_json(event.after))

    return csv_response("audit.csv", CSV_COLUMNS, lines())


def as_json(fields: dict | None) -> str:
    return "" if fields is None else json.dumps(fields, sort_keys=True, ensure_ascii=False)


bp.add_url_rule("/audit.csv", "export_csv", export_csv)
api_route("/audit.csv", "audit_export_csv", response=None, media="text/csv",
          query=forms.AuditQuery)(export_csv)
