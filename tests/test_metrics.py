"""The console's /metrics, /healthz and /readyz: figures read from the database as the real
paths left it (planning, dispatch, results, heartbeats, the outbox), the scrape's access rule,
the probes against a real and a closed broker, and the alert rules and dashboard against the
figures' names."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr
from prometheus_client.parser import text_string_to_metric_families

from controller.daemon import record_heartbeats
from controller.dispatch import dispatch_pending
from controller.models import OutboxEvent, Plan, Record, utcnow
from controller.planning import start_execution
from controller.results import apply_results
from controller import inventory
from controller.web import create_app
from shared.logs import JsonFormatter, log_ids
from shared.messages import Heartbeat, RotateResult
from tests.inventory_helpers import build_fleet
from tests.processes import KEYTURN, free_port, keyturn_env
from tests.web_support import Console, save, secrets_of

TOKEN = "scrape-token-0123456789"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def scrape(app, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().get("/metrics", headers=headers)


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, name: str | None = None) -> dict:
    """{labels as a sorted tuple: value} of one family's samples (named `name`, default its own)."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples
            if s.name == (name or family.name)}


@pytest.fixture
def metrics_app(ctl):
    ctl.settings.metrics_token = SecretStr(TOKEN)
    app = create_app(ctl)
    app.testing = True
    return app


@pytest.fixture
def history(ctl):
    """What the real paths leave: a finished execution (one failed, one unverified, the rest
    succeeded, each taking a known time), another one dispatched and waiting, a worker's
    heartbeat in zone dmz, a second zone with nothing, and a scheduled plan two minutes late."""
    build_fleet(ctl, assets=("web-1", "web-2"), users=("alice", "bob", "carol"))
    inventory.add_zone(ctl, "dr", None, True)
    finished = start_execution(ctl, save(ctl, "nightly"), started_by="ada")
    now = time.time()
    results = []
    for index, record in enumerate(Record.select().where(Record.execution == finished.id)):
        key = f"{record.account.username}@{record.account.asset.name}"
        status = {"bob@web-2": "failed", "alice@web-1": "unverified"}.get(key, "success")
        results.append(RotateResult(
            record_id=record.id, attempt=1, zone="dmz", worker_id="w-test:1", status=status,
            error_code=None if status == "success" else "login_failed",
            error=None if status == "success" else "refused", started_at=now - 3 * index - 1.5,
            finished_at=now))
    assert apply_results(results) == 4
    waiting = start_execution(ctl, save(ctl, "carol", usernames=["carol"]), started_by="ada")
    assert dispatch_pending(ctl) == 2
    Record.update(dispatched_at=utcnow() - timedelta(seconds=90)).where(
        Record.execution == waiting.id).execute()
    record_heartbeats([Heartbeat(worker_id="w-test:1", zone="dmz", host="w", version="1",
                                 in_flight=0, sent_at=time.time())])
    late = save(ctl, "weekly", usernames=["bob"], interval_hours=168)
    Plan.update(next_run_at=utcnow() - timedelta(seconds=120)).where(Plan.id == late.id).execute()
    return finished, waiting


def test_figures_match_the_database(ctl, metrics_app, history):
    finished, waiting = history
    response = scrape(metrics_app)
    assert response.status_code == 200, response.text
    found = families(response.text)

    by_status = Counter()
    for labels, value in samples(found["keyturn_records"]).items():
        labels = dict(labels)
        assert (labels["platform"], labels["zone"], labels["action"]) == ("linux", "dmz", "rotate")
        by_status[labels["status"]] += value
    assert by_status == Counter(record.status for record in Record.select())
    assert by_status == {"success": 2, "failed": 1, "unverified": 1, "dispatched": 2}

    assert samples(found["keyturn_records_waiting"]) == {
        (("status", "pending"), ("zone", "dmz")): 0, (("status", "dispatched"), ("zone", "dmz")): 2,
        (("status", "pending"), ("zone", "dr")): 0, (("status", "dispatched"), ("zone", "dr")): 0}
    oldest = samples(found["keyturn_oldest_dispatched_seconds"])
    assert 89 <= oldest[(("zone", "dmz"),)] < 120 and oldest[(("zone", "dr"),)] == 0
    assert samples(found["keyturn_unverified_accounts"]) == {(("zone", "dmz"),): 1,
                                                             (("zone", "dr"),): 0}
    assert samples(found["keyturn_workers_alive"]) == {(("zone", "dmz"),): 1, (("zone", "dr"),): 0}
    lag = samples(found["keyturn_scheduler_lag_seconds"])[()]
    assert 119 <= lag < 150
    assert samples(found["keyturn_events_unrelayed"])[()] == OutboxEvent.select().where(
        OutboxEvent.relayed_at.is_null()).count() > 0

    durations = sorted((r.finished_at - r.started_at).total_seconds()
                       for r in Record.select().where(Record.execution == finished.id))
    histogram = found["keyturn_rotation_duration_seconds"]
    labels = (("platform", "linux"), ("zone", "dmz"))
    assert samples(histogram, "keyturn_rotation_duration_seconds_count")[labels] == 4
    assert samples(histogram, "keyturn_rotation_duration_seconds_sum")[labels] == pytest.approx(
        sum(durations), abs=0.1)
    buckets = {dict(s.labels)["le"]: s.value for s in histogram.samples
               if s.name.endswith("_bucket")}
    bounds = (2.5, 5, 10, 30, float("inf"))
    assert [buckets[bound] for bound in ("2.5", "5.0", "10.0", "30.0", "+Inf")] == [
        sum(1 for d in durations if d <= bound) for bound in bounds] == [1, 2, 3, 4, 4]

    assert not any(secret in response.text
                   for execution in (finished, waiting) for secret in secrets_of(ctl, execution))
    assert samples(found["keyturn_metrics_query_seconds"])[()] < 5


def test_a_scrape_needs_the_token_or_an_allowed_network(ctl, metrics_app, history, admin):
    assert scrape(metrics_app, token=None).status_code == 403           # from 127.0.0.1
    refused = scrape(metrics_app, token="wrong-token-0123456789")
    assert refused.status_code == 403 and TOKEN not in refused.text
    assert "Bearer" in refused.text and refused.content_type.startswith("text/plain")
    assert Console(metrics_app, admin).get("/metrics").status_code == 200   # signed in

    ctl.settings.metrics_token = None
    assert scrape(metrics_app, token=None).status_code == 403           # nothing configured
    ctl.settings.metrics_allow = "10.0.0.0/8, 192.0.2.7"
    assert scrape(metrics_app, token=None).status_code == 403
    client = metrics_app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.8"}).status_code == 403
    ctl.settings.metrics_allow = "127.0.0.0/8"
    assert scrape(metrics_app, token=None).status_code == 200


def test_probes_say_ok_or_what_is_unreachable(ctl, metrics_app):
    client = metrics_app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready",
                                "checks": {"database": "ok", "broker": "embedded"}}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_follows_the_broker(request, ctl, rabbitmq_url):
    port = free_port()
    closed = f"amqp://guest:guest@127.0.0.1:{port}/"
    for url, status, state in ((rabbitmq_url, 200, "ok"), (closed, 503, "unreachable")):
        ctl.settings.broker_url = url
        ctl.__dict__.pop("broker", None)             # the broker of the new URL
        app = create_app(ctl)
        started = time.monotonic()
        answer = app.test_client().get("/readyz")
        assert time.monotonic() - started < 5
        assert (answer.status_code, answer.get_json()["checks"]["broker"]) == (status, state)
        assert "guest" not in answer.text and str(port) not in answer.text


def test_json_log_lines_name_the_record(capsys):
    logger = logging.getLogger("keyturn.test.json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_ids(record=7):
            logger.warning("record %s: seen before", 7)
        logger.info("no record here")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["record"] == 7 and lines[0]["message"] == "record 7: seen before"
    assert lines[0]["level"] == "WARNING" and lines[0]["logger"] == "keyturn.test.json"
    assert lines[0]["time"].endswith("Z") and "record" not in lines[1]
    assert "ValueError: boom" in lines[2]["exception"]


def figure_names() -> set[str]:
    """Every figure the console, the daemon and the worker expose (with a histogram's series)."""
    import controller.metrics  # noqa: F401  (the daemon's figures, registered on import)
    import worker.metrics  # noqa: F401
    from prometheus_client import REGISTRY

    names = set()
    for family in REGISTRY.collect():
        names |= {family.name} | {s.name for s in family.samples}
        if family.type in ("histogram", "counter"):
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count", "total")}
    return names | DATABASE_FIGURES


DATABASE_FIGURES = {"keyturn_records", "keyturn_records_waiting",
                    "keyturn_oldest_dispatched_seconds",
                    "keyturn_unverified_accounts", "keyturn_workers_alive",
                    "keyturn_scheduler_lag_seconds", "keyturn_events_unrelayed",
                    "keyturn_events_unrelayed_oldest_seconds", "keyturn_webhook_deliveries_pending",
                    "keyturn_metrics_query_seconds", "keyturn_rotation_duration_seconds_bucket",
                    "keyturn_rotation_duration_seconds_sum",
                    "keyturn_rotation_duration_seconds_count"}


def test_database_figures_listed_here_are_the_collectors(ctl, metrics_app, history):
    names = set()
    for family in families(scrape(metrics_app).text).values():
        if family.name.startswith("keyturn_"):
            names |= {s.name for s in family.samples}
    assert {n for n in names if not n.startswith(("keyturn_result", "keyturn_worker_"))} \
        == DATABASE_FIGURES


def test_alert_rules_and_dashboard_name_real_figures():
    import re

    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"KeyturnWorkerLost", "KeyturnUnverifiedAccounts", "KeyturnQueueBacklog"} <= set(alerts)
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    expressions = [rule["expr"] for rule in alerts.values()] + [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    known = figure_names()
    for expression in expressions:
        used = set(re.findall(r"\bkeyturn_[a-z_]+", expression))
        assert used and used <= known, (expression, used - known)
    if shutil.which("promtool"):
        rules_file = str(DEPLOY / "prometheus-alerts.yml")
        checked = subprocess.run(["promtool", "check", "rules", rules_file],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name, value, says, command", [
    ("KEYTURN_METRICS_TOKEN", "short", "at least 16 characters", ["daemon", "--metrics-port", "0"]),
    ("KEYTURN_METRICS_ALLOW", "10.0.0.0/8, not-a-net", "'not-a-net' is not an address", ["serve"]),
    ("KEYTURN_LOG_FORMAT", "xml", "KEYTURN_LOG_FORMAT", ["worker", "--zone", "dmz"]),
])
def test_bad_metrics_and_log_settings_stop_start_up_in_one_line(settings, name, value, says,
                                                                 command):
    env = keyturn_env(settings, None) | {name: value}
    run = subprocess.run(KEYTURN + command, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and says in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_that_does_not_answer_is_said_plainly(ctl, metrics_app):
    from controller.db import open_database

    open_database(f"postgresql://postgres@127.0.0.1:{free_port()}/keyturn")   # nothing listens
    client = metrics_app.test_client()
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_json()["checks"]) == (503, {"database": "unreachable",
                                                                     "broker": "embedded"})
    scraped = scrape(metrics_app)
    assert (scraped.status_code, scraped.text) == (503, "metrics: the database is unreachable\n")
    assert client.get("/healthz").status_code == 200
