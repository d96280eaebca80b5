"""Overview, executions, inventory, users and audit pages, and two sweeps over every route:
each page renders for both roles, and an auditor gets 403 from everything that changes state."""
from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

from controller.models import (Account, Asset, AuditEvent, Execution, LogLine, Node, User,
                               WorkerSeen, Zone, utcnow)
from controller.planning import start_execution
from controller.web import users
from tests.web_support import PASSWORD, Console, finish, route_samples, save

# What the console's Content-Security-Policy makes a browser ignore: an inline style sheet,
# script or event handler (a page's style and behaviour live in app.css and app.js).
INLINE = re.compile(r"<style|<script(?![^>]*\bsrc=)|\son[a-z]+=", re.I)


# ---- sweeps over every route --------------------------------------------------------------

def test_every_page_renders_for_both_roles(app, as_admin, as_auditor, ran):
    redirects = {"/", "/login/code", "/login/enrol"}     # home; no sign-in under way
    admin_only = {"/users", "/api/v1/users", "/plans/new"}
    checked = 0
    for rule, path in route_samples(app, ran):
        if "GET" not in rule.methods:
            continue
        for client in (as_admin, as_auditor):
            expected = 302 if path in redirects else 200
            if client is as_auditor and (path in admin_only or path.endswith(("/edit", "/delete"))):
                expected = 403
            answer = client.get(path)
            assert answer.status_code == expected, (client.person.role, path)
            if answer.mimetype == "text/html":   # the policy (style-src/script-src 'self') drops these
                assert not INLINE.search(answer.get_data(as_text=True)), path
            checked += 1
    assert checked >= 50


def test_auditor_gets_403_from_every_change(app, as_auditor, ran):
    own = {"/logout", "/login", "/login/code", "/login/enrol", "/me/profile", "/me/password",
           "/me/token", "/me/token/revoke", "/api/v1/me/profile", "/api/v1/me/password",
           "/api/v1/me/token", "/api/v1/me/token/revoke"}
    checked = 0
    for rule, path in route_samples(app, ran):
        if "POST" not in rule.methods or path in own:
            continue
        answer = (as_auditor.post_json(path) if path.startswith("/api/") else
                  as_auditor.post(path, {"name": "x", "path": "/x", "username": "x"}))
        assert answer.status_code == 403, path
        checked += 1
    assert checked >= 30
    assert Execution.select().count() == 1 and not Node.select().where(Node.path == "/x").exists()


# ---- overview -----------------------------------------------------------------------------

def test_overview_counts_chart_and_windows(ctl, as_admin, ran):
    old = start_execution(ctl, save(ctl, "older", usernames=["alice"]), started_by="ada")
    finish(old, {})
    Execution.update(created_at=utcnow() - timedelta(days=12)).where(Execution.id == old.id).execute()
    start_execution(ctl, save(ctl, "live", usernames=["alice"]), started_by="ada")
    week = as_admin.get("/api/v1/overview").json
    counts = week["counts"]
    assert (counts["plans"], counts["assets_covered"], counts["executions"]) == (3, 2, 2)
    assert (counts["executions_succeeded"], counts["executions_failed"],
            counts["executions_running"]) == (0, 1, 1)
    assert (counts["records"], counts["records_succeeded"], counts["records_failed"]) == (6, 3, 1)
    assert [e["plan"] for e in week["running"]] == ["live"]
    assert len(week["daily"]) == 7 and week["daily"][-1] == {
        "day": utcnow().date().isoformat(), "succeeded": 3, "failed": 1}
    assert [(r["asset"], r["account"], r["plan"]) for r in week["failed"]] == [("web-2", "bob", "nightly")]
    month = as_admin.get("/api/v1/overview?days=30").json
    assert month["days"] == 30 and month["counts"]["executions"] == 3 and len(month["daily"]) == 30
    assert month["counts"]["executions_succeeded"] == 1
    page = as_admin.get("/overview").text
    assert '<svg class="chart"' in page and "3 succeeded, 1 failed" in page


def test_failed_list_forgets_an_account_that_succeeded_later(ctl, as_admin, ran):
    retry = start_execution(ctl, save(ctl, "again", usernames=["bob"], nodes=[],
                                      assets=["web-2"]), started_by="ada")
    finish(retry, {})
    assert as_admin.get("/api/v1/overview").json["failed"] == []


def test_failed_list_reads_candidates_in_batches(ctl, as_admin, fleet, monkeypatch):
    from controller.web import overview

    monkeypatch.setattr(overview, "FAILED_BATCH", 1)
    plan = save(ctl)
    first = start_execution(ctl, plan, started_by="ada")
    finish(first, {key: "failed" for key in ("alice@web-1", "alice@web-2", "bob@web-1",
                                              "bob@web-2")})
    second = start_execution(ctl, plan, started_by="ada")
    finish(second, {"bob@web-2": "failed"})
    failed = as_admin.get("/api/v1/overview").json["failed"]
    assert [(r["execution"], r["account"], r["asset"], r["failures"]) for r in failed] == [
        (second.id, "bob", "web-2", 2)]           # once, its newest failure, with the count


def test_failed_list_merges_failed_and_unverified_newest_first(ctl, as_admin, fleet, monkeypatch):
    from controller.web import overview

    monkeypatch.setattr(overview, "FAILED_BATCH", 1)      # each batch merges the two statuses
    first = start_execution(ctl, save(ctl), started_by="ada")
    finish(first, {"alice@web-1": "unverified", "alice@web-2": "failed", "bob@web-1": "unverified",
                   "bob@web-2": "failed"})
    failed = as_admin.get("/api/v1/overview").json["failed"]
    assert sorted((r["account"], r["asset"]) for r in failed) == [
        ("alice", "web-1"), ("alice", "web-2"), ("bob", "web-1"), ("bob", "web-2")]
    ids = [r["id"] for r in failed]
    assert ids == sorted(ids, reverse=True)


# ---- executions ---------------------------------------------------------------------------

def test_execution_list_filters_and_pages(ctl, as_admin, ran):
    start_execution(ctl, save(ctl, "nightly-2"), started_by="ada")
    for _ in range(2):
        start_execution(ctl, ran.plan, started_by="ada")
    listed = as_admin.get("/api/v1/executions?size=2").json["executions"]
    assert listed["total"] == 4 and len(listed["items"]) == 2 and listed["after"]
    assert as_admin.get("/api/v1/executions?status=failed").json["executions"]["total"] == 1
    assert as_admin.get("/api/v1/executions?plan=nightly-2").json["executions"]["total"] == 1
    assert as_admin.get("/api/v1/executions?trigger=retry").json["executions"]["total"] == 0
    assert "older →" in as_admin.get("/executions?size=2").text


def test_execution_page_shows_log_counts_and_report(as_admin, ran):
    shown = as_admin.get(f"/api/v1/executions/{ran.id}").json
    e = shown["execution"]
    assert (e["plan"], e["trigger"], e["started_by"], e["status"]) == ("nightly", "manual", "ada", "failed")
    assert (e["succeeded"], e["failed"], e["total"]) == (3, 1, 4) and e["duration"] is not None
    assert any("finished: failed" in line["message"] for line in shown["log"])
    assert shown["records"]["total"] == 4
    page = as_admin.get(f"/executions/{ran.id}").text
    assert "Retry failed" in page and "report.csv" in page and "finished: failed" in page


def test_log_endpoint_returns_only_new_lines(as_admin, ran):
    first = as_admin.get(f"/api/v1/executions/{ran.id}/log").json
    last = first["log"][-1]["id"]
    LogLine.create(execution=ran.id, message="one more")
    after = as_admin.get(f"/api/v1/executions/{ran.id}/log?after={last}").json
    assert [line["message"] for line in after["log"]] == ["one more"]
    assert after["execution"]["status"] == "failed"


def test_report_csv_has_every_account_and_no_secret(ctl, as_admin, ran):
    answer = as_admin.get(f"/executions/{ran.id}/report.csv")
    assert answer.mimetype == "text/csv"
    assert f"execution-{ran.id}.csv" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 4
    assert {(r["asset"], r["account"], r["status"]) for r in rows if r["status"] != "success"} == {
        ("web-2", "bob", "failed")}
    assert set(rows[0]) == {"record", "asset", "address", "account", "action", "status",
                            "error_code", "error", "worker", "attempt", "started_at", "finished_at"}


def test_unknown_execution_is_404(as_admin):
    assert as_admin.get("/executions/42").status_code == 404
    assert as_admin.get("/api/v1/executions/42/log").status_code == 404
    assert as_admin.get("/executions/42/report.csv").status_code == 404


# ---- inventory ----------------------------------------------------------------------------

def test_zones_show_the_workers_seen_in_them(ctl, as_admin, fleet):
    WorkerSeen.create(worker_id="box:77", zone="dmz", host="box", version="0.1.0", in_flight=3,
                      last_seen=utcnow())
    zone = as_admin.get("/api/v1/zones").json["zones"][0]
    assert (zone["name"], zone["assets"], zone["has_key"]) == ("dmz", 2, True)
    assert zone["workers"][0] | {"last_seen": None} == {
        "id": "box:77", "zone": "dmz", "host": "box", "version": "0.1.0", "schema": 1,
        "in_flight": 3, "last_seen": None}
    page = as_admin.get("/zones").text
    assert "box:77" in page and "rotate.dmz" in page
    added = as_admin.post("/zones/new", {"name": "lab", "trust_first_use": "on"})
    assert added.status_code == 302 and Zone.get(Zone.name == "lab").public_key
    bad = as_admin.post("/zones/new", {"name": "Bad Name"})
    assert "lowercase" in as_admin.get(bad.location).text


def test_nodes_tree_and_adding_nodes(as_admin, fleet):
    assert as_admin.post("/nodes/new", {"path": "/prod/db/eu"}).status_code == 302
    nodes = as_admin.get("/api/v1/nodes").json["nodes"]
    assert [(n["path"], n["depth"], n["assets"]) for n in nodes] == [
        ("/prod", 0, 0), ("/prod/db", 1, 0), ("/prod/db/eu", 2, 0), ("/prod/web", 1, 2)]


def test_assets_add_import_and_accounts(ctl, as_admin, fleet):
    added = as_admin.post("/assets/new", {"name": "db-1", "address": "10.0.0.5", "port": "2222",
                                          "platform": "aix", "zone": "dmz", "node": "/prod/db"})
    db = Asset.get(Asset.name == "db-1")
    assert added.location == f"/assets/{db.id}" and (db.port, db.platform) == (2222, "aix")
    upload = "name,address,zone,node\nimp-1,10.0.1.1,dmz,/imported\nimp-2,10.0.1.2,dmz,\n"
    imported = as_admin.post("/assets/import", {"file": (io.BytesIO(upload.encode()), "a.csv")},
                             content_type="multipart/form-data")
    assert imported.status_code == 302 and Asset.select().count() == 5
    broken = "name,address,zone\nimp-3,10.0.1.3,dmz\nimp-1,10.0.1.1,dmz\nimp-4,x,nowhere\n"
    refused = as_admin.post("/assets/import", {"file": (io.BytesIO(broken.encode()), "b.csv")},
                            content_type="multipart/form-data")
    message = as_admin.get(refused.location).text
    assert "nothing imported" in message and "line 3" in message and "line 4" in message
    assert not Asset.select().where(Asset.name == "imp-3").exists()
    saved = as_admin.post(f"/assets/{db.id}/accounts", {"username": "oracle",
                                                        "secret": "Oracle-Old-1",
                                                        "privileged": "on"})
    assert saved.location == f"/assets/{db.id}"
    account = Account.get(Account.username == "oracle")
    assert account.privileged and ctl.vault.decrypt(account.secret_current) == "Oracle-Old-1"
    page = as_admin.get(f"/assets/{db.id}").text
    assert "oracle" in page and "Oracle-Old-1" not in page
    listed = as_admin.get("/api/v1/assets?q=imp").json["assets"]
    assert [a["name"] for a in listed["items"]] == ["imp-1", "imp-2"]
    assert as_admin.get("/api/v1/assets?node=/imported").json["assets"]["total"] == 1


def test_accounts_filter(as_admin, fleet):
    def total(**args):
        return as_admin.get("/api/v1/accounts", query_string=args).json["accounts"]["total"]

    assert total() == 6 and total(asset="web-1") == 3 and total(username="alice") == 2
    assert total(privileged="on") == 2
    row = as_admin.get("/api/v1/accounts?username=alice").json["accounts"]["items"][0]
    assert row["has_secret"] and "secret_current" not in row


# ---- users, profile, audit ----------------------------------------------------------------

def test_admin_adds_users_and_resets_authenticators(ctl, app, as_admin):
    added = as_admin.post("/users/new", {"username": "nina", "password": PASSWORD,
                                         "role": "auditor", "email": "nina@example.org"})
    assert added.location == "/users"
    nina = User.get(User.username == "nina")
    assert (nina.role, nina.email, nina.totp_enrolled) == ("auditor", "nina@example.org", False)
    short = as_admin.post("/users/new", {"username": "x", "password": "short", "role": "admin"})
    assert "at least 10" in as_admin.get(short.location).text
    first = Console(app)
    assert first.post("/login", {"username": "nina", "password": PASSWORD}).location == "/login/enrol"
    users.finish_enrolment(nina)
    as_admin.post(f"/users/{nina.id}/reset-mfa")
    assert not User.get_by_id(nina.id).totp_enrolled
    me = User.get(User.username == "ada")
    assert as_admin.post(f"/users/{me.id}/active").status_code == 302
    assert User.get_by_id(me.id).active                      # not yourself
    assert AuditEvent.select().where(AuditEvent.action.startswith("user.")
                                     & (AuditEvent.actor == "ada")).count() == 2


def test_profile_mail_file_password_and_password_change(ctl, app, as_admin, admin):
    as_admin.post("/me/profile", {"email": "ada@example.org", "file_password": "open-sesame"})
    row = User.get(User.username == "ada")
    assert row.email == "ada@example.org" and ctl.vault.decrypt(row.file_password) == "open-sesame"
    as_admin.post("/me/profile", {"email": "ada@example.org"})
    assert ctl.vault.decrypt(User.get_by_id(row.id).file_password) == "open-sesame"
    wrong = as_admin.post("/me/password", {"current": "nope", "new": "another password 2"})
    assert "current password is wrong" in as_admin.get(wrong.location).text
    as_admin.post("/me/password", {"current": PASSWORD, "new": "another password 2"})
    assert users.authenticate("ada", "another password 2") is not None


def test_audit_page_lists_and_filters_events(as_admin, ran):
    events = as_admin.get("/api/v1/audit?action=auth.signin").json["events"]
    assert events["total"] == 1 and events["items"][0]["actor"] == "ada"
    assert "auth.signin" in as_admin.get("/audit").text
