"""Plans in the console and the API: list and search, the form with every parameter and its
errors beside the fields, the stored secret that never returns to the page, and run, clone
and delete."""
from __future__ import annotations

import re

from controller.models import Execution, Plan, PlanAsset, Record
from tests.web_support import save


FORM = {"name": "quarterly", "usernames": "alice, bob", "nodes": "/prod", "strategy": "random",
        "secret_type": "password", "length": "20", "lowercase": "on", "uppercase": "on",
        "digits": "on", "symbols": "on", "exclude_symbols": "!@", "schedule": "interval",
        "interval_hours": "24", "params.become": "sudo", "params.create_user": "on",
        "params.shell": "/bin/sh", "params.groups": "wheel\nops", "recipients": "ada",
        "active": "on"}


def test_create_a_random_plan_with_every_parameter(ctl, as_admin, fleet):
    answer = as_admin.post("/plans/new", FORM)
    plan = Plan.get(Plan.name == "quarterly")
    assert answer.location == f"/plans/{plan.id}"
    assert plan.usernames == ["alice", "bob"] and plan.length == 20 and plan.symbols
    assert plan.exclude_symbols == "!@" and plan.interval_hours == 24 and plan.crontab is None
    assert plan.params["become"] == "sudo" and plan.params["create_user"]
    assert plan.params["shell"] == "/bin/sh" and plan.params["groups"] == ["wheel", "ops"]
    assert plan.recipients == ["ada"] and plan.next_run_at is not None
    page = as_admin.get(answer.location).text
    assert "every 24 h" in page and plan.next_run_at.strftime("%Y-%m-%d %H:%M") in page


def test_errors_are_shown_beside_their_fields(as_admin, fleet):
    def marked(text, field):
        found = re.search(rf'<div class="field invalid"><label for="f-{field}">.*?'
                          rf'class="err">([^<]+)<', text, re.S)
        return found.group(1) if found else None

    bad = FORM | {"name": "", "usernames": "bad name!", "schedule": "crontab",
                  "crontab": "not a crontab", "params.uid": "-4"}
    answer = as_admin.post("/plans/new", bad)
    assert answer.status_code == 422
    assert "at least 1 character" in marked(answer.text, "name")
    assert "not a valid user name: name!" in marked(answer.text, "usernames")
    assert "crontab" in marked(answer.text, "crontab")
    assert "must be at least 0" in marked(answer.text, "params.uid")
    assert 'value="bad name!"' in answer.text             # what was typed comes back
    short = as_admin.post("/plans/new", FORM | {"length": "3"})
    assert "between 8 and 64" in marked(short.text, "length")
    assert not Plan.select().exists()


def test_targets_error_for_a_plan_without_assets_or_nodes(as_admin, fleet):
    answer = as_admin.post("/plans/new", FORM | {"nodes": ""})
    assert answer.status_code == 422 and "name at least one asset or node" in answer.text


def test_specific_secret_is_kept_on_edit_and_never_sent_back(ctl, as_admin, fleet):
    given = "Given-Secret-42!"
    form = FORM | {"strategy": "specific", "secret": given, "schedule": "manual"}
    as_admin.post("/plans/new", form)
    plan = Plan.get(Plan.name == "quarterly")
    assert ctl.vault.decrypt(plan.given_secret) == given
    edit = as_admin.get(f"/plans/{plan.id}/edit")
    assert given not in edit.text and "leave blank to keep it" in edit.text
    form.pop("secret")
    saved = as_admin.post(f"/plans/{plan.id}/edit", form | {"usernames": "alice"})
    assert saved.status_code == 302
    plan = Plan.get_by_id(plan.id)
    assert plan.usernames == ["alice"] and ctl.vault.decrypt(plan.given_secret) == given
    failed = as_admin.post(f"/plans/{plan.id}/edit", form | {"name": ""})
    assert failed.status_code == 422 and given not in failed.text


def test_specific_strategy_needs_a_secret(as_admin, fleet):
    answer = as_admin.post("/plans/new", FORM | {"strategy": "specific"})
    assert answer.status_code == 422 and "is required with the specific strategy" in answer.text


def test_list_searches_and_pages_by_name(ctl, as_admin, fleet):
    for index in range(7):
        save(ctl, f"plan-{index}")
    save(ctl, "other")
    page = as_admin.get("/api/v1/plans?size=3").json["plans"]
    assert [p["name"] for p in page["items"]] == ["other", "plan-0", "plan-1"]
    assert page["total"] == 8 and page["before"] is None
    second = as_admin.get(f"/api/v1/plans?size=3&after={page['after']}").json["plans"]
    assert [p["name"] for p in second["items"]] == ["plan-2", "plan-3", "plan-4"]
    back = as_admin.get(f"/api/v1/plans?size=3&before={second['before']}").json["plans"]
    assert [p["name"] for p in back["items"]] == ["other", "plan-0", "plan-1"]
    found = as_admin.get("/api/v1/plans?q=lan-").json["plans"]
    assert found["total"] == 7
    html = as_admin.get("/plans?size=3").text
    assert "older →" in html and "8 plans" in html


def test_execute_now_creates_pending_records_for_the_daemon(ctl, as_admin, fleet):
    plan = save(ctl)
    answer = as_admin.post(f"/plans/{plan.id}/execute")
    execution = Execution.get()
    assert answer.location == f"/executions/{execution.id}"
    assert (execution.trigger, execution.started_by, execution.total) == ("manual", "ada", 4)
    assert {r.status for r in Record.select()} == {"pending"}        # nothing published here
    page = as_admin.get(answer.location).text
    assert "running" in page and 'data-poll="/api/v1/executions/' in page


def test_clone_copies_everything_but_the_name(ctl, as_admin, fleet):
    plan = save(ctl, strategy="specific", secret="Cloned-Secret-1", assets=["web-1"])
    form = as_admin.get(f"/plans/new?clone_of={plan.id}").text
    assert 'value="nightly (copy)"' in form and "Cloned-Secret-1" not in form
    assert '<option value="web-1" selected>' in form
    answer = as_admin.post("/plans/new", {"clone_of": str(plan.id), "name": "copy",
                                          "usernames": "alice", "assets": "web-1",
                                          "strategy": "specific", "secret_type": "password",
                                          "schedule": "manual"})
    copy = Plan.get(Plan.name == "copy")
    assert answer.location == f"/plans/{copy.id}"
    assert ctl.vault.decrypt(copy.given_secret) == "Cloned-Secret-1"
    assert PlanAsset.select().where(PlanAsset.plan == copy).count() == 1


def test_delete_asks_first_and_keeps_the_history(ctl, as_admin, fleet):
    plan = save(ctl)
    as_admin.post(f"/plans/{plan.id}/execute")
    confirm = as_admin.get(f"/plans/{plan.id}/delete")
    assert confirm.status_code == 200 and "Delete plan" in confirm.text
    assert Plan.select().exists()
    assert as_admin.post(f"/plans/{plan.id}/delete").location == "/plans"
    assert not Plan.select().exists() and Execution.get().plan_name == "nightly"
    assert as_admin.get(f"/plans/{plan.id}").status_code == 404


def test_plans_over_the_api(ctl, as_admin, fleet):
    spec = {"name": "api-plan", "usernames": ["alice"], "assets": ["web-1"], "length": 24,
            "crontab": "0 3 * * 1"}
    created = as_admin.post_json("/api/v1/plans/new", spec)
    assert created.status_code == 201 and created.json["plan"]["schedule"] == "cron 0 3 * * 1"
    plan_id = created.json["plan"]["id"]
    shown = as_admin.get(f"/api/v1/plans/{plan_id}").json["plan"]
    assert shown["assets"] == ["web-1"] and shown["length"] == 24
    edited = as_admin.post_json(f"/api/v1/plans/{plan_id}/edit", spec | {"length": 30})
    assert edited.status_code == 200 and Plan.get_by_id(plan_id).length == 30
    invalid = as_admin.post_json("/api/v1/plans/new", {"name": "x"})
    assert invalid.status_code == 422 and "usernames" in invalid.json["errors"]
    run = as_admin.post_json(f"/api/v1/plans/{plan_id}/execute")
    assert run.status_code == 201
    assert Execution.get_by_id(run.json["execution"]).trigger == "api"


def test_auditor_reads_plans_but_changes_nothing(ctl, as_auditor, fleet):
    plan = save(ctl)
    assert as_auditor.get("/plans").status_code == 200
    assert as_auditor.get(f"/plans/{plan.id}").status_code == 200
    assert "Execute now" not in as_auditor.get(f"/plans/{plan.id}").text
    for path in ("/plans/new", f"/plans/{plan.id}/edit", f"/plans/{plan.id}/delete"):
        assert as_auditor.get(path).status_code == 403, path
    for path in ("/plans/new", f"/plans/{plan.id}/edit", f"/plans/{plan.id}/delete",
                 f"/plans/{plan.id}/execute"):
        assert as_auditor.post(path, FORM).status_code == 403, path
    assert Plan.select().count() == 1 and not Execution.select().exists()
