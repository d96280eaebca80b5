"""The console's words for the values the data holds: statuses, triggers, roles, record
actions, secret types. The data (and the JSON API, and CSS classes) keep the English value;
a page shows it through the `term` filter, in the page's language. A value not listed here
(a name, a code, something newer than this table) is shown as it is."""
from __future__ import annotations

from flask_babel import gettext

from controller.web.i18n import N_
from shared.errors import translated

TERMS = {
    # statuses of executions and records (a badge's text)
    "pending": N_("pending"), "dispatched": N_("dispatched"), "success": N_("success"),
    "failed": N_("failed"), "unverified": N_("unverified"), "cancelled": N_("cancelled"),
    "running": N_("running"), "paused": N_("paused"), "empty": N_("empty"),
    "waiting": N_("waiting"), "done": N_("done"), "refused": N_("refused"),
    "delivered": N_("delivered"), "active": N_("active"), "inactive": N_("inactive"),
    # what started an execution
    "manual": N_("manual"), "schedule": N_("schedule"), "retry": N_("retry"), "api": N_("api"),
    "verify": N_("verify"), "bus": N_("bus"),
    # roles
    "admin": N_("admin"), "auditor": N_("auditor"),
    # what a record does
    "rotate": N_("rotate"), "test": N_("test"),
    # secret types and strategies
    "password": N_("password"), "ssh_key": N_("ssh_key"),
    "random": N_("random"), "specific": N_("specific"),
}


def term(value) -> str:
    """`value` in the page's language when it is one of ours, else as it is."""
    text = "" if value is None else str(value)
    return gettext(TERMS[text]) if text in TERMS else text


def labels(*values: str) -> dict[str, str]:
    """Several values' words, for a script on the page that shows them live (app.js)."""
    return {value: term(value) for value in values}


def said(text) -> str:
    """A message of ours (a `Said`, a `KeyturnError`, a marked text) in the page's language."""
    return translated(text, gettext)


def registry(text: str | None) -> str:
    """A text of the platform registry (`shared.platforms`: an account rule, a parameter's
    hint) in the page's language. `shared` stays free of Flask, so these are not marked
    there: `registry_texts` lists them for the catalogue, and a test keeps it complete."""
    return gettext(text) if text else ""


def registry_texts() -> set[str]:
    """Every text of the registry a page shows through `registry`."""
    from controller.web.inventory import param_fields
    from shared.platforms import PLATFORMS

    texts = set()
    for platform in PLATFORMS.values():
        texts.add(platform.account_rule)
        texts |= {f["hint"] for f in param_fields(platform) if f.get("hint")}
    return texts - {""}


def schedule(plan: dict) -> str:
    """A plan row's schedule in words (`serialize.schedule_text` says it in English for
    the API)."""
    if plan.get("crontab"):
        return gettext("cron %(line)s", line=plan["crontab"])
    if plan.get("interval_hours"):
        return gettext("every %(hours)s h", hours=plan["interval_hours"])
    return gettext("manual")


# HTTP problems a page may show, by status: their name, and what to say when the problem
# carries only werkzeug's own (English) description.
PROBLEMS = {
    400: (N_("Bad Request"), N_("The request was not what this page takes.")),
    401: (N_("Unauthorized"), N_("Sign in first.")),
    403: (N_("Forbidden"), N_("You may not do this.")),
    404: (N_("Not Found"), N_("There is nothing at this address.")),
    405: (N_("Method Not Allowed"), N_("This address does not take this kind of request.")),
    409: (N_("Conflict"), N_("This conflicts with the current state.")),
    413: (N_("Request Entity Too Large"), N_("The request is too large.")),
    422: (N_("Unprocessable Entity"), N_("Some fields are not valid.")),
    429: (N_("Too Many Requests"), N_("Too many requests: wait a moment and try again.")),
    500: (N_("Internal Server Error"), N_("Something went wrong on the server.")),
}


def problem_name(problem) -> str:
    """An HTTP error's name in the page's language."""
    known = PROBLEMS.get(problem.code)
    return gettext(known[0]) if known else problem.name


def problem_text(problem) -> str:
    """What went wrong: our own description in the page's language when the catalogue has
    it (an `N_`-marked one), werkzeug's default as our sentence for the status, else as
    it is (a description that names a value, like "no plan 7", stays English)."""
    if hasattr(problem, "said"):                 # a `forms.BadInput`: its problems, said here
        return problem.said(gettext)
    description = problem.description or ""
    if description == type(problem).description and problem.code in PROBLEMS:
        return gettext(PROBLEMS[problem.code][1])
    return gettext(description) if description else ""
