"""One view, two faces: every page's data is also served as JSON under /api/v1, and every
action answers a form with a message and a redirect, and a script with JSON.

Each registration under /api/v1 also records what the OpenAPI document says of it
(`Operation`, in `OPERATIONS`): the body model `form_data` validates with, the query model the
page validates its arguments with, and the response model the JSON answer is built through
(`answer`), so the document (`controller.web.openapi`) is made from the code that runs."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from pydantic import BaseModel

from controller.web import forms
from shared.errors import KeyturnError, translated

api = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_MESSAGE = 2000      # of an error's text: whatever it quotes, an answer never echoes megabytes
JSON = "application/json"


@dataclass(frozen=True)
class Operation:
    """What the API document says of one route under /api/v1 (see `controller.web.openapi`)."""

    summary: str
    response: type[BaseModel] | None          # the JSON answer; None: `media` is not JSON
    statuses: tuple[int, ...] = (200,)        # the success statuses it answers with
    body: type[BaseModel] | None = None       # what `form_data` validates the body with
    query: type[BaseModel] | None = None      # what the query string is validated with
    media: str = JSON                         # the success answer's media type
    body_media: str = JSON
    admin: bool = False                       # auditors get 403
    step_up: bool = False                     # a fresh TOTP code (or a token scope) first
    refusals: tuple[int, ...] = ()            # more error statuses than the usual ones


OPERATIONS: dict[str, Operation] = {}        # by the endpoint name, as in app.url_map


def describe(endpoint: str, view, fallback: str | None = None, **operation) -> None:
    """Record `view`'s `Operation` for the API endpoint `endpoint`: its summary is the first
    line of its docstring (else `fallback`, else its name); admin-only and step-up come from
    the guards that wrap it."""
    text = view.__doc__ or fallback or view.__name__.replace("_", " ")
    summary = text.strip().split("\n")[0]
    operation.setdefault("admin", getattr(view, "admin_only", False))
    operation.setdefault("step_up", bool(getattr(view, "step_up", None)))
    OPERATIONS[f"{api.name}.{endpoint}"] = Operation(summary, **operation)


def answer(model: type[BaseModel] | None, payload):
    """`payload` as JSON, built through `model` when there is one: what is sent is what the
    model (and so the document) says, or a loud error in the tests that read it."""
    if model is None:
        return jsonify(payload)
    return jsonify(model.model_validate(payload).model_dump(mode="json", by_alias=True))


def api_route(rule: str, endpoint: str, methods=("GET",), **operation):
    """Register a JSON-only `view` at /api/v1`rule`, with its `Operation`."""

    def register(view):
        api.add_url_rule(rule, endpoint, view, methods=list(methods))
        describe(endpoint, view, **operation)
        return view

    return register


def is_api() -> bool:
    """Whether a script asks: any path under /api/v1, a route of ours or not."""
    return request.path == api.url_prefix or request.path.startswith(api.url_prefix + "/")


def page(bp: Blueprint, rule: str, template: str, *, response: type[BaseModel] | None = None,
         query: type[BaseModel] | None = None):
    """Register `view` (returning a dict of plain data) as an HTML page at `rule` on `bp` and
    as JSON at /api/v1`rule`, built through `response`; both faces check the query string
    with `query` first (a `BadInput` 400 names the argument)."""

    def register(view):
        def data(kwargs):
            if query is not None:
                forms.parse(query, request.args.to_dict())
            return view(**kwargs)

        @functools.wraps(view)
        def as_html(**kwargs):
            return render_template(template, **data(kwargs))

        @functools.wraps(view)
        def as_json(**kwargs):
            return answer(response, data(kwargs))

        bp.add_url_rule(rule, view.__name__, as_html)
        api.add_url_rule(rule, f"{bp.name}_{view.__name__}", as_json)
        describe(f"{bp.name}_{view.__name__}", view, f"What the console's page {rule} shows",
                 response=response, query=query)
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
    """The answer to an action that started an execution: go and watch it (`what`: already
    in the page's language)."""
    return Done(gettext("%(what)s started as execution %(execution)s", what=what,
                        execution=execution.id),
                url_for("executions.show", execution_id=execution.id),
                {"execution": execution.id}, 201)


def action(bp: Blueprint, rule: str, methods=("POST",), *, response: type[BaseModel] | None = None,
           body: type[BaseModel] | None = None, **operation):
    """Register a state-changing `view` for forms on `bp` and for scripts under /api/v1. The
    view returns `Done`, or a response of its own (a page asking for a TOTP code, a secret;
    a dict, or a dict and a status, for a script). A `KeyturnError` is the operator's
    mistake: shown, never a 500. `body` is the model the view's `form_data` validates with,
    `response` the model its JSON answer is built through; `operation` says the rest of its
    `Operation` (success statuses, a body that is not JSON)."""

    def register(view):
        @functools.wraps(view)
        def as_html(**kwargs):
            try:
                done = view(**kwargs)
            except KeyturnError as exc:
                refused(view, exc)
                flash(shown(exc), "error")
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
                refused(view, exc)
                return jsonify(error=said(exc)), 409
            if isinstance(done, Done):
                return answer(response, {"message": done.message, **done.data}), done.status
            if isinstance(done, tuple) and isinstance(done[0], dict):
                return answer(response, done[0]), *done[1:]
            if isinstance(done, dict):
                return answer(response, done)
            return done

        bp.add_url_rule(rule, view.__name__, as_html, methods=list(methods))
        api.add_url_rule(rule, f"{bp.name}_{view.__name__}", as_json, methods=list(methods))
        describe(f"{bp.name}_{view.__name__}", view, response=response, body=body, **operation)
        return view

    return register


def refused(view, exc: KeyturnError) -> None:
    """Audit a refused action with its reason (what was asked: the view and the path)."""
    from controller.audit import audit

    audit(f"{view.__module__.rsplit('.', 1)[-1]}.{view.__name__}", request.path, said(exc),
          refused=True)


def said(exc: Exception) -> str:
    """An operator's error as an answer shows it: cut to `MAX_MESSAGE` characters."""
    text = str(exc)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " …"


def shown(exc: KeyturnError | str) -> str:
    """A refusal in the page's words: its template through the catalogue, its parameters
    (data) filled in as they are (a plain text: when the catalogue has it); cut as `said`
    cuts it."""
    text = translated(exc, gettext)
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
