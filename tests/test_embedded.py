"""The embedded default, as the README's first command runs it: `keyturn serve` on SQLite with
the in-process broker, driven by the CLI from another process, against a real sshd host."""
from __future__ import annotations

import pytest

from tests.processes import ProcessGroup, free_port, keyturn_env

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)



def test_serve_rotates_with_nothing_else_running(settings, ssh_farm, tmp_path):
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-old"})
    host.set_password("root", "root-old")
    cli = ProcessGroup(keyturn_env(settings, None), tmp_path)
    try:
        steps = [("init",), ("zone", "add", "local"),
                 ("asset", "add", "box", "--address", host.address, "--zone", "local"),
                 ("account", "add", "box", "root", "--privileged", "--secret-stdin"),
                 ("account", "add", "box", "alice", "--secret-stdin"),
                 ("plan", "add", "nightly", "--username", "alice", "--asset", "box")]
        inputs = {3: "root-old\n", 4: "alice-old\n"}
        for index, step in enumerate(steps):
            done = cli.run(*step, input=inputs.get(index))
            assert done.returncode == 0, (step, done.stdout, done.stderr)
        cli.start("serve", "serve", "--port", str(free_port()))
        run = cli.run("plan", "run", "nightly", "--wait", timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        new = cli.run("secret", "show", "box", "alice").stdout.strip()
        assert new and new != "alice-old"
        assert host.password_works("alice", new)
        assert not host.password_works("alice", "alice-old")
    finally:
        cli.close()
    assert "Traceback" not in cli.processes[0].log_text()
