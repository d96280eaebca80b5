"""Rollouts in the console and the API: the plan form's rollout fields (saved, shown again on
edit, a bad one marked beside its field), the API's plan body, and the execution page's pause,
resume and cancel buttons and their API twins (admins only, audited, the state in words)."""
from __future__ import annotations

import re

from controller.dispatch import dispatch_pending
from controller.models import AuditEvent, Execution, Plan, Record
from controller.planning import start_execution
from tests.test_web_plans import FORM
from tests.web_support import save

ROLLOUT = {"waves": "1,50%,100%", "max_failures": "10%", "window": "Mon-Fri 01:00-05:00",
           "asset_limit": "1", "zone_limit": "20", "connect_rate": "2.5"}


def test_the_plan_form_saves_and_shows_the_rollout(as_admin, fleet):
    answer = as_admin.post("/plans/new", FORM | ROLLOUT)
    assert answer.status_code == 302, answer.text
    plan = Plan.get(Plan.name == "quarterly")
    assert plan.rollout == {"waves": ["1", "50%", "100%"], "max_failures": "10%",
                            "window": "Mon-Fri 01:00-05:00", "asset_limit": 1,
                            "zone_limit": 20, "connect_rate": 2.5}
    shown = as_admin.get(f"/plans/{plan.id}").text
    assert ("waves 1,50%,100%, brake 10%; window Mon-Fri 01:00-05:00; at most 1 in flight per "
            "asset; at most 20 in flight per zone; at most 2.5 new SSH connections/s per zone"
            in shown)
    edit = as_admin.get(f"/plans/{plan.id}/edit").text
    for name, value in ROLLOUT.items():
        assert re.search(rf'name="{name}" type="[a-z]+" value="{re.escape(value)}"', edit), name
    bad = as_admin.post("/plans/new", FORM | {"name": "other", "window": "weekdays 9-5"})
    assert bad.status_code == 422
    assert re.search(r'<div class="field invalid"><label for="f-window">.*?class="err">'
                     r"&#39;weekdays 9-5&#39; is not days and hours", bad.text, re.S)


def test_the_api_takes_a_rollout_and_names_a_bad_field(as_admin, fleet):
    body = {"name": "api-plan", "usernames": ["alice"], "nodes": ["/prod"],
            "waves": ["1", "100%"], "window": "daily 00:00-24:00", "asset_limit": 2}
    made = as_admin.post_json("/api/v1/plans/new", body)
    assert made.status_code == 201, made.json
    assert Plan.get(Plan.name == "api-plan").rollout["max_failures"] == "0"
    refused = as_admin.post_json("/api/v1/plans/new", body | {"name": "x", "waves": ["1", "5%"]})
    assert refused.status_code == 422          # the plan endpoints refuse as the form does
    assert "waves" in str(refused.json) and "100%" in str(refused.json)


def test_pause_resume_and_cancel_from_the_execution_page_and_the_api(ctl, as_admin,
                                                                     as_auditor, fleet):
    execution = start_execution(ctl, save(ctl, asset_limit=1))
    assert dispatch_pending(ctl) == 2                   # one on each of the two assets
    page = as_admin.get(f"/executions/{execution.id}").text
    assert "Pause" in page and ("2 records wait on the rate limits (at most 1 in flight per "
                                "asset)") in page
    assert "waiting on a limit" in as_admin.get("/executions").text
    assert as_auditor.post(f"/executions/{execution.id}/pause").status_code == 403
    paused = as_admin.post(f"/executions/{execution.id}/pause")
    assert paused.status_code == 302
    page = as_admin.get(f"/executions/{execution.id}").text
    assert "Resume" in page and "paused by ada" in page
    resumed = as_admin.post_json(f"/api/v1/executions/{execution.id}/resume")
    assert resumed.status_code == 200 and resumed.json["status"] == "running"
    again = as_admin.post_json(f"/api/v1/executions/{execution.id}/resume")
    assert again.status_code == 409 and "only a paused execution resumes" in again.json["error"]
    cancelled = as_admin.post_json(f"/api/v1/executions/{execution.id}/cancel")
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json == {"message": f"execution {execution.id} cancelled: 2 records not sent",
                              "execution": execution.id, "status": "cancelled", "cancelled": 2}
    assert Execution.get_by_id(execution.id).status == "cancelled"
    assert Record.select().where(Record.status == "dispatched").count() == 2   # they settle
    assert {e.action for e in AuditEvent.select().where(AuditEvent.actor == "ada")} >= {
        "execution.pause", "execution.resume", "execution.cancel"}
    assert as_admin.post_json("/api/v1/executions/999999/cancel").status_code == 404
