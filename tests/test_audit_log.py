"""The audit log is complete: inventory, plans, users, roles, tokens, profiles, record actions,
reveals and refused attempts, each with its actor, address, target and the non-secret fields
before and after (a secret only said to change); filtered by actor, action, target, outcome
and time, exported as CSV that no spreadsheet runs, and read by auditors."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from controller.audit import audit
from controller.models import AuditEvent, Record, User, utcnow
from controller.web import users
from tests.web_support import PASSWORD, Console, make_person, next_code

ACCOUNT_SECRET = "Fresh-Secret-9z"
PLAN_SECRET = "Given-Plan-Secret-7q"
FILE_PASSWORD = "open-sesame-42"


def event(action: str) -> AuditEvent:
    return AuditEvent.select().where(AuditEvent.action == action).order_by(
        AuditEvent.id.desc()).get()


def everything_audited() -> str:
    return json.dumps([[e.actor, e.action, e.target, e.detail, e.address, e.before, e.after]
                       for e in AuditEvent.select()])


def test_changes_are_audited_with_actor_address_and_before_after(ctl, app, as_admin, ran):
    record = Record.get()
    asset = record.account.asset
    as_admin.post_json(f"/api/v1/assets/{asset.id}/edit", {"address": "10.0.0.7", "port": 2022})
    edited = event("asset.edit")
    assert (edited.actor, edited.address, edited.target) == ("ada", "127.0.0.1",
                                                              f"asset/{asset.name}")
    assert edited.before == {"address": "127.0.0.1", "port": 22}
    assert edited.after == {"address": "10.0.0.7", "port": 2022}
    account = record.account
    as_admin.post_json(f"/api/v1/accounts/{account.id}/edit", {"secret": ACCOUNT_SECRET})
    changed = event("account.edit")
    assert changed.before["secret"] == changed.after["secret"] == "(changed)"
    plan = as_admin.post_json("/api/v1/plans/new", {
        "name": "given", "usernames": ["alice"], "assets": [asset.name], "strategy": "specific",
        "secret": PLAN_SECRET}).json
    assert event("plan.add").after["name"] == "given" and event("plan.add").after["secret"]
    as_admin.post_json(f"/api/v1/plans/{plan['plan']['id']}/edit", {
        "name": "given", "usernames": ["alice", "bob"], "assets": [asset.name],
        "strategy": "specific"})
    assert event("plan.edit").before["usernames"] == ["alice"]
    assert event("plan.edit").after["usernames"] == ["alice", "bob"]
    as_admin.post_json(f"/api/v1/plans/{plan['plan']['id']}/execute")
    assert event("plan.run").target == "plan/given"
    as_admin.post_json(f"/api/v1/plans/{plan['plan']['id']}/delete")
    assert event("plan.delete").before["name"] == "given"
    as_admin.post_json("/api/v1/me/profile", {"email": "ada@example.org",
                                               "file_password": FILE_PASSWORD})
    profile = event("user.profile")
    assert profile.after == {"email": "ada@example.org", "file_password": "(changed)"}
    make_person(ctl, "nina", "auditor")
    assert event("user.add").after == {"username": "nina", "role": "auditor", "email": None}
    nina = User.get(User.username == "nina")
    as_admin.post_json(f"/api/v1/users/{nina.id}/role",
                       {"role": "admin", "code": next_code(as_admin.person)})
    role = event("user.role")
    assert (role.before, role.after) == ({"role": "auditor"}, {"role": "admin"})
    failed = Record.get(Record.status == "failed")
    as_admin.post_json(f"/api/v1/records/{failed.id}/ignore")
    assert event("record.ignore").target == f"record/{failed.id}"
    as_admin.post_json(f"/api/v1/records/{failed.id}/retry")
    assert f"records {failed.id} of execution {ran.id}" in event("record.retry").detail
    secret = next(r for r in Record.select() if r.new_secret)
    as_admin.post(f"/records/{secret.id}/reveal", {"code": next_code(as_admin.person)})
    assert event("secret.reveal").target == f"record/{secret.id}"
    text = everything_audited()
    for value in (ACCOUNT_SECRET, PLAN_SECRET, FILE_PASSWORD, PASSWORD,
                  ctl.vault.decrypt(secret.new_secret)):
        assert value not in text
    assert text.count('"127.0.0.1"') >= 10


def test_a_tokens_changes_name_the_token(ctl, app, admin, fleet):
    token = users.new_api_token(User.get(User.username == admin.username))
    api = app.test_client()
    done = api.post("/api/v1/nodes/new", json={"path": "/lab"},
                    headers={"Authorization": f"Bearer {token}"})
    assert done.status_code == 201
    assert event("node.add").actor == "ada (token)"
    assert token not in everything_audited()


def test_refused_attempts_are_audited_with_the_reason(ctl, app, as_admin, as_auditor, ran):
    record = Record.get()
    forbidden = as_auditor.post_json(f"/api/v1/assets/{record.account.asset_id}/delete")
    assert forbidden.status_code == 403
    refused = AuditEvent.get((AuditEvent.outcome == "refused") & (AuditEvent.actor == "otto"))
    assert refused.detail == "this needs the admin role" and refused.address == "127.0.0.1"
    assert refused.target == f"/api/v1/assets/{record.account.asset_id}/delete"
    as_admin.post_json("/api/v1/zones/new", {"name": "Bad Zone"})
    bad = AuditEvent.select().where((AuditEvent.outcome == "refused")
                                    & (AuditEvent.actor == "ada")).get()
    assert bad.action == "inventory.add_zone" and bad.detail.startswith("zone: ")
    Console(app).post("/login", {"username": "ada", "password": "wrong password"})
    assert event("auth.failed").outcome == "refused"


def test_the_log_filters_and_exports_csv_no_spreadsheet_runs(ctl, as_admin, as_auditor, fleet):
    audit("request.refused", "request/?", "=HYPERLINK(\"http://evil.example\")", actor="@evil",
          refused=True)
    AuditEvent.update(at=utcnow() - timedelta(days=3)).where(
        AuditEvent.action == "request.refused").execute()
    as_admin.post_json("/api/v1/nodes/new", {"path": "/lab"})

    def found(**filters):
        page = as_auditor.get("/api/v1/audit", query_string=filters)
        assert page.status_code == 200, page.json
        return {e["action"] for e in page.json["events"]["items"]}

    assert found(actor="@evil") == {"request.refused"}
    assert found(action="account.") == {"account.add"}
    assert found(action="node.add", target="node/") == {"node.add"}
    assert found(target="account/web-1/") == {"account.add"}
    assert found(outcome="refused") == {"request.refused"}
    day = (utcnow() - timedelta(days=3)).date().isoformat()
    assert found(since=day, until=day) == {"request.refused"}
    assert "request.refused" not in found(since=(utcnow() - timedelta(days=1)).date().isoformat())
    bad = as_auditor.get("/api/v1/audit?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json["fields"]
    for path in ("/audit.csv?outcome=refused", "/api/v1/audit.csv?outcome=refused"):
        exported = as_auditor.get(path)
        assert exported.status_code == 200 and exported.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
        assert [(r["actor"], r["detail"]) for r in rows] == [
            ("'@evil", "'=HYPERLINK(\"http://evil.example\")")]
    full = list(csv.DictReader(io.StringIO(as_auditor.get("/audit.csv?action=node.add")
                                           .get_data(as_text=True))))
    assert json.loads(full[0]["after"]) == {"path": "/lab"} and full[0]["address"] == "127.0.0.1"
    page = as_auditor.get("/audit?outcome=refused").text
    assert "refused" in page and "Export CSV" in page
