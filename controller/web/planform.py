"""The plan form: its fields to a `PlanSpec` dict and a saved plan back to its fields. The
form never carries a stored secret: left blank on edit or clone, the plan's secret is kept.
A param left blank (or unticked) is not set, so each asset's own params apply to it."""
from __future__ import annotations

import re

from flask import current_app
from werkzeug.datastructures import MultiDict

from controller.models import Asset, Node, Plan, PlanAsset, PlanNode
from controller.plans import ROLLOUT_FIELDS
from controller.web.inventory import param_fields, typed_params
from shared.platforms import PLATFORMS, SecretType

CHECKBOXES = ("lowercase", "uppercase", "digits", "symbols", "active")
PARAM_CHECKBOXES = ("create_user", "modify_sudo")
PARAM_TEXTS = ("become", "shell", "home", "group", "uid", "key_strategy")
PARAM_LISTS = ("groups", "sudo_commands")
SPLIT = re.compile(r"[\s,]+")


def other_params() -> list[dict]:
    """The params of the platforms whose fields the form does not lay out by hand (the UNIX
    ones above), each once, with the titles of the platforms that take it."""
    laid_out = {*PARAM_CHECKBOXES, *PARAM_TEXTS, *PARAM_LISTS}
    found: dict[str, dict] = {}
    for kind in PLATFORMS.values():
        for described in param_fields(kind):
            if described["name"] not in laid_out:
                found.setdefault(described["name"], described | {"platforms": []})[
                    "platforms"].append(kind.title)
    return list(found.values())


def offered() -> dict:
    """What the form offers besides names: the secret types and the other platforms' params."""
    return {"secret_types": [str(kind) for kind in SecretType], "other_params": other_params()}


def words(text: str) -> list[str]:
    return [part for part in SPLIT.split(text or "") if part]


def chosen(form: MultiDict, name: str) -> list[str]:
    return [value.strip() for value in form.getlist(name) if value.strip()]


def spec_data(form: MultiDict, keep_secret_of: Plan | None) -> dict:
    """The submitted form as `parse_spec` input; blank optional fields are left out."""
    data = {"name": form.get("name", "").strip(), "usernames": words(form.get("usernames")),
            "assets": chosen(form, "assets"), "nodes": chosen(form, "nodes"),
            "recipients": chosen(form, "recipients")}
    for name in ("strategy", "secret_type", "key_type", "length", "exclude_symbols",
                 "ssh_timeout", *ROLLOUT_FIELDS):
        if form.get(name, "").strip():
            data[name] = form[name].strip() if name != "exclude_symbols" else form[name]
    for name in CHECKBOXES:
        data[name] = name in form
    schedule = form.get("schedule", "manual")
    if schedule == "interval":
        data["interval_hours"] = form.get("interval_hours", "").strip() or None
    elif schedule == "crontab":
        data["crontab"] = form.get("crontab", "").strip() or None
    params = {name: True for name in PARAM_CHECKBOXES if f"params.{name}" in form}
    params |= {name: form[f"params.{name}"].strip() for name in PARAM_TEXTS
               if form.get(f"params.{name}", "").strip()}
    params |= {name: [line.strip() for line in form.get(f"params.{name}", "").splitlines()
                      if line.strip()] for name in PARAM_LISTS}
    if not params["sudo_commands"]:
        del params["sudo_commands"]
    data["params"] = params | typed_params(form, "params.", other_params())
    for name in ("secret", "passphrase"):     # the form has a secret box per secret type
        typed = next((value for value in form.getlist(name) if value), None)
        if typed:
            data[name] = typed
    keep = keep_secret_of is not None and keep_secret_of.given_secret is not None
    if "secret" not in data and keep and data.get("strategy") == "specific":
        data["secret"] = current_app.extensions["keyturn.ctl"].vault.decrypt(
            keep_secret_of.given_secret)
    return data


def form_values(plan: Plan | None) -> dict:
    """A saved plan as the form shows it (a new plan: the defaults). No secret."""
    if plan is None:
        return {"strategy": "random", "secret_type": SecretType.PASSWORD, "key_type": "ed25519",
                "length": 16, "lowercase": True, "uppercase": True, "digits": True,
                "symbols": True, "active": True, "schedule": "manual", "params": {},
                "assets": [], "nodes": [], "recipients": [], "usernames": ""}
    params = plan.params or {}
    return {"name": plan.name, "usernames": ", ".join(plan.usernames),
            "assets": [a for (a,) in Asset.select(Asset.name).join(PlanAsset)
                       .where(PlanAsset.plan == plan).tuples()],
            "nodes": [n for (n,) in Node.select(Node.path).join(PlanNode)
                      .where(PlanNode.plan == plan).tuples()],
            "strategy": plan.strategy, "secret_type": plan.secret_type,
            "key_type": plan.key_type, "has_secret": plan.given_secret is not None,
            "length": plan.length, "lowercase": plan.lowercase, "uppercase": plan.uppercase,
            "digits": plan.digits, "symbols": plan.symbols,
            "exclude_symbols": plan.exclude_symbols, "ssh_timeout": plan.ssh_timeout,
            "schedule": "crontab" if plan.crontab else "interval" if plan.interval_hours else "manual",
            "interval_hours": plan.interval_hours, "crontab": plan.crontab,
            "recipients": plan.recipients, "active": plan.active,
            **rollout_values(plan.rollout),
            "params": params | {name: "\n".join(params.get(name) or []) for name in PARAM_LISTS}}


def rollout_values(rollout: dict | None) -> dict:
    """A plan's rollout as its form fields (waves as typed, joined)."""
    values = dict(rollout or {})
    if values.get("waves"):
        values["waves"] = ",".join(values["waves"])
    return values


def resubmitted(form: MultiDict, plan: Plan | None) -> dict:
    """What the operator typed, to show the form again beside its errors (secrets dropped)."""
    data = spec_data(form, None)
    data.pop("secret", None)
    data.pop("passphrase", None)
    data["usernames"] = form.get("usernames", "")
    data["schedule"] = form.get("schedule", "manual")
    data["interval_hours"] = form.get("interval_hours", "")
    data["crontab"] = form.get("crontab", "")
    data["params"] |= {name: form.get(f"params.{name}", "") for name in PARAM_LISTS}
    data["has_secret"] = bool(plan and plan.given_secret)
    return data
