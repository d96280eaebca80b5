"""Plans: list and search, one plan, the create/edit/clone form, and run/delete. Saving goes
through `controller.plans` like the CLI; a run only creates pending records (the daemon's
dispatcher publishes them), so no request thread ever touches the bus."""
from __future__ import annotations

from flask import (Blueprint, abort, current_app, flash, redirect, render_template,
                   request, url_for)
from flask_babel import gettext, ngettext
from flask_login import current_user
from peewee import fn

from controller.audit import audit
from controller.inventory import tree_order
from controller.models import Asset, Execution, Node, Plan, PlanNode, User
from controller.plan_notes import plan_notes
from controller.planning import covered_assets, start_execution
from controller.plans import PlanError, PlanSpec, delete_plan, parse_spec, save_plan
from controller.secretgen import DEFAULT_SYMBOLS
from controller.web import forms, planform, serialize, shapes
from controller.web.forms import int_arg
from controller.web.i18n import number
from controller.web.paging import keyset
from controller.web.security import admin_required
from controller.web.views import Done, action, answer, api_route, form_data, is_api, page

bp = Blueprint("plans", __name__)
RECENT = 10


@page(bp, "/plans", "plans/list.html", response=shapes.PlanList, query=forms.PlanQuery)
def index():
    q = request.args.get("q", "").strip()
    node_count = PlanNode.select(fn.COUNT(PlanNode.id)).where(PlanNode.plan == Plan.id)
    last_run = Execution.select(fn.MAX(Execution.id)).where(Execution.plan == Plan.id)
    query = Plan.select(Plan, node_count.alias("node_count"),
                        last_run.alias("last_execution"))
    count = Plan.select(Plan.id)
    if q:
        query, count = query.where(Plan.name.contains(q)), count.where(Plan.name.contains(q))
    plans = keyset(query, Plan.name, descending=False, count=count, serialize=lambda p: (
        serialize.plan_row(p) | {"assets": covered_assets(p), "nodes": p.node_count,
                                 "last_execution": p.last_execution}))
    last = {e.id: serialize.execution_row(e) for e in Execution.select().where(
        Execution.id.in_([p["last_execution"] for p in plans["items"] if p["last_execution"]]))}
    for row in plans["items"]:
        row["last_execution"] = last.get(row["last_execution"])
    return {"q": q, "plans": plans}


def found_plan(plan_id: int) -> Plan:
    found = Plan.get_or_none(Plan.id == plan_id)
    if found is None:
        abort(404, f"no plan {plan_id}")
    return found


@page(bp, "/plans/<int:plan_id>", "plans/show.html", response=shapes.PlanPage)
def show(plan_id: int):
    plan = found_plan(plan_id)
    values = planform.form_values(plan)
    return {"plan": serialize.plan_row(plan) | {
                "assets": values["assets"], "nodes": values["nodes"], "params": plan.params,
                "length": plan.length, "lowercase": plan.lowercase, "uppercase": plan.uppercase,
                "digits": plan.digits, "symbols": plan.symbols,
                "exclude_symbols": plan.exclude_symbols, "key_type": plan.key_type,
                "ssh_timeout": plan.ssh_timeout},
            "executions": [serialize.execution_row(e) for e in plan.executions
                           .order_by(Execution.id.desc()).limit(RECENT)]}


# ---- the form -----------------------------------------------------------------------------

def choices() -> dict:
    """What the form offers to pick from (names only: one small query each)."""
    return {"asset_names": [n for (n,) in Asset.select(Asset.name).order_by(Asset.name).tuples()],
            "node_paths": sorted((p for (p,) in Node.select(Node.path).tuples()),
                                 key=tree_order),
            "user_names": [u for (u,) in User.select(User.username).where(User.active)
                           .order_by(User.username).tuples()],
            "no_email": [u for (u,) in User.select(User.username).where(
                User.active & (User.email.is_null() | (User.email == "")))
                .order_by(User.username).tuples()],
            "symbol_set": DEFAULT_SYMBOLS} | planform.offered()


def render_form(values: dict, plan: Plan | None, errors: dict | None = None, status: int = 200,
                clone_of: Plan | None = None):
    return render_template("plans/form.html", values=values, plan=plan, errors=errors or {},
                           clone_of=clone_of, **choices()), status


def save(data: dict, plan: Plan | None) -> Plan:
    ctl = current_app.extensions["keyturn.ctl"]
    spec = parse_spec(data)
    saved = save_plan(spec, ctl.vault, plan)
    if not is_api():
        for note in plan_notes(saved, ctl.settings.secure_mode):
            flash(note, "warning")
    return saved


def submit(plan: Plan | None, keep_secret_of: Plan | None):
    """Save the submitted plan: the saved plan's page (or JSON), or the form with its errors."""
    if is_api():
        data = form_data()
        if plan is not None and "secret" not in data and data.get("strategy") == "specific" \
                and plan.given_secret:
            data["secret"] = current_app.extensions["keyturn.ctl"].vault.decrypt(plan.given_secret)
    else:
        data = planform.spec_data(request.form, keep_secret_of)
    try:
        saved = save(data, plan)
    except PlanError as exc:
        if is_api():
            return answer(shapes.PlanProblems, {"errors": exc.errors}), 422
        return render_form(planform.resubmitted(request.form, keep_secret_of), plan, exc.errors,
                           422, clone_of=keep_secret_of if keep_secret_of is not plan else None)
    if is_api():
        notes = plan_notes(saved, current_app.extensions["keyturn.ctl"].settings.secure_mode)
        return (answer(shapes.PlanSaved, {"plan": serialize.plan_row(saved), "warnings": notes}),
                201 if plan is None else 200)
    flash(gettext("plan %(name)s saved", name=saved.name), "info")
    return redirect(url_for("plans.show", plan_id=saved.id))


@bp.route("/plans/new", methods=["GET", "POST"])
@admin_required
def new():
    clone_of = int_arg("clone_of")
    source = found_plan(clone_of) if clone_of else None
    if request.method == "POST":
        return submit(None, source)
    values = planform.form_values(source)
    if source:
        values["name"] = f"{source.name} (copy)"
    return render_form(values, None, clone_of=source)


@bp.route("/plans/<int:plan_id>/edit", methods=["GET", "POST"])
@admin_required
def edit(plan_id: int):
    plan = found_plan(plan_id)
    if request.method == "POST":
        return submit(plan, plan)
    return render_form(planform.form_values(plan), plan)


@api_route("/plans/new", "plans_new", ("POST",), response=shapes.PlanSaved, body=PlanSpec,
           statuses=(201,), refusals=(422,))
@admin_required
def api_new():
    """Save a new plan."""
    return submit(None, None)


@api_route("/plans/<int:plan_id>/edit", "plans_edit", ("POST",), response=shapes.PlanSaved,
           body=PlanSpec, refusals=(422,))
@admin_required
def api_edit(plan_id: int):
    """Change a plan: the whole spec (a specific secret left out is kept)."""
    return submit(found_plan(plan_id), None)


# ---- run, delete --------------------------------------------------------------------------

@action(bp, "/plans/<int:plan_id>/execute", response=shapes.Started, statuses=(201,))
@admin_required
def execute(plan_id: int):
    plan = found_plan(plan_id)
    started = start_execution(current_app.extensions["keyturn.ctl"], plan,
                              trigger="api" if is_api() else "manual",
                              started_by=current_user.username)
    audit("plan.run", f"plan/{plan.name}", f"execution {started.id}")
    return Done(ngettext("execution %(execution)s started: %(count)s account, %(skipped)s skipped",
                         "execution %(execution)s started: %(count)s accounts, %(skipped)s skipped",
                         started.total, execution=started.id, count=number(started.total),
                         skipped=started.skipped),
                url_for("executions.show", execution_id=started.id),
                {"execution": started.id}, 201)


@bp.route("/plans/<int:plan_id>/delete", methods=["GET"], endpoint="confirm_delete")
@admin_required
def confirm_delete(plan_id: int):
    return render_template("plans/delete.html", plan=serialize.plan_row(found_plan(plan_id)))


@action(bp, "/plans/<int:plan_id>/delete", response=shapes.Message)
@admin_required
def delete(plan_id: int):
    plan = found_plan(plan_id)
    delete_plan(plan)
    return Done(gettext("plan %(name)s deleted (its executions and records are kept)",
                        name=plan.name),
                url_for("plans.index"))
