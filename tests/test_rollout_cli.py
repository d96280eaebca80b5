"""A rollout from the command line: the plan options, a bad one said in one line, and pause,
resume, cancel and show of an execution (embedded mode: its records wait for `serve`). Set up in this process: each command
run costs a process start."""
from __future__ import annotations

import pytest

from controller import inventory
from controller.models import AuditEvent, Plan, Record
from controller.planning import start_execution
from controller.steering import resume_execution
from tests.test_cli import cli  # noqa: F401

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_rollout_options_and_execution_pause_resume_cancel(cli, ctl):
    for user in ("root", "bob", "carol"):
        inventory.set_account(ctl, "a1", user, f"{user}-pw", privileged=user == "root")
    bad = cli.run("plan", "add", "p", "--username", "bob", "--asset", "a1",
                  "--window", "Mon-Fri 9-17")
    assert bad.returncode == 1
    assert bad.stderr.startswith("keyturn: plan p not saved (window: 'Mon-Fri 9-17' is not days "
                                 "and hours, e.g. 'Mon-Fri 01:00-05:00'")
    made = cli.run("plan", "add", "p", "--username", "bob", "--username", "carol", "--asset", "a1",
                   "--waves", "1,100%", "--max-failures", "1", "--window", "daily 00:00-24:00",
                   "--asset-limit", "1", "--zone-limit", "5", "--connect-rate", "2")
    assert made.returncode == 0, made.stderr
    assert Plan.get(Plan.name == "p").rollout == {
        "waves": ["1", "100%"], "max_failures": "1", "window": "daily 00:00-24:00",
        "asset_limit": 1, "zone_limit": 5, "connect_rate": 2.0}
    execution = start_execution(ctl, Plan.get(Plan.name == "p"))
    number = str(execution.id)

    paused = cli.run("execution", "pause", number)
    assert paused.returncode == 0 and "paused by cli:" in paused.stdout, paused.stderr
    shown = cli.run("execution", "show", number).stdout
    assert "waves 1,2, brake 1" in shown and "at most 1 in flight per asset" in shown
    assert "paused by cli:" in shown and "wave 1 of 2 open" in shown
    resume_execution(ctl, execution.id, "cli:test")
    cancelled = cli.run("execution", "cancel", number)
    assert cancelled.stdout.strip() == f"execution {number} cancelled: 2 records not sent"
    assert {r.status for r in Record.select()} == {"cancelled"}
    assert [e.action for e in AuditEvent.select().where(AuditEvent.target == f"execution/{number}")
            .order_by(AuditEvent.id)] == ["execution.pause", "execution.resume", "execution.cancel"]
    again = cli.run("execution", "pause", number)
    assert (again.returncode, again.stderr.strip()) == (1, f"keyturn: execution {number} is "
                                                           f"cancelled: only a running execution pauses")
