"""After a real run (RabbitMQ, PostgreSQL, `keyturn daemon` and a worker per zone as processes
with --metrics-port and JSON logs, sshd test hosts): the console's /metrics counts what the
records say, the daemon's and the workers' endpoints count what they did, and the JSON logs
are one object a line without a secret."""
from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from controller import inventory
from controller.models import Record, WorkerSeen
from controller.web import create_app
from tests.e2e import USERS, ZONES, save
from tests.processes import ProcessGroup, free_port, keyturn_env, wait_until
from tests.web_support import secrets_of

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
TOKEN = "e2e-scrape-token-0123456789"


def values(text: str) -> dict[tuple, float]:
    """{(sample name, frozenset of labels): value} of a Prometheus text exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(found: dict, name: str, **labels) -> float:
    return sum(value for (sample, have), value in found.items()
               if sample == name and set(labels.items()) <= have)


def endpoint(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return values(answer.read().decode())


@pytest.fixture
def measured(ctl, rabbitmq_url, tmp_path):
    """The daemon and a worker per zone, each with its metrics endpoint and JSON logs."""
    group = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url) | {"KEYTURN_LOG_FORMAT": "json",
                                                             "KEYTURN_HEARTBEAT_INTERVAL": "2"},
                         tmp_path)
    group.ports = {name: free_port() for name in ["daemon", *ZONES]}
    group.start("daemon", "daemon", "--metrics-port", str(group.ports["daemon"]))
    for zone in ZONES:
        group.start(f"worker-{zone}", "worker", "--zone", zone,
                    "--metrics-port", str(group.ports[zone]))
    yield group
    group.close()


def test_metrics_after_a_run(ctl, zone_fleet, measured):
    inventory.set_account(ctl, "east-0", "root", "wrong-root-password", True)
    save(ctl, "metered", ["alice"])
    run = measured.run("plan", "run", "metered", "--wait", timeout=240)
    assert run.returncode == 1, run.stdout + run.stderr        # east-0 cannot log in

    wait_until(lambda: WorkerSeen.select().count() == len(ZONES), 20, what="both workers' beats")
    ctl.settings.metrics_token = SecretStr(TOKEN)
    console = create_app(ctl).test_client()
    assert console.get("/metrics").status_code == 403
    scraped = console.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    found = values(scraped.text)
    records = list(Record.select())
    for status in ("success", "failed", "unverified", "pending", "dispatched"):
        expected = sum(1 for record in records if record.status == status)
        assert total(found, "keyturn_records", status=status) == expected, status
    assert total(found, "keyturn_records", status="failed", zone="east", platform="linux") == 1
    assert total(found, "keyturn_rotation_duration_seconds_count") == 4
    for zone in ZONES:
        assert total(found, "keyturn_workers_alive", zone=zone) == 1
        assert total(found, "keyturn_records_waiting", zone=zone) == 0
        assert total(found, "keyturn_oldest_dispatched_seconds", zone=zone) == 0
    assert total(found, "keyturn_unverified_accounts") == 0

    east, west = endpoint(measured.ports["east"]), endpoint(measured.ports["west"])
    assert total(east, "keyturn_worker_results_total", status="failed", code="login_failed") == 1
    assert total(east, "keyturn_worker_results_total", status="success") == 1
    assert total(west, "keyturn_worker_results_total", status="success", platform="linux") == 2
    for worker in (east, west):
        assert total(worker, "keyturn_worker_in_flight") == 0
        assert total(worker, "keyturn_worker_in_flight_limit") == 8      # first window open
        assert total(worker, "keyturn_worker_ssh_seconds_count", step="connect") >= 2
        assert total(worker, "keyturn_worker_ssh_seconds_count", step="auth") >= 2
    assert total(west, "keyturn_worker_ssh_seconds_count", step="command") >= 2
    daemon = wait_until(lambda: (lambda d: d if total(d, "keyturn_results_applied_total") == 4
                                 else None)(endpoint(measured.ports["daemon"])),
                        10, what="the daemon's count of applied results")
    assert total(daemon, "keyturn_result_apply_seconds_count") >= 1

    secrets = secrets_of(ctl, Record.get().execution) | set(USERS.values()) | {
        "wrong-root-password", "ops-pw-1", "root-pw-1"}
    assert not any(secret in scraped.text for secret in secrets)
    tagged = 0
    for process in measured.processes:
        log = process.log_text()
        assert not any(secret in log for secret in secrets), process.name
        for line in log.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                assert {"time", "level", "logger", "message"} <= set(entry), line
                tagged += "record" in entry
    assert tagged >= 4      # the workers' lines about each record name it
