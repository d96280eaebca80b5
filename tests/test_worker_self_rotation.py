"""Secure mode off: the privileged account rotates its own secret on a real sshd host, each
change proven by a fresh login, and the pooled session of the old secret is retired without
cutting off rotations still running on it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_worker_keys import key_works, new_key, public
from tests.test_worker_rotate import ROOT_PW, command, fresh
from worker.connectors.ssh import SshConnector
from worker.rotate import rotate

SUDOER = ("sudoer", "sudoer-pw-self")
USERS = {f"user{n}": f"old-{n}" for n in range(7)}


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users=USERS)
    host.set_password("root", ROOT_PW)
    host.add_user(*SUDOER, sudo="password")
    yield host
    host.close()


def test_root_changes_its_own_password_twice_in_a_row(host, targets):
    current = fresh("root-start")
    host.set_password("root", current)
    for _ in range(2):
        new = fresh("root")
        result = rotate(command(host, "root", new, login=("root", current), old_secret=current),
                        targets, "w1", False)
        assert (result.status, result.login_index) == ("success", 0), result.error
        assert host.password_works("root", new) and not host.password_works("root", current)
        assert targets.pool(SshConnector)._sessions == {}   # retired: keyed by a dead secret
        current = new
    host.set_password("root", ROOT_PW)


def test_a_sudoer_changes_its_own_password_through_sudo(host, targets):
    old, new = SUDOER[1], fresh("sudoer")
    host.set_password("sudoer", old)
    result = rotate(command(host, "sudoer", new, login=(SUDOER[0], old)), targets, "w1", False)
    assert result.status == "success", result.error
    assert host.password_works("sudoer", new) and not host.password_works("sudoer", old)
    other = fresh()
    after = rotate(command(host, "user0", other, login=(SUDOER[0], old, new)), targets, "w1", False)
    assert (after.status, after.login_index) == ("success", 1)   # the new password, also for sudo
    assert host.password_works("user0", other)


def test_root_changes_its_own_key(host, targets, tmp_path):
    first, second = new_key(), new_key()
    assert rotate(command(host, "root", first, secret_type="ssh_key"), targets, "w1", False).status == "success"
    result = rotate(command(host, "root", second, login=("root", first), login_secret_type="ssh_key",
                            secret_type="ssh_key", params={"key_strategy": "set"}), targets, "w1", False)
    assert result.status == "success", result.error
    assert key_works(host, "root", second, tmp_path) and not key_works(host, "root", first, tmp_path)
    lines = host.run(["cat", "/root/.ssh/authorized_keys"]).stdout.decode().splitlines()
    assert lines == [f"{public(second)} keyturn-managed"]
    assert host.password_works("root", ROOT_PW)


def test_rotations_running_on_the_retired_session_finish(host, targets):
    """Root rotates itself while the same login rotates seven accounts on the shared session
    (sent, as the controller does, with root's current and pending password)."""
    root_new = fresh("root")
    login = ("root", ROOT_PW, root_new)
    commands = [command(host, "root", root_new, login=login)] + [
        command(host, user, fresh(), login=login) for user in USERS]
    with ThreadPoolExecutor(max_workers=8) as threads:
        results = list(threads.map(lambda c: rotate(c, targets, "w1", False), commands))
    assert [r.status for r in results] == ["success"] * len(commands), [r.error for r in results]
    for c in commands:
        assert host.password_works(c.username, c.new_secret.get_secret_value())
    host.set_password("root", ROOT_PW)
