"""The execution page's log for big runs (the latest lines, paging back, filters by level and
account, the poll's bounded increments) and the printable report."""
from __future__ import annotations

import re

from controller.models import LogLine, Record, utcnow
from controller.web.execution_log import LOG_SHOWN
from tests.web_support import finish, ran, secrets_of  # noqa: F401


def many_lines(execution, count: int) -> None:
    """`count` more lines, one record's every third as a warning."""
    record = Record.select().where(Record.execution == execution.id).order_by(Record.id).first()
    now = utcnow()
    rows = [{"execution": execution.id, "at": now, "message": f"line {n}",
             "level": "warning" if n % 3 == 0 else "info",
             "record": record.id if n % 3 == 0 else None} for n in range(count)]
    for start in range(0, count, 500):
        LogLine.insert_many(rows[start:start + 500]).execute()


def test_the_page_shows_the_latest_lines_and_pages_back(as_admin, ran):
    many_lines(ran, 1200)
    total = LogLine.select().where(LogLine.execution == ran.id).count()
    shown = as_admin.get(f"/api/v1/executions/{ran.id}").json
    assert len(shown["log"]) == LOG_SHOWN and shown["log"][-1]["message"] == "line 1199"
    assert shown["log_after"] == shown["log"][-1]["id"] and not shown["log_paged"]
    seen, cursor = len(shown["log"]), shown["log_older"]
    while cursor is not None:
        older = as_admin.get(f"/api/v1/executions/{ran.id}?log_before={cursor}").json
        assert older["log_paged"] and older["log"][-1]["id"] < cursor
        assert older["log_after"] == shown["log_after"]      # the poll still starts at the newest
        seen += len(older["log"])
        cursor = older["log_older"]
    assert seen == total
    page = as_admin.get(f"/executions/{ran.id}").text
    assert page.count('<span class="info">') + page.count('<span class="warning">') <= LOG_SHOWN
    assert "Older lines" in page and "log_before=" in page


def test_the_log_narrows_to_problems_or_one_account(as_admin, ran):
    many_lines(ran, 30)
    problems = as_admin.get(f"/api/v1/executions/{ran.id}?level=warning").json["log"]
    assert problems and {line["level"] for line in problems} <= {"warning", "error"}
    failed = Record.select().where(Record.status == "failed").get()
    name = f"{failed.account.username}@{failed.account.asset.name}"
    mine = as_admin.get(f"/api/v1/executions/{ran.id}?account={name}").json["log"]
    assert mine and all(f"record {failed.id} " in line["message"] for line in mine)
    assert any("login_failed" in line["message"] for line in mine)
    page = as_admin.get(f"/executions/{ran.id}?account={name}&level=error").text
    assert "login_failed" in page and "line 3" not in page
    poll = re.search(r'data-poll="([^"]*)"', page).group(1)
    assert f"account={name}" in poll and "level=error" in poll   # the poll keeps the filter
    assert as_admin.get(f"/executions/{ran.id}?level=" + "x" * 5000).status_code == 400


def test_the_poll_takes_a_bounded_increment(as_admin, ran):
    last = as_admin.get(f"/api/v1/executions/{ran.id}/log").json["log"][-1]["id"]
    many_lines(ran, 1200)
    first = as_admin.get(f"/api/v1/executions/{ran.id}/log?after={last}").json["log"]
    assert len(first) == LOG_SHOWN and first[0]["message"] == "line 0"
    warnings = as_admin.get(f"/api/v1/executions/{ran.id}/log?after={last}&level=warning").json["log"]
    assert warnings[0]["message"] == "line 0" and warnings[1]["message"] == "line 3"


def test_the_printable_report_is_for_auditors_without_secrets(ctl, as_admin, as_auditor, ran):
    assert f"/executions/{ran.id}/report" in as_admin.get(f"/executions/{ran.id}").text
    answer = as_auditor.get(f"/executions/{ran.id}/report")
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert 'class="report"' in page and "<nav>" not in page and "Retry failed" not in page
    print_rules = as_auditor.get("/static/app.css").get_data(as_text=True).split("@media print")[1]
    assert ".no-print { display: none; }" in print_rules     # the page's links are not printed
    assert f"Execution {ran.id}: nightly" in page and "4 in total: 3 succeeded, 1 failed" in page
    assert "login_failed: web-2: login refused" in page and page.count('<tr><td data-label="#">') == 4
    assert not [secret for secret in secrets_of(ctl, ran) if secret in page]
    assert as_admin.get("/executions/424242/report").status_code == 404
