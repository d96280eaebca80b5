"""The daemon keeps the database's planner statistics (SQLite gathers them only when told):
without them SQLite probes the record (account, execution) index with both IN lists of a
plan + account filter, millions of probes at a million records."""
import time

from controller import daemon as daemon_module
from controller.daemon import Daemon
from controller.db import database, is_postgres, refresh_statistics


def test_the_daemon_refreshes_statistics_when_it_starts_and_then_hourly(ctl, ran, monkeypatch):
    refreshed = []
    monkeypatch.setattr(daemon_module, "refresh_statistics",
                        lambda: refreshed.append(1) or refresh_statistics())
    housekeeping = Daemon(ctl)
    housekeeping.housekeeping_once()
    housekeeping.housekeeping_once()
    assert len(refreshed) == 1
    assert housekeeping._statistics_due - time.monotonic() > daemon_module.STATISTICS_SECONDS - 60
    housekeeping._statistics_due = time.monotonic()          # an hour later
    housekeeping.housekeeping_once()
    assert len(refreshed) == 2
    if not is_postgres():
        analysed = {index for (index,) in database.execute_sql("SELECT idx FROM sqlite_stat1")}
        assert {"record_account_id_execution_id", "account_username_id"} <= analysed
