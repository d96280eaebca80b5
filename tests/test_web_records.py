"""Records: filters, the reveal behind step-up MFA and its audit, retry, ignore, restore, and
no secret in any page that did not ask for one."""
from __future__ import annotations

import time
from html import escape

from controller.models import Account, Asset, AuditEvent, Execution, Record
from controller.planning import start_execution
from tests.web_support import finish, next_code, save, secrets_of



def record_of(execution, username, asset):
    return (Record.select().join(Account).join(Asset)
            .where((Record.execution == execution.id) & (Account.username == username)
                   & (Asset.name == asset)).get())


def test_list_filters_by_plan_execution_asset_account_status(as_admin, ran):
    def ids(**args):
        return {row["id"] for row in as_admin.get("/api/v1/records", query_string=args)
                .json["records"]["items"]}

    everything = ids()
    assert len(everything) == 4
    assert ids(plan="nightly") == everything and ids(plan="other") == set()
    assert ids(execution=ran.id) == everything and ids(execution=ran.id + 1) == set()
    assert len(ids(asset="web-1")) == 2 and len(ids(account="bob")) == 2
    failed = ids(status="failed")
    assert failed == {record_of(ran, "bob", "web-2").id} == ids(asset="web-2", account="bob",
                                                                 status="failed")
    page = as_admin.get("/records?status=failed&asset=web-2")
    assert page.status_code == 200 and "login refused" in page.text
    assert as_admin.get("/api/v1/records?status=failed").json["records"]["total"] == 1


def test_an_account_filter_pages_through_live_and_deleted_accounts_records(ctl, as_admin, ran):
    """The records of the accounts named alice now and of a deleted alice (kept by her names)
    are one list (two queries merged), newest first, page by page both ways, with one total."""
    gone = record_of(ran, "alice", "web-1")
    assert as_admin.post_json(f"/api/v1/accounts/{gone.account_id}/delete").status_code == 200
    finish(start_execution(ctl, save(ctl, "again"), started_by="ada"), {})
    wanted = sorted((r.id for r in Record.select().where(
        (Record.account_name == "alice") | Record.account.in_(
            Account.select(Account.id).where(Account.username == "alice")))), reverse=True)
    assert len(wanted) == 3 and gone.id in wanted

    def listed(**cursor):
        return as_admin.get("/api/v1/records", query_string={"account": "alice", "size": 1}
                            | cursor).json["records"]

    pages = [listed()]
    while pages[-1]["after"] is not None:
        pages.append(listed(after=pages[-1]["after"]))
    assert [item["id"] for p in pages for item in p["items"]] == wanted
    assert {p["total"] for p in pages} == {3} and pages[0]["before"] is None
    back = [listed(before=pages[-1]["before"])]
    while back[-1]["before"] is not None:
        back.append(listed(before=back[-1]["before"]))
    assert [item["id"] for p in back for item in p["items"]] == wanted[-2::-1]
    both = listed(asset="web-1", size=5)
    assert [item["id"] for item in both["items"]] == [gone.id] and both["total"] == 1


def test_pages_and_csv_never_contain_a_secret(ctl, as_admin, ran):
    secrets = secrets_of(ctl, ran)
    assert len(secrets) == 8
    failed = record_of(ran, "bob", "web-2").id
    pages = ["/overview", "/records", f"/records/{failed}", f"/executions/{ran.id}",
             f"/executions/{ran.id}/report.csv", "/executions", "/plans", "/accounts",
             "/assets", "/audit", f"/api/v1/records/{failed}", "/api/v1/records",
             f"/api/v1/executions/{ran.id}", f"/api/v1/executions/{ran.id}/log", "/api/v1/overview",
             "/api/v1/accounts"]
    for path in pages:
        answer = as_admin.get(path)
        assert answer.status_code == 200, path
        for secret in secrets:
            assert secret not in answer.text and escape(secret) not in answer.text, path


def test_view_asks_for_a_code_outside_the_step_up_window(ctl, app, as_admin, ran, monkeypatch):
    monkeypatch.setattr(ctl.settings, "step_up_window", 0)
    record = record_of(ran, "alice", "web-1")
    new = ctl.vault.decrypt(record.new_secret)
    asked = as_admin.post(f"/records/{record.id}/reveal")
    assert asked.status_code == 200 and 'name="code"' in asked.text
    assert escape(new) not in asked.text
    wrong = as_admin.post(f"/records/{record.id}/reveal", {"code": "000000"})
    assert wrong.status_code == 401 and escape(new) not in wrong.text
    shown = as_admin.step_up(f"/records/{record.id}/reveal")
    assert shown.status_code == 200
    assert escape(new) in shown.text
    assert escape(ctl.vault.decrypt(record.old_secret)) in shown.text
    assert shown.headers["Cache-Control"] == "no-store"
    event = AuditEvent.get(AuditEvent.action == "secret.reveal")
    assert (event.actor, event.target) == ("ada", f"record/{record.id}")
    assert abs(time.time() - event.at.timestamp()) < 3600 * 24   # naive UTC, recent


def test_view_within_the_window_needs_no_new_code(ctl, as_admin, ran):
    record = record_of(ran, "bob", "web-1")
    shown = as_admin.post(f"/records/{record.id}/reveal")      # signed in moments ago
    assert escape(ctl.vault.decrypt(record.new_secret)) in shown.text
    assert AuditEvent.select().where(AuditEvent.action == "secret.reveal").count() == 1


def test_auditor_can_read_but_never_reveal_or_change(ctl, as_auditor, ran):
    record = record_of(ran, "bob", "web-2")
    assert as_auditor.get("/records").status_code == 200
    assert as_auditor.get(f"/records/{record.id}").status_code == 200
    page = as_auditor.get(f"/executions/{ran.id}").text
    assert "/reveal" not in page and "/retry" not in page
    for path in (f"/records/{record.id}/reveal", f"/records/{record.id}/retry",
                 f"/records/{record.id}/ignore", f"/records/{record.id}/restore"):
        assert as_auditor.post(path).status_code == 403, path
        assert as_auditor.step_up(path).status_code == 403, path
    assert not AuditEvent.select().where(AuditEvent.action == "secret.reveal").exists()


def test_retry_starts_a_new_attempt_through_the_normal_path(ctl, as_admin, ran):
    failed = record_of(ran, "bob", "web-2")
    answer = as_admin.post(f"/records/{failed.id}/retry")
    retry = Execution.select().order_by(Execution.id.desc()).get()
    assert answer.location == f"/executions/{retry.id}"
    assert (retry.trigger, retry.started_by, retry.retry_of_id) == ("retry", "ada", ran.id)
    again = Record.get(Record.execution == retry.id)
    assert (again.status, again.retry_of_id) == ("pending", failed.id)   # the daemon publishes
    assert ctl.vault.decrypt(again.new_secret) == ctl.vault.decrypt(failed.new_secret)
    ok = record_of(ran, "alice", "web-1")
    refused = as_admin.post(f"/records/{ok.id}/retry")
    assert refused.status_code == 302
    assert "only failed or unverified" in as_admin.get(refused.location).text
    api = as_admin.post_json(f"/api/v1/records/{ok.id}/retry")
    assert api.status_code == 409 and "only failed" in api.json["error"]


def test_retry_failed_on_an_execution(as_admin, ran):
    answer = as_admin.post(f"/executions/{ran.id}/retry-failed")
    retry = Execution.select().order_by(Execution.id.desc()).get()
    assert answer.location == f"/executions/{retry.id}" and retry.total == 1


def test_ignore_drops_a_failure_from_the_overview(as_admin, ran):
    failed = record_of(ran, "bob", "web-2")
    assert [r["id"] for r in as_admin.get("/api/v1/overview").json["failed"]] == [failed.id]
    assert as_admin.post(f"/records/{failed.id}/ignore").status_code == 302
    assert as_admin.get("/api/v1/overview").json["failed"] == []
    assert AuditEvent.get(AuditEvent.action == "record.ignore").target == f"record/{failed.id}"


def test_restore_makes_an_unverified_new_secret_current_after_mfa(ctl, as_admin, fleet,
                                                                  monkeypatch):
    execution = start_execution(ctl, save(ctl), started_by="ada")
    finish(execution, {"alice@web-1": "unverified"})
    record = record_of(execution, "alice", "web-1")
    monkeypatch.setattr(ctl.settings, "step_up_window", 0)
    asked = as_admin.post(f"/records/{record.id}/restore")
    assert asked.status_code == 200 and 'name="code"' in asked.text
    assert Account.get_by_id(record.account_id).secret_pending is not None
    done = as_admin.step_up(f"/records/{record.id}/restore")
    assert done.location == f"/records/{record.id}"
    account = Account.get_by_id(record.account_id)
    assert ctl.vault.decrypt(account.secret_current) == ctl.vault.decrypt(record.new_secret)
    assert AuditEvent.get(AuditEvent.action == "record.restore").actor == "ada"


def test_reveal_over_the_api_needs_a_code_every_time(ctl, app, admin, ran):
    from controller.models import User
    from controller.web import users

    token = users.new_api_token(User.get(User.username == admin.username))
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    record = record_of(ran, "alice", "web-2")
    url = f"/api/v1/records/{record.id}/reveal"
    assert client.post(url, json={}, headers=bearer).status_code == 401
    shown = client.post(url, json={"code": next_code(admin)}, headers=bearer)
    assert shown.status_code == 200
    assert shown.json["new_secret"] == ctl.vault.decrypt(record.new_secret)
    assert client.post(url, json={}, headers=bearer).status_code == 401    # no window for scripts


def test_unknown_records_are_404(as_admin):
    assert as_admin.get("/records/999").status_code == 404
    assert as_admin.get("/api/v1/records/999").json == {"error": "no record 999"}
    assert as_admin.post("/records/999/reveal").status_code == 404
