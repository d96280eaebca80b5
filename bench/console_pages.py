"""Console page times with 100,000 records (or `--records 1000000`): each page rendered by the
Flask app (test client, no network), median of several runs, with the number of SQL statements
each page sends; each database's table is printed as soon as it is measured.

    python -m bench.console_pages [--records 100000] [--runs 7] [--kind sqlite --kind postgres]
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import click

from bench.support import bulk_fleet, controller_for, report, temp_database
from controller.db import bulk_insert, database, is_postgres, refresh_statistics
from controller.models import Account, Asset, Execution, LogLine, Record, utcnow
from controller.plans import parse_spec, save_plan
from controller.web import create_app, users

USERS_PER_ASSET = 50
PER_EXECUTION = 1000


class QueryCounter(logging.Handler):
    """Counts the statements peewee sends (it logs each at DEBUG)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record):
        self.count += 1


def fill(ctl, records: int) -> dict:
    """A fleet with one account per record, split into executions of PER_EXECUTION records over
    the last 30 days; one in twenty records failed. Returns ids the pages are opened with."""
    bulk_fleet(ctl, records // USERS_PER_ASSET, USERS_PER_ASSET)
    plan = save_plan(parse_spec({"name": "bench", "nodes": ["/bench"], "usernames": ["u000"]}),
                     ctl.vault)
    account_ids = [a for (a,) in Account.select(Account.id).where(~Account.privileged)
                   .order_by(Account.id).tuples()]
    secret = ctl.vault.encrypt("bench-secret")
    now = utcnow()
    executions = (len(account_ids) + PER_EXECUTION - 1) // PER_EXECUTION
    for index in range(executions):
        chunk = account_ids[index * PER_EXECUTION:(index + 1) * PER_EXECUTION]
        started = now - timedelta(days=30 * (executions - index) / executions)
        failed = sum(1 for n in range(len(chunk)) if n % 20 == 0)
        execution = Execution.create(plan=plan, plan_name=plan.name, started_by="bench",
                                     created_at=started, finished_at=started + timedelta(minutes=3),
                                     status="failed" if failed else "success", total=len(chunk),
                                     succeeded=len(chunk) - failed, failed=failed)
        fields = [Record.execution, Record.account, Record.status, Record.action, Record.attempt,
                  Record.ignored, Record.old_secret, Record.new_secret, Record.created_at,
                  Record.finished_at, Record.worker_id, Record.error_code, Record.error]
        rows = [(execution.id, account, "failed" if n % 20 == 0 else "success", "rotate", 1, False,
                 secret, secret, started, started + timedelta(minutes=2), "bench:1",
                 "login_failed" if n % 20 == 0 else None,
                 "login refused" if n % 20 == 0 else None) for n, account in enumerate(chunk)]
        bulk_insert(Record, fields, rows)
        LogLine.insert_many([{"execution": execution.id, "at": started, "message": f"line {n}"}
                             for n in range(20)]).execute()
    if is_postgres():   # what autovacuum does within a minute of a bulk load (PostgreSQL 13+
        # vacuums after inserts too): statistics, and the visibility map index-only scans need
        database.execute_sql("VACUUM ANALYZE")
    else:
        refresh_statistics()    # what `keyturn daemon` does when it starts, and hourly
    middle = Execution.select().order_by(Execution.id).offset(executions // 2).first()
    record = Record.select(Record.id).order_by(Record.id).offset(records // 2).first()
    asset = Asset.select().order_by(Asset.id).offset(7).first()
    return {"execution": middle.id, "record": record.id, "asset": asset.id,
            "asset_name": asset.name, "plan": plan.id}


def pages(ids: dict) -> list[str]:
    cursor = ids["record"]
    return ["/overview", "/overview?days=30", "/plans", f"/plans/{ids['plan']}", "/executions",
            f"/executions/{ids['execution']}", f"/api/v1/executions/{ids['execution']}/log",
            "/records", f"/records?after={cursor}", "/records?status=failed",
            f"/records?asset={ids['asset_name']}", "/records?plan=bench&account=u007",
            f"/records?execution={ids['execution']}&status=failed", f"/records/{ids['record']}",
            "/api/v1/records", "/assets", f"/assets/{ids['asset']}", "/accounts", "/zones",
            "/nodes", "/audit", f"/executions/{ids['execution']}/report.csv"]


def signed_in_client(app):
    """A client whose session says an admin signed in (the bench measures pages, not sign-in)."""
    admin = users.create_user("bench-admin", "bench-password-1", "admin")
    client = app.test_client()
    with client.session_transaction() as session:
        session.update({"_user_id": str(admin.id), "_fresh": True,
                        "signed_in_at": (utcnow() - timedelta(seconds=1)).isoformat(),
                        "csrf_token": "bench"})
    return client


def measure(kind: str, records: int, runs: int) -> list[dict]:
    with temp_database(kind) as url, tempfile.TemporaryDirectory(prefix="keyturn-bench-") as folder:
        ctl = controller_for(Path(folder), url, None)
        started = time.perf_counter()
        ids = fill(ctl, records)
        print(f"{kind}: {Record.select().count():,} records, {Execution.select().count()} "
              f"executions, {Account.select().count():,} accounts in "
              f"{time.perf_counter() - started:.0f} s")
        app = create_app(ctl)
        client = signed_in_client(app)
        counter = QueryCounter()
        logger = logging.getLogger("peewee")
        logger.addHandler(counter)
        logger.setLevel(logging.DEBUG)
        rows = []
        try:
            for path in pages(ids):
                assert client.get(path).status_code == 200, path        # warm caches
                times, queries = [], 0
                for _ in range(runs):
                    counter.count = 0
                    begin = time.perf_counter()
                    answer = client.get(path)
                    answer.get_data()                                   # streamed bodies too
                    times.append((time.perf_counter() - begin) * 1000)
                    queries = counter.count
                    assert answer.status_code == 200, path
                rows.append({"database": kind, "page": path, "median ms": statistics.median(times),
                             "max ms": max(times), "queries": queries,
                             "bytes": len(answer.data)})
        finally:
            logger.removeHandler(counter)
        return rows


@click.command()
@click.option("--records", default=100_000, show_default=True)
@click.option("--runs", default=7, show_default=True)
@click.option("--kind", "kinds", multiple=True, default=["sqlite", "postgres"],
              type=click.Choice(["sqlite", "postgres"]))
def main(records: int, runs: int, kinds: tuple[str, ...]) -> None:
    rows = []
    for kind in kinds:
        rows += measure(kind, records, runs)
        report(f"console pages, {records:,} records, {kind}", [r for r in rows
                                                               if r["database"] == kind])
    slow = [row for row in rows if row["median ms"] > 300 and not row["page"].endswith(".csv")]
    if slow:
        raise SystemExit(f"over 300 ms: {', '.join(r['database'] + ' ' + r['page'] for r in slow)}")


if __name__ == "__main__":
    main()
