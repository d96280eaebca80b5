"""The AIX driver without an AIX host: the exact argv and stdin it sends, through a recording
stand-in for its collaborator, the privileged SSH session (which answers as AIX would)."""
from __future__ import annotations

import shlex
import time
from typing import NamedTuple

import pytest

from shared.messages import AssetTarget, RotateCommand
from tests.test_worker_keys import new_key, public
from worker.platforms import ChangeFailed, Root
from worker.platforms.aix import AixDriver
from worker.ssh import Completed

LSUSER_ALICE = Completed(0, "#name:home:pgrp\nalice:/home/alice:staff\n", "")
NO_SUCH_USER = Completed(2, "", '3004-687 User "{user}" does not exist.\n')
ROOT_PW, LOGIN_PW, NEW_PW = "root-pw-aix", "login-pw-aix", "new 'pw' $x {{ y }}"
SU_SCRIPT = "PATH=/usr/sbin:/sbin:$PATH; export PATH; echo keyturn-ready && exec "


class Call(NamedTuple):
    argv: list[str]
    stdin: bytes
    preamble: bytes
    ready: bytes | None


class RecordingSession:
    """Records every command; answers the first scripted reply whose text occurs in the
    command line (each reply used once), else success with no output."""

    def __init__(self, replies: list[tuple[str, Completed]] = ()):
        self.calls: list[Call] = []
        self.replies = list(replies)
        self.facts: dict[str, object] = {}

    def run(self, argv, stdin=b"", *, timeout, secrets=(), preamble=b"", ready=None, binary=False):
        self.calls.append(Call(argv, stdin, preamble, ready))
        line = shlex.join(argv)
        for index, (text, done) in enumerate(self.replies):
            if text in line:
                del self.replies[index]
                return done._replace(stdout=done.stdout.encode()) if binary else done
        return Completed(0, b"" if binary else "", "")

    def remember(self, name, compute):
        if name not in self.facts:
            self.facts[name] = compute()
        return self.facts[name]


def aix_command(username: str = "alice", new: str = NEW_PW, *, login=("root", ROOT_PW),
                **fields) -> RotateCommand:
    asset = AssetTarget(name="aix-1", address="192.0.2.7", port=22, platform="aix",
                        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    return RotateCommand(record_id=1, attempt=1, zone="dmz", asset=asset, login_username=login[0],
                         login_secrets=[login[1]], username=username, new_secret=new,
                         **{"not_after": time.time() + 600} | fields)


def change(command: RotateCommand, session: RecordingSession) -> list[Call]:
    AixDriver().change(Root(session, command, command.login_secrets[0].get_secret_value()), command)
    return session.calls


def unwrap(argv: list[str], user: str, script: str = "") -> list[str]:
    """The command inside `su USER -c '<script><command>'`."""
    assert argv[:3] == ["su", user, "-c"] and argv[3].startswith(script)
    return shlex.split(argv[3].removeprefix(script))


def no_secret_in_argv(calls: list[Call], *secrets: str) -> bool:
    return not any(s in arg for call in calls for arg in call.argv for s in secrets)


def test_a_password_is_set_with_chpasswd_c_as_root_and_nothing_else():
    calls = change(aix_command(), RecordingSession([("lsuser", LSUSER_ALICE)]))
    assert calls == [Call(["chpasswd", "-c"], f"alice:{NEW_PW}\n".encode(), b"", None)]


def test_a_refused_password_looks_the_user_up_to_name_a_missing_one():
    refused = Completed(1, "", "chpasswd: cannot change the password\n")
    session = RecordingSession([("chpasswd", refused), ("lsuser", NO_SUCH_USER)])
    with pytest.raises(ChangeFailed) as caught:
        change(aix_command(), session)
    assert (caught.value.code, str(caught.value)) == ("user_missing", "user alice does not exist on aix-1")
    assert [call.argv[0] for call in session.calls] == ["chpasswd", "lsuser"]


def test_a_refused_password_of_an_existing_user_says_why():
    refused = Completed(1, "", "chpasswd: cannot change the password\n")
    session = RecordingSession([("chpasswd", refused), ("lsuser", LSUSER_ALICE)])
    with pytest.raises(ChangeFailed) as caught:
        change(aix_command(), session)
    assert caught.value.code == "change_failed" and "cannot change the password" in str(caught.value)


def test_create_user_uses_mkuser_with_ksh_and_home_by_default():
    session = RecordingSession([("lsuser", NO_SUCH_USER), ("lsuser", LSUSER_ALICE)])
    calls = change(aix_command(params={"create_user": True}), session)
    assert [call.argv for call in calls] == [
        ["lsuser", "-c", "-a", "home", "pgrp", "alice"],
        ["mkuser", "home=/home/alice", "shell=/usr/bin/ksh", "alice"],
        ["lsuser", "-c", "-a", "home", "pgrp", "alice"],
        ["chpasswd", "-c"]]
    assert calls[-1].stdin == f"alice:{NEW_PW}\n".encode()


def test_create_user_passes_the_plan_values_as_attributes():
    session = RecordingSession([("lsuser", NO_SUCH_USER), ("lsuser", LSUSER_ALICE)])
    params = {"create_user": True, "shell": "/usr/bin/bash", "home": "/export/alice",
              "group": "staff", "groups": ["staff", "audit"], "uid": 501}
    calls = change(aix_command(params=params), session)
    assert calls[1].argv == ["mkuser", "home=/export/alice", "shell=/usr/bin/bash", "pgrp=staff",
                             "groups=staff,audit", "id=501", "alice"]


def test_a_sudoer_login_feeds_sudo_its_password_on_stdin():
    session = RecordingSession([("lsuser", LSUSER_ALICE),
                                ("sudo -n -l", Completed(1, "", "sudo: a password is required\n"))])
    calls = change(aix_command(login=("admin", LOGIN_PW)), session)
    assert calls == [
        Call(["sudo", "-n", "-l"], b"", b"", None),
        Call(["sudo", "-S", "-k", "-p", "", "-l"], b"", f"{LOGIN_PW}\n".encode(), None),
        Call(["sudo", "-S", "-k", "-p", "", "chpasswd", "-c"], f"alice:{NEW_PW}\n".encode(),
             f"{LOGIN_PW}\n".encode(), None)]
    assert no_secret_in_argv(calls, LOGIN_PW, NEW_PW)


def test_a_key_is_written_as_the_user_through_su():
    """su to root with root's password first on stdin; the file steps run as alice (`su alice`)."""
    key = new_key()
    command = aix_command(new=key, login=("admin", LOGIN_PW), secret_type="ssh_key",
                          params={"become": "su", "become_secret": ROOT_PW, "key_strategy": "add"})
    existing = "ssh-rsa AAAAmine alice@laptop\n"
    session = RecordingSession([("lsuser", LSUSER_ALICE), ("test -f", Completed(0, "", "")),
                                ("head -c", Completed(0, existing, ""))])
    calls = change(command, session)
    as_root = [unwrap(call.argv, "root", SU_SCRIPT) for call in calls[1:]]
    assert as_root[:2] == [["mkdir", "-p", "-m", "0700", "/home/alice/.ssh"],
                           ["chown", "-h", "alice:staff", "/home/alice/.ssh"]]
    as_alice = [unwrap(argv, "alice") for argv in as_root[2:]]
    draft = as_alice[2][1]
    assert draft.startswith("/home/alice/.ssh/.authorized_keys.keyturn-")
    assert as_alice == [["test", "-f", "/home/alice/.ssh/authorized_keys"],
                        ["head", "-c", "524289", "/home/alice/.ssh/authorized_keys"],
                        ["tee", draft], ["chmod", "0600", draft],
                        ["mv", "-f", draft, "/home/alice/.ssh/authorized_keys"]]
    assert all((call.preamble, call.ready) == (f"{ROOT_PW}\n".encode(), b"keyturn-ready\n")
               for call in calls[1:])
    assert calls[5].stdin == f"{existing}{public(key)} keyturn-managed\n".encode()
    assert no_secret_in_argv(calls, ROOT_PW, LOGIN_PW, key, public(key).split()[1])


def test_a_wrong_root_password_for_su_stops_before_the_change():
    session = RecordingSession([("lsuser", LSUSER_ALICE),
                                ("su root", Completed(1, "", "3004-300 You entered an invalid "
                                                             "login name or password.\n", False))])
    with pytest.raises(ChangeFailed) as caught:
        change(aix_command(login=("admin", LOGIN_PW), params={"become": "su", "become_secret": ROOT_PW}),
               session)
    assert caught.value.code == "privilege_failed"
    assert "su to root failed on aix-1: 3004-300" in str(caught.value)
    assert len(session.calls) == 1


def test_a_rejected_password_is_explained():
    session = RecordingSession([("lsuser", LSUSER_ALICE),
                                ("chpasswd", Completed(1, "", "3004-335 Passwords must not match "
                                                              "the last 5 passwords (too similar)\n"))])
    with pytest.raises(ChangeFailed) as caught:
        change(aix_command(), session)
    assert caught.value.code == "policy_rejected"


def test_a_sudo_rule_is_checked_by_visudo_before_it_is_installed():
    calls = change(aix_command(params={"modify_sudo": True, "sudo_commands": ["/usr/bin/id -u"]}),
                   RecordingSession([("lsuser", LSUSER_ALICE)]))
    draft = calls[1].argv[1]
    assert draft.startswith("/etc/sudoers.d/.keyturn-alice.keyturn-")
    assert [call.argv for call in calls[1:5]] == [
        ["tee", draft], ["chmod", "0440", draft], ["visudo", "-c", "-f", draft],
        ["mv", "-f", draft, "/etc/sudoers.d/keyturn-alice"]]
    assert calls[1].stdin == b"alice ALL=(ALL) NOPASSWD: /usr/bin/id -u\n"
    assert calls[5].argv == ["chpasswd", "-c"]
