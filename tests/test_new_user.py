"""What a new user hit on the command line (issue 13, part 4), each as they met it: the real
`keyturn` process where its output and exit status are the point, click's runner where a
prompt is. Errors read `keyturn: <what> (<why>)`, one line, exit status 1 (2: usage)."""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller import cli as cli_module
from controller import migrations
from controller.cli import init
from controller.models import User
from controller.plans import PlanError, parse_spec
from shared.cli import main
from tests.processes import ProcessGroup, free_port, wait_until

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One initialised data directory for the module: zone z, asset a1 with a privileged root,
    alice and bob, plans p (alice) and p2 (bob) on it."""
    data = tmp_path_factory.mktemp("new-user")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    environment |= {"KEYTURN_DATA_DIR": str(data / "data"),
                    "KEYTURN_DATABASE_URL": f"sqlite:///{data / 'keyturn.db'}",
                    "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    group = ProcessGroup(environment, data)
    group.run("init")
    for step, typed in ((("zone", "add", "z"), None),
                        (("asset", "add", "a1", "--address", "127.0.0.1", "--zone", "z"), None),
                        (("account", "add", "a1", "root", "--privileged", "--secret-stdin"), "root-password-1\n"),
                        (("account", "add", "a1", "alice", "--secret-stdin"), "alice-password-1\n"),
                        (("account", "add", "a1", "bob", "--secret-stdin"), "bob-password-12\n"),
                        (("plan", "add", "p", "--username", "alice", "--asset", "a1"), None),
                        (("plan", "add", "p2", "--username", "bob", "--asset", "a1"), None)):
        run_main(list(step), environment, typed)
    yield environment
    group.close()


def run_main(args: list[str], environment: dict, typed: str | None = None):
    """`keyturn ARGS` in this process, as the entry point runs it: (exit status, stdout,
    stderr). Faster than a process, and the same error handling."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            if name.startswith("KEYTURN_"):
                patch.setenv(name, value)
        patch.setattr(sys, "argv", ["keyturn", *args])
        patch.setattr(sys, "stdin", io.StringIO(typed or ""))
        patch.setattr(cli_module.console, "file", out)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                status = 0
            except SystemExit as exc:
                status = exc.code or 0
    return status, out.getvalue(), err.getvalue()


def one_error(args: list[str], environment: dict, exit_code: int = 1) -> str:
    status, out, err = run_main(args, environment)
    assert status == exit_code, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keyturn: "), err
    return lines[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_init_asks_again_for_a_short_password_and_says_it_is_initialised(settings, monkeypatch):
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("KEYTURN_DATABASE_URL", settings.effective_database_url)
    typed = "short\n" "long enough one\n" "long enough 2\n" "long enough one\n" "long enough one\n"
    done = CliRunner().invoke(init, ["--admin", "admin"], input=typed, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert done.output.count("too short (use at least 10 characters); try again") == 1
    assert done.output.count("the two passwords differ; try again") == 1
    assert User.get(User.username == "admin").role == "admin"
    again = CliRunner().invoke(init, [], catch_exceptions=False)
    assert f"database: already initialised (schema {migrations.LATEST})" in again.output
    # a name taken or malformed is refused before any password is asked for
    for name, words in (("admin", "user admin exists already"), ("émile", "ASCII letters")):
        taken = CliRunner().invoke(init, ["--admin", name], input="")
        assert taken.exit_code == 1 and words in str(taken.exception)


def test_serve_prints_where_the_console_is_and_no_access_lines(env, tmp_path):
    port = free_port()
    group = ProcessGroup(env, tmp_path)
    serve = group.start("serve", "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: url in serve.log_text(), 30, what="the start-up line")
        for _ in range(3):
            urllib.request.urlopen(url + "login").read()
        time.sleep(0.3)
    finally:
        group.close()
    log = serve.log_text()
    assert f"console on {url}; stop with Ctrl-C" in log
    assert "GET /login" not in log and "werkzeug" not in log


@pytest.mark.parametrize("args,words", [
    (("--address", "not an address!"), "address: not an address! is neither an IP address nor a host name"),
    (("--address", "10.0.0.1", "--host-key", "garbage"), "host_key: is not an OpenSSH public key line"),
    (("--address", "10.0.0.1", "--host-key", "ssh-ed25519 garbage"), "host_key: ssh-ed25519 key does not parse"),
    (("--address", "10.0.0.1", "--host-key", HOST_KEY[:-8]), "key does not parse"),
    (("--address", "10.0.0.1", "--host-key", "ssh-rsa " + HOST_KEY.split()[1]), "ssh-rsa key does not parse"),
])
def test_asset_add_refuses_a_bad_address_or_host_key(env, args, words):
    assert words in one_error(["asset", "add", "a2", "--zone", "z", *args], env)
    assert "a2" not in run_main(["asset", "list"], env)[1]


def test_asset_add_pins_a_real_host_key_line(env):
    status, _, err = run_main(["asset", "add", "a3", "--zone", "z", "--address", "web.example.org",
                               "--host-key", HOST_KEY + " root@web"], env)
    assert status == 0, err
    assert "a3 " in run_main(["asset", "list"], env)[1]


@pytest.mark.parametrize("args,words", [
    (("zone", "add", "z"), "zone z exists already"),
    (("records", "--execution", "999"), "no execution 999"),
    (("records", "--plan", "nope"), "no execution of a plan named nope"),
    (("records", "retry", "999"), "no record 999"),
    (("execution", "retry-failed", "999"), "no execution 999"),
    (("execution", "show", "999"), "no execution 999"),
    (("plan", "add", "q", "--username", "bob"), "plan q not saved (targets: name at least one asset or node)"),
])
def test_unknown_ids_and_existing_names_are_errors(env, args, words):
    assert words in one_error(list(args), env)


def test_a_usage_error_has_the_same_prefix(env):
    status, _, err = run_main(["asset", "add", "a4", "--zone", "z"], env)
    assert status == 2 and "Error:" not in err
    assert err.strip().splitlines()[-1] == "keyturn: Missing option '--address'."


def test_zone_add_replace_changes_an_existing_zone(env):
    status, out, _ = run_main(["zone", "add", "z", "--replace", "--trust-first-use"], env)
    assert status == 0 and "zone z saved" in out


def test_plan_errors_never_show_pydantic_words():
    with pytest.raises(PlanError) as caught:
        parse_spec({"name": "p", "usernames": [], "assets": ["a1"], "length": "long",
                    "strategy": "often"})
    assert caught.value.errors == {"usernames": "give at least 1",
                                   "length": "must be a whole number",
                                   "strategy": "must be one of random, specific"}


def test_a_bad_setting_is_said_in_words(env):
    for name, value, words in (("KEYTURN_SSH_TIMEOUT", "soon", "must be a number"),
                               ("KEYTURN_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR"),
                               ("KEYTURN_WORKER_THREADS", "0", "must be at least 1")):
        line = one_error(["plan", "list"], env | {name: value}, exit_code=2)
        assert line == f"keyturn: bad setting {name}: {words}"


def test_plan_run_wait_says_soon_that_nothing_dispatches(env, tmp_path):
    started = time.monotonic()
    done = ProcessGroup(env, tmp_path).run("plan", "run", "p", "--wait", "--timeout", "6")
    assert done.returncode == 1 and time.monotonic() - started < 30
    assert "nothing is dispatching its records: in embedded mode `keyturn serve` does" in done.stderr
    assert '"status": "pending"' in run_main(["records", "--json", "--plan", "p"], env)[1]


def test_plan_run_wait_says_when_no_daemon_takes_the_results(env, tmp_path, rabbitmq_url):
    done = ProcessGroup(env, tmp_path).run("plan", "run", "p2", "--wait", "--timeout", "6",
                                           KEYTURN_BROKER_URL=rabbitmq_url)
    assert done.returncode == 1
    assert "no `keyturn daemon` is consuming the results: start it" in done.stderr


def test_plan_add_notes_what_secure_mode_skips(env):
    status, out, _ = run_main(["plan", "add", "roots", "--username", "root", "--asset", "a1"], env)
    assert status == 0
    assert "note: secure mode is on, so root will be skipped on a1: it is the privileged " \
           "account there" not in out                    # said once, as a protected name
    assert "note: secure mode is on, so root will be skipped (it is protected on Linux" in out


@pytest.mark.parametrize("args", [
    ("account", "add", "a1", "émile"),
    ("asset", "add", "wéb-1", "--address", "10.0.0.1", "--zone", "z"),
    ("asset", "add", "web-5", "--address", "10.0.0.1", "--zone", "z", "--node", "/pröd"),
    ("zone", "add", "zé"),
])
def test_names_that_reach_hosts_files_and_queues_say_ascii(env, args):
    assert "ASCII letters" in one_error(list(args), env)


def test_a_plan_name_is_display_text_of_any_script(env):
    status, out, err = run_main(["plan", "add", "Ротация ünïcode", "--username", "alice",
                                 "--asset", "a1"], env)
    assert status == 0 and "plan Ротация ünïcode saved" in out, err


def test_zone_list_shows_a_worker_in_each_zone_it_serves(env):
    from controller.daemon import record_heartbeats
    from shared.messages import Heartbeat

    assert run_main(["zone", "add", "lab"], env)[0] == 0      # the database is the module's now
    record_heartbeats([Heartbeat(worker_id="box:7", zone=zone, host="box", version="0.1.0",
                                 in_flight=0, sent_at=time.time()) for zone in ("z", "lab")])
    rows = [line for line in run_main(["zone", "list"], env)[1].splitlines() if "box:7" in line]
    assert len(rows) == 2 and any("│ lab " in row for row in rows) and any("│ z " in row for row in rows)
