"""The CLI as an operator meets it: one clear line and a non-zero exit on any error, never a
traceback; plan parameters and schedules from the command line."""
from __future__ import annotations

import pytest

from controller.models import Plan
from tests.processes import ProcessGroup, keyturn_env

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def cli(settings, tmp_path):
    group = ProcessGroup(keyturn_env(settings, None), tmp_path)
    for step in (("init",), ("zone", "add", "z"),
                 ("asset", "add", "a1", "--address", "127.0.0.1", "--zone", "z")):
        assert group.run(*step).returncode == 0, step
    return group


def test_plan_parameters_and_schedule_from_the_command_line(cli, ctl):
    done = cli.run("plan", "add", "p", "--username", "bob", "--asset", "a1", "--param", "become=su",
                   "--param", "create_user=true", "--param", 'groups=["wheel"]',
                   "--crontab", "0 2 * * 0", "--ssh-timeout", "7")
    assert done.returncode == 0, done.stderr
    plan = Plan.get(Plan.name == "p")
    assert (plan.params["become"], plan.params["create_user"], plan.params["groups"]) == ("su", True, ["wheel"])
    assert plan.ssh_timeout == 7 and plan.next_run_at is not None
    assert "p " in cli.run("plan", "list").stdout


@pytest.mark.parametrize("args,exit_code,words", [
    (("plan", "add", "p", "--username", "bob", "--asset", "a1", "--param", "become=doas"), 1, "params.become"),
    (("plan", "add", "p", "--username", "bob", "--asset", "nope"), 1, "assets: unknown: nope"),
    (("plan", "add", "p", "--username", "bob", "--asset", "a1", "--length", "4"), 1, "length"),
    (("plan", "add", "p", "--username", "bob", "--asset", "a1", "--crontab", "0 2 * *"), 1, "crontab"),
    (("plan", "run", "missing"), 1, "no plan named missing"),
    (("secret", "show", "a1", "nobody"), 1, "no account nobody"),
    (("asset", "add", "a1", "--address", "x", "--zone", "z"), 1, "exists already"),
    (("records", "retry", "999"), 1, "no record 999"),
])
def test_errors_are_one_line(cli, args, exit_code, words):
    done = cli.run(*args)
    assert done.returncode == exit_code
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_bad_setting_stops_start_up_naming_it(cli):
    done = cli.run("plan", "list", KEYTURN_SSH_TIMEOUT="soon")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("keyturn: bad setting KEYTURN_SSH_TIMEOUT:")
