"""Per-plan parameters on a real sshd host: creating a missing account, a sudo rule checked by
visudo before it is installed, becoming root with sudo, su or not at all, and the SSH timeout.
Each through root, NOPASSWD sudo, password sudo and su, checked on the host itself."""
from __future__ import annotations

import logging
import os
import time
import uuid

import pytest

from tests.test_worker_rotate import ROOT_PW, command, fresh
from worker.rotate import rotate

OPS = ("ops", "ops-pw-params")                   # NOPASSWD sudoer
SUDOER = ("sudoer", "sudoer \"pw\" $x {{ y }}")  # sudo asks its own password
PLAIN = ("plain", "plain-pw-params")             # no sudo; knows root's password (su)
SU = {"become": "su", "become_secret": ROOT_PW}
LOGINS = {"root": (("root", ROOT_PW), {}), "nopasswd sudo": (OPS, {}),
          "password sudo": (SUDOER, {}), "su": (PLAIN, SU)}


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-0"}, sudo_user=OPS)
    host.set_password("root", ROOT_PW)
    host.add_user(*SUDOER, sudo="password")
    host.add_user(*PLAIN)
    host.run(["groupadd", "-g", "3100", "team"])
    yield host
    host.close()


def run_as(host, targets, via: str, user: str, new: str, **params):
    login, become = LOGINS[via]
    return rotate(command(host, user, new, login=login, params=become | params), targets, "w1", False)


def passwd(host, user: str) -> list[str]:
    done = host.run(["getent", "passwd", user], check=False)
    return done.stdout.decode().strip().split(":") if done.returncode == 0 else []


def stat(host, path: str) -> str:
    return host.run(["stat", "-c", "%a %U %G", path]).stdout.decode().strip()


def unique_user() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("via", LOGINS)
def test_a_missing_account_is_created_with_defaults(host, via, targets):
    user, new = unique_user(), fresh()
    result = run_as(host, targets, via, user, new, create_user=True)
    assert (result.status, result.error) == ("success", None)
    assert passwd(host, user)[5:] == [f"/home/{user}", "/bin/bash"]
    assert stat(host, f"/home/{user}").split()[1:] == [user, user]   # mode: the host's policy
    assert host.password_works(user, new)


def test_an_account_is_created_as_the_plan_says(host, targets):
    user, new = unique_user(), fresh()
    result = run_as(host, targets, "password sudo", user, new, create_user=True, shell="/bin/sh",
                    home=f"/srv/{user}", group="team", groups=["audio", "video"], uid=4242)
    assert result.status == "success", result.error
    assert passwd(host, user)[2:] == ["4242", "3100", "", f"/srv/{user}", "/bin/sh"]
    groups = host.run(["id", "-nG", user]).stdout.decode().split()
    assert sorted(groups) == ["audio", "team", "video"]
    assert stat(host, f"/srv/{user}").split()[1:] == [user, "team"]
    assert host.password_works(user, new)


def test_an_existing_account_is_not_created_again(host, targets):
    before = passwd(host, "alice")
    result = run_as(host, targets, "root", "alice", fresh(), create_user=True, shell="/bin/sh", uid=4343)
    assert result.status == "success"
    assert passwd(host, "alice") == before


@pytest.mark.parametrize("params, refused", [
    ({"home": "/srv/../etc"}, "home '/srv/../etc'"),
    ({"shell": "bash"}, "shell 'bash'"),
    ({"group": "team:x"}, "group 'team:x'"),
])
def test_bad_account_values_are_refused_before_anything_is_sent(host, params, refused, targets):
    user, log_before = unique_user(), host.log_path.read_text()
    result = run_as(host, targets, "root", user, fresh(), create_user=True, **params)
    assert (result.status, result.error_code) == ("failed", "bad_params")
    assert refused in result.error
    assert passwd(host, user) == []
    assert host.log_path.read_text() == log_before        # not even a login


@pytest.mark.parametrize("params, field", [
    ({"groups": ["audio", "video\nroot"]}, "groups"),
    ({"sudo_commands": ["/bin/echo a\nroot ALL=(ALL) ALL"]}, "sudo_commands"),
])
def test_a_control_character_in_a_param_does_not_even_make_a_command(host, targets, params, field):
    """The message schema refuses it: no worker ever sees the command."""
    with pytest.raises(ValueError, match=field):
        run_as(host, targets, "root", unique_user(), fresh(), create_user=True, **params)


def sudo_as(host, user: str, *argv: str):
    return host.run(["runuser", "-u", user, "--", "sudo", "-n", *argv], check=False)


@pytest.mark.parametrize("via", LOGINS)
def test_a_sudo_rule_is_installed_for_the_account(host, via, targets):
    user, new = unique_user(), fresh()
    result = run_as(host, targets, via, user, new, create_user=True, modify_sudo=True)
    assert result.status == "success", result.error
    path = f"/etc/sudoers.d/keyturn-{user}"
    assert host.run(["cat", path]).stdout.decode() == f"{user} ALL=(ALL) NOPASSWD: /bin/whoami\n"
    assert stat(host, path) == "440 root root"
    assert sudo_as(host, user, "/bin/whoami").stdout == b"root\n"
    assert sudo_as(host, user, "/bin/id").returncode != 0
    assert host.run(["ls", "-A", "/etc/sudoers.d"]).stdout.decode().count(user) == 1  # no draft


def test_sudo_commands_are_escaped_for_sudoers(host, targets):
    user = "j.doe"
    host.run(["useradd", "-m", user], check=False)
    result = run_as(host, targets, "root", user, fresh(), modify_sudo=True,
                    sudo_commands=["/usr/bin/id -u", "/bin/echo a,b:c=d"])
    assert result.status == "success", result.error
    path = "/etc/sudoers.d/keyturn-j%doe"            # a dot would make sudo skip the file
    assert host.run(["cat", path]).stdout == b"j.doe ALL=(ALL) NOPASSWD: /usr/bin/id -u, /bin/echo a\\,b\\:c\\=d\n"
    assert sudo_as(host, user, "/bin/echo", "a,b:c=d").stdout == b"a,b:c=d\n"
    assert sudo_as(host, user, "/usr/bin/id", "-u").stdout == b"0\n"


@pytest.mark.parametrize("commands", [["/bin/ls # x"], ["whoami"], ["/bin/echo a\\b"], []])
def test_sudo_commands_sudoers_cannot_hold_are_refused(host, commands, targets):
    shadow = host.shadow_line("alice")
    result = run_as(host, targets, "root", "alice", fresh(), modify_sudo=True, sudo_commands=commands)
    assert (result.status, result.error_code) == ("failed", "bad_params")
    assert host.run(["ls", "-A", "/etc/sudoers.d"]).stdout.decode().count("alice") == 0
    assert host.shadow_line("alice") == shadow


def test_a_rule_visudo_rejects_is_never_installed(host, targets):
    """A stricter visudo first in root's PATH: the draft is removed, nothing changes."""
    strict = "/usr/local/sbin/visudo"
    host.run(["sh", "-c", f'printf "#!/bin/sh\\necho no such rule >&2\\nexit 1\\n" > {strict} '
                          f'&& chmod 0755 {strict}'])
    assert not os.path.exists(strict)        # only in the host's /usr/local overlay
    try:
        shadow = host.shadow_line("alice")
        result = run_as(host, targets, "nopasswd sudo", "alice", fresh(), modify_sudo=True)
        assert (result.status, result.error_code) == ("failed", "change_failed")
        assert "(visudo failed): no such rule" in result.error
        assert host.run(["ls", "-A", "/etc/sudoers.d"]).stdout.decode().count("alice") == 0
        assert host.shadow_line("alice") == shadow
    finally:
        host.run(["rm", "-f", strict])


def test_su_with_a_wrong_root_password_changes_nothing(host, targets):
    shadow = host.shadow_line("alice")
    wrong = f"wrong-root-{uuid.uuid4().hex[:6]}"
    result = run_as(host, targets, "su", "alice", fresh(), become_secret=wrong)
    assert (result.status, result.error_code) == ("failed", "privilege_failed")
    assert "su to root failed on web-1" in result.error and "Authentication failure" in result.error
    assert wrong not in result.error
    assert host.shadow_line("alice") == shadow


def test_su_needs_roots_password(host, targets):
    result = run_as(host, targets, "su", "alice", fresh(), become_secret=None)
    assert (result.status, result.error_code) == ("failed", "privilege_failed")
    assert "needs root's password" in result.error


def test_become_sudo_and_none(host, targets):
    new = fresh()
    assert run_as(host, targets, "root", "alice", new, become="sudo").status == "success"
    assert host.password_works("alice", new)
    new = fresh()
    assert run_as(host, targets, "root", "alice", new, become="none").status == "success"
    assert host.password_works("alice", new)
    shadow = host.shadow_line("alice")
    as_ops = run_as(host, targets, "nopasswd sudo", "alice", fresh(), become="none")
    assert (as_ops.status, as_ops.error_code) == ("failed", "change_failed")
    assert host.shadow_line("alice") == shadow


def test_a_paused_host_fails_within_the_plan_timeout(ssh_farm, targets):
    host, = ssh_farm.start_hosts(1)
    try:
        host.pause()
        started = time.monotonic()
        result = rotate(command(host, "alice", fresh(), timeout=1.5), targets, "w1", False)
        elapsed = time.monotonic() - started
        assert (result.status, result.error_code) == ("failed", "timeout")
        assert "1.5 s" in result.error
        assert 1.4 < elapsed < 4
    finally:
        host.resume()
        host.close()


def test_no_secret_in_results_or_logs(host, caplog, targets):
    caplog.set_level(logging.DEBUG)
    secrets = [f"SECRET-{n}-{uuid.uuid4().hex[:8]}" for n in range(5)]
    user = unique_user()
    results = [run_as(host, targets, "su", user, secrets[0], create_user=True, modify_sudo=True),
               run_as(host, targets, "password sudo", user, secrets[1], modify_sudo=True,
                      sudo_commands=["/bin/echo a # b"]),
               run_as(host, targets, "su", "alice", secrets[2], become_secret=secrets[3]),
               run_as(host, targets, "su", "nobody9", secrets[4])]
    assert [r.status for r in results] == ["success", "failed", "failed", "failed"]
    everything = caplog.text + "".join(r.model_dump_json() for r in results)
    assert "record 7" in caplog.text
    for secret in [*secrets, ROOT_PW, SUDOER[1], PLAIN[1]]:
        assert secret not in everything
