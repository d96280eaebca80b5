"""`keyturn integration` and `keyturn webhook` as an operator meets them: one clear line and
exit 1 for a mistake, the webhook secret printed once, the changes audited."""
from __future__ import annotations

import pytest

from controller.models import AuditEvent, Integration, WebhookSubscription
from tests.processes import ProcessGroup, keyturn_env

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_integrations_and_webhooks_from_the_command_line(settings, ctl, tmp_path):
    cli = ProcessGroup(keyturn_env(settings, None), tmp_path)
    key = cli.run("integration", "keygen", "--key-file", str(tmp_path / "k"))
    assert key.returncode == 0 and (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert cli.run("integration", "keygen", "--key-file", str(tmp_path / "k")).returncode == 1
    public = key.stdout.strip()
    bad = cli.run("integration", "add", "hr", "--public-key", public, "--allow", "rotate")
    assert bad.returncode == 1 and "needs a scope" in bad.stderr and "Traceback" not in bad.stderr
    added = cli.run("integration", "add", "hr", "--public-key", public, "--allow", "verify:zone:dmz")
    assert added.returncode == 0, added.stderr
    assert cli.run("integration", "disable", "hr").returncode == 0
    listed = cli.run("integration", "list").stdout
    assert "hr" in listed and "disabled" in listed and not Integration.get().active
    send = cli.run("integration", "send", "hr", "status", "--key-file", str(tmp_path / "k"),
                   "--execution", "1")
    assert send.returncode == 1 and "KEYTURN_BROKER_URL" in send.stderr

    refused = cli.run("webhook", "add", "siem", "--url", "http://127.0.0.1:9/h", "--event", "*")
    assert refused.returncode == 1 and "KEYTURN_WEBHOOK_ALLOW_PRIVATE" in refused.stderr
    made = cli.run("webhook", "add", "siem", "--url", "http://127.0.0.1:9/h", "--event",
                   "io.keyturn.record.*", KEYTURN_WEBHOOK_ALLOW_PRIVATE="true")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.split("shown once): ")[1].strip()
    assert ctl.vault.decrypt(WebhookSubscription.get().secret) == secret
    shown = cli.run("webhook", "list").stdout + cli.run("webhook", "deliveries", "siem").stdout
    assert "siem" in shown and secret not in shown
    assert cli.run("webhook", "disable", "siem").returncode == 0
    assert [a.action for a in AuditEvent.select().order_by(AuditEvent.id)] == [
        "integration.add", "integration.disable", "webhook.add", "webhook.disable"]
