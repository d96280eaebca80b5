"""One view, two faces: every page's data is also served as JSON under /api/v1, and every
action answers a form with a message and a redirect, and a script with JSON."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from controller.web import forms
from shared.errors import KeyturnError

api = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_MESSAGE = 2000      # of an error's text: whatever it quotes, an answer never echoes megabytes


def is_api() -> bool:
    """Whether a script asks: any path under /api/v1, a route of ours or not."""
    return request.path == api.url_prefix or request.path.startswith(api.url_prefix + "/")


def page(bp: Blueprint, rule: str, template: str):
    """Register `view` (returning a dict of plain data) as an HTML page at `rule` on `bp` and
    as JSON at /api/v1`rule`."""

    def register(view):
        @functools.wraps(view)
        def as_html(**kwargs):
            return render_template(template, **view(**kwargs))

        @functools.wraps(view)
        def as_json(**kwargs):
            return jsonify(view(**kwargs))

        bp.add_url_rule(rule, view.__name__, as_html)
        api.add_url_rule(rule, f"{bp.name}_{view.__name__}", as_json)
        return view

    return register


@dataclass
class Done:
    """What an action did: a line for the operator, where to look next, data for a script."""

    message: str
    location: str
    data: dict = field(default_factory=dict)
    status: int = 200


def started(execution, what: str) -> Done:
    """The answer to an action that started an execution: go and watch it."""
    return Done(f"{what} started as execution {execution.id}",
                url_for("executions.show", execution_id=execution.id),
                {"execution": execution.id}, 201)


def action(bp: Blueprint, rule: str, methods=("POST",)):
    """Register a state-changing `view` for forms on `bp` and for scripts under /api/v1. The
    view returns `Done`, or a response of its own (a page asking for a TOTP code, a secret).
    A `KeyturnError` is the operator's mistake: shown, never a 500."""

    def register(view):
        @functools.wraps(view)
        def as_html(**kwargs):
            try:
                done = view(**kwargs)
            except KeyturnError as exc:
                flash(said(exc), "error")
                return redirect(back())
            if not isinstance(done, Done):
                return done
            flash(done.message, "info")
            return redirect(done.location)

        @functools.wraps(view)
        def as_json(**kwargs):
            try:
                done = view(**kwargs)
            except KeyturnError as exc:
                return jsonify(error=said(exc)), 409
            if not isinstance(done, Done):
                return done
            return jsonify(message=done.message, **done.data), done.status

        bp.add_url_rule(rule, view.__name__, as_html, methods=list(methods))
        api.add_url_rule(rule, f"{bp.name}_{view.__name__}", as_json, methods=list(methods))
        return view

    return register


def said(exc: Exception) -> str:
    """An operator's error as an answer shows it: cut to `MAX_MESSAGE` characters."""
    text = str(exc)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " …"


def form_data(model: type[forms.Body] | None = None) -> dict:
    """The submitted fields, a form's or a script's JSON object; validated as `model` when
    given (a `BadInput` 400 names each bad field)."""
    if is_api():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise forms.BadInput({"body": "send a JSON object"})
    else:
        body = request.form.to_dict()
    return body if model is None else forms.parse(model, body)


def back() -> str:
    """The page the operator came from, when it is one of ours."""
    referrer = request.referrer or ""
    return referrer if referrer.startswith(request.host_url) else url_for("overview.index")
