"""The audit log: sign-ins, reveals, restores, ignores and user changes, newest first."""
from __future__ import annotations

from flask import Blueprint, request

from controller.models import AuditEvent
from controller.web import forms, serialize, shapes
from controller.web.paging import keyset
from controller.web.views import page

bp = Blueprint("audit", __name__)


@page(bp, "/audit", "audit.html", response=shapes.AuditLog, query=forms.AuditQuery)
def index():
    filters = {name: request.args.get(name, "").strip() for name in ("actor", "action", "target")}
    query = AuditEvent.select()
    for name, value in filters.items():
        if value:
            query = query.where(getattr(AuditEvent, name) == value)
    return {"filters": filters, "events": keyset(query, AuditEvent.id,
                                                 serialize=serialize.audit_row)}
