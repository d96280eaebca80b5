"""What a new user hit in the console (issue 13, part 4): the asset form keeps what was typed,
bad host keys and addresses are refused, a worker serving two zones is seen in both, a record
retried successfully is not retried again."""
from __future__ import annotations

import html

from controller.daemon import record_heartbeats
from controller.models import Asset, Execution, Record
from controller.planning import start_execution
from shared.messages import Heartbeat
from tests.web_support import finish

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_the_asset_form_keeps_what_was_typed_beside_the_error(as_admin, fleet):
    typed = {"name": "db-9", "address": "10.0.0.9", "port": "6543", "platform": "postgresql",
             "zone": "dmz", "node": "/prod/db", "host_key": "", "params.postgresql.database": "app",
             "params.postgresql.tls": "bogus"}
    answer = as_admin.post("/assets/new", typed)
    assert answer.status_code == 422
    page = html.unescape(answer.text)
    for value in ('value="db-9"', 'value="10.0.0.9"', 'value="6543"', 'value="/prod/db"',
                  '<option value="postgresql" selected>', 'value="app"'):
        assert value in page, value
    assert "params.tls: must be one of" in page and "Input should" not in page
    assert not Asset.select().where(Asset.name == "db-9").exists()


def test_the_asset_form_shows_a_bad_host_key_beside_its_field(as_admin, fleet):
    answer = as_admin.post("/assets/new", {"name": "web-9", "address": "10.0.0.9", "zone": "dmz",
                                           "host_key": "ssh-ed25519 garbage"})
    assert answer.status_code == 422
    page = html.unescape(answer.text)
    assert 'value="ssh-ed25519 garbage"' in page
    assert '<div class="err">ssh-ed25519 key does not parse' in page


def test_the_api_refuses_a_bad_address_or_host_key(as_admin, fleet):
    for fields, words in (({"address": "not an address!"}, "neither an IP address nor a host name"),
                          ({"host_key": "garbage"}, "host_key: is not an OpenSSH public key line"),
                          ({"host_key": HOST_KEY[:-8]}, "host_key: ssh-ed25519 key does not parse")):
        body = {"name": "web-9", "address": "10.0.0.9", "zone": "dmz"} | fields
        answer = as_admin.post_json("/api/v1/assets/new", body)
        assert answer.status_code in (400, 409) and words in answer.json["error"], answer.json
    good = as_admin.post_json("/api/v1/assets/new", {"name": "web-9", "address": "10.0.0.9",
                                                     "zone": "dmz", "host_key": HOST_KEY})
    assert good.status_code == 201 and good.json["asset"]["host_key"] == HOST_KEY


def test_a_worker_serving_two_zones_is_seen_in_both(ctl, as_admin, fleet):
    from controller import inventory

    inventory.add_zone(ctl, "lab", None, True)
    record_heartbeats([Heartbeat(worker_id="box:7", zone=zone, host="box", version="0.1.0",
                                 in_flight=0, sent_at=1_800_000_000) for zone in ("dmz", "lab")])
    zones = {z["name"]: z for z in as_admin.get("/api/v1/zones").json["zones"]}
    assert [w["id"] for w in zones["dmz"]["workers"]] == ["box:7"]
    assert [w["id"] for w in zones["lab"]["workers"]] == ["box:7"]
    assert "no worker has reported" not in as_admin.get("/zones").text


def test_a_record_retried_successfully_is_not_retried_again(ctl, as_admin, ran):
    failed = Record.get((Record.execution == ran.id) & (Record.status == "failed"))
    assert f"/records/{failed.id}/retry" in as_admin.get(f"/records/{failed.id}").text
    assert "Retry failed" in as_admin.get(f"/executions/{ran.id}").text
    retry = as_admin.post_json(f"/api/v1/records/{failed.id}/retry")
    assert retry.status_code == 201
    finish(Execution.get_by_id(retry.json["execution"]), {})
    # the original failure is no longer retryable, anywhere
    assert f"/records/{failed.id}/retry" not in as_admin.get(f"/records/{failed.id}").text
    assert "Retry failed" not in as_admin.get(f"/executions/{ran.id}").text
    row = as_admin.get(f"/api/v1/records/{failed.id}").json["record"]
    assert (row["status"], row["retryable"]) == ("failed", False)
    again = as_admin.post_json(f"/api/v1/executions/{ran.id}/retry-failed")
    assert again.status_code == 409 and "nothing to retry" in again.json["error"]
    once_more = as_admin.post_json(f"/api/v1/records/{failed.id}/retry")
    assert once_more.status_code == 409 and "its account has a later record" in once_more.json["error"]
    assert Execution.select().count() == 2


def test_a_failed_retry_is_the_one_to_retry(ctl, as_admin, ran):
    failed = Record.get((Record.execution == ran.id) & (Record.status == "failed"))
    retry = Execution.get_by_id(as_admin.post_json(f"/api/v1/records/{failed.id}/retry").json["execution"])
    finish(retry, {"bob@web-2": "failed"})
    second = Record.get(Record.execution == retry.id)
    assert as_admin.get(f"/api/v1/records/{second.id}").json["record"]["retryable"]
    assert not as_admin.get(f"/api/v1/records/{failed.id}").json["record"]["retryable"]
    assert as_admin.post_json(f"/api/v1/executions/{retry.id}/retry-failed").status_code == 201


def test_the_overview_shows_a_failing_account_once_and_counts_active_schedules(ctl, as_admin, fleet):
    from tests.web_support import save

    plan = save(ctl, usernames=["bob"])
    for _ in range(3):
        finish(start_execution(ctl, plan, started_by="ada"), {"bob@web-2": "failed"})
    save(ctl, "paused", usernames=["alice"], interval_hours=24, active=False)
    save(ctl, "weekly", usernames=["alice"], crontab="0 2 * * 0")
    running = start_execution(ctl, save(ctl, "live", usernames=["alice"]), started_by="ada")
    overview = as_admin.get("/api/v1/overview").json
    assert [(r["asset"], r["account"], r["failures"]) for r in overview["failed"]] == [
        ("web-2", "bob", 3)]
    assert (overview["counts"]["plans"], overview["counts"]["periodic_plans"]) == (4, 1)
    page = as_admin.get("/overview").text
    assert page.count("<td>web-2</td><td>bob") == 1 and "3 times" in page
    assert f">{running.id}</a>" in page and "<th class=\"num\">ended</th>" not in page


def test_the_plan_list_counts_the_assets_under_its_nodes(ctl, as_admin, fleet):
    from tests.web_support import save

    save(ctl, "by-node", nodes=["/prod"])
    save(ctl, "by-name", nodes=[], assets=["web-1"])
    rows = {p["name"]: p for p in as_admin.get("/api/v1/plans").json["plans"]["items"]}
    assert (rows["by-node"]["assets"], rows["by-node"]["nodes"]) == (2, 1)
    assert (rows["by-name"]["assets"], rows["by-name"]["nodes"]) == (1, 0)


def test_counts_are_said_with_the_right_plural(ctl, as_admin, fleet):
    from controller.models import Plan
    from tests.web_support import save

    plan = save(ctl, "one", usernames=["bob"], nodes=[], assets=["web-1"])
    answer = as_admin.post_json(f"/api/v1/plans/{plan.id}/execute")
    assert answer.json["message"].endswith("started: 1 account, 0 skipped")
    page = as_admin.get(f"/executions/{answer.json['execution']}").text
    assert "1 record</span>" in page and "1 records" not in page
    assert "plan one: 1 account resolved" in page and "1 record pending, 0 skipped" in page
    assert "1 plan</span>" in as_admin.get("/plans").text and Plan.select().count() == 1
    assert "· 2 assets ·" in as_admin.get("/zones").text


def test_saving_a_plan_warns_of_what_secure_mode_skips_and_mail_that_reaches_no_one(
        ctl, as_admin, auditor, fleet):
    from controller import inventory

    inventory.set_account(ctl, "web-1", "ops", "ops-password-1", privileged=True)   # not root
    answer = as_admin.post_json("/api/v1/plans/new", {
        "name": "ops", "usernames": ["ops", "alice"], "nodes": ["/prod"], "recipients": ["otto"]})
    assert answer.status_code == 201, answer.json
    assert answer.json["warnings"] == [
        "secure mode is on, so ops will be skipped on web-1: it is the privileged account there",
        "no result mail reaches otto: it has no email address (or no active user of that name)"]
    form = as_admin.post("/plans/new", {"name": "roots", "usernames": "root", "nodes": "/prod",
                                        "strategy": "random", "secret_type": "password",
                                        "length": "20", "lowercase": "on", "digits": "on",
                                        "schedule": "manual", "active": "on"},
                         follow_redirects=True)
    assert "secure mode is on, so root will be skipped (it is protected on Linux" in form.text
    quiet = as_admin.post_json("/api/v1/plans/new", {"name": "quiet", "usernames": ["alice"],
                                                     "nodes": ["/prod"]})
    assert quiet.json["warnings"] == []


def test_the_plan_page_lists_sudo_commands_only_when_a_sudoers_line_is_installed(ctl, as_admin, fleet):
    from tests.web_support import save

    off = save(ctl, "off", params={"sudo_commands": ["/usr/bin/id"]})
    on = save(ctl, "on", params={"sudo_commands": ["/usr/bin/id"], "modify_sudo": True})
    assert "/usr/bin/id" not in as_admin.get(f"/plans/{off.id}").text
    assert "sudo_commands=/usr/bin/id" in as_admin.get(f"/plans/{on.id}").text


def test_the_plan_form_says_which_recipients_no_mail_reaches(as_admin, auditor, fleet):
    from controller.models import User

    User.update(email="ada@example.org").where(User.username == "ada").execute()
    page = as_admin.get("/plans/new").text
    assert "no mail reaches otto (no email address)" in page and "reaches ada" not in page
