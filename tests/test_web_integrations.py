"""Integrations and webhooks in the console and the API: admins add and disable them after a
fresh code (audited), auditors only look; a webhook's secret is shown once; bad input is a
clear refusal, never a 500; the delivery history is on the page."""
import pytest

from controller.events import emit
from controller.integrations import keygen
from controller.models import AuditEvent, Integration, WebhookDelivery, WebhookSubscription
from tests.web_support import next_code


@pytest.fixture
def window_closed(ctl, monkeypatch):
    monkeypatch.setattr(ctl.settings, "step_up_window", 0)
    monkeypatch.setattr(ctl.settings, "webhook_allow_private", True)


def test_admins_add_and_disable_after_a_fresh_code(window_closed, as_admin, as_auditor, admin):
    _, public = keygen()
    body = {"name": "hr", "public_key": public, "grants": "rotate:node:/prod\nstatus",
            "rate_limit": "30"}
    assert as_admin.post_json("/api/v1/integrations/new", body).status_code == 401
    assert as_auditor.post_json("/api/v1/integrations/new", body).status_code == 403
    added = as_admin.post_json("/api/v1/integrations/new", body | {"code": next_code(admin)})
    assert added.status_code == 201, added.json
    assert added.json["integration"]["grants"] == ["rotate:node:/prod", "status"]
    bad = as_admin.post_json("/api/v1/integrations/new",
                             body | {"name": "x", "grants": "rotate", "code": next_code(admin)})
    assert bad.status_code == 409 and "needs a scope" in bad.json["error"]
    found = Integration.get(Integration.name == "hr")
    off = as_admin.post_json(f"/api/v1/integrations/{found.id}/active", {"code": next_code(admin)})
    assert off.status_code == 200 and not Integration.get_by_id(found.id).active
    actions = [(a.action, a.outcome) for a in AuditEvent.select()
               .where(AuditEvent.actor == admin.username).order_by(AuditEvent.id)]
    assert actions[-3:] == [("integration.add", "done"),      # the refused one is audited too
                            ("integrations.add_integration", "refused"),
                            ("integration.disable", "done")]
    listed = as_auditor.get("/api/v1/integrations").json
    assert [i["name"] for i in listed["integrations"]] == ["hr"]


def test_a_webhook_secret_is_shown_once_and_deliveries_are_listed(window_closed, ctl, as_admin,
                                                                   admin):
    made = as_admin.post("/webhooks/new", {"name": "siem", "url": "http://127.0.0.1:9/hook",
                                           "events": "io.keyturn.record.*", "code": next_code(admin)})
    assert made.status_code == 200
    secret = made.get_data(as_text=True).split('id="secret">')[1].split("<")[0]
    assert secret.startswith("whsec_")
    emit([("io.keyturn.record.failed", "web-1/bob", {"record": 1})])
    WebhookDelivery.update(last_error="the receiver answered HTTP 503", attempts=2).execute()
    page = as_admin.get("/integrations").get_data(as_text=True)
    assert "siem" in page and "the receiver answered HTTP 503" in page and secret not in page
    assert secret not in as_admin.get("/api/v1/integrations").get_data(as_text=True)
    assert ctl.vault.decrypt(WebhookSubscription.get().secret) == secret
    refused = as_admin.post_json("/api/v1/webhooks/new", {
        "name": "meta", "url": "http://169.254.169.254/latest", "events": "*",
        "code": next_code(admin)})
    assert refused.status_code == 409 and "metadata" in refused.json["error"]
