"""The execution report CSV: text a spreadsheet could take for a formula is exported with a
leading `'`, so opening the report runs nothing."""
from __future__ import annotations

import csv
import io

import pytest

from controller.models import Record

FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+2", "-2+3", "@SUM(A1)", "\tx",
            "\r=1"]


def report_rows(console, execution_id: int) -> list[dict]:
    answer = console.get(f"/executions/{execution_id}/report.csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(answer.get_data(as_text=True), newline="")))


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_like_errors_and_workers_are_neutralised(as_admin, ran, text):
    record = Record.select().where(Record.execution == ran.id).order_by(Record.id).first()
    Record.update(error=text, worker_id=text).where(Record.id == record.id).execute()
    rows = {int(row["record"]): row for row in report_rows(as_admin, ran.id)}
    assert rows[record.id]["error"] == "'" + text
    assert rows[record.id]["worker"] == "'" + text


def test_plain_values_are_exported_as_they_are(as_admin, ran):
    rows = report_rows(as_admin, ran.id)
    failed = [row for row in rows if row["status"] == "failed"]
    assert [(row["asset"], row["account"], row["error"]) for row in failed] == [
        ("web-2", "bob", "web-2: login refused")]
    assert all(row["address"] == "127.0.0.1" and row["attempt"] == "1" for row in rows)
