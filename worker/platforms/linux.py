"""Password changes on Linux with chpasswd, as root or through sudo.

The password only ever travels on chpasswd's stdin, in chpasswd's own `user:password` line, so
quotes, `$`, `{{ }}`, backslashes or non-ASCII letters in it are just bytes. A non-root login
becomes root with sudo; whether sudo wants the login's password (given on sudo's stdin, ahead of
the chpasswd line) is learned once per session with a probe that changes nothing.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from shared.messages import USERNAME, RotateCommand
from worker.platforms.base import ChangeFailed
from worker.sessions import Session
from worker.ssh import Completed, SshError

SUDO_NOPASSWD = ["sudo", "-n"]
SUDO_PASSWORD = ["sudo", "-S", "-k", "-p", ""]   # -k: always read the password line, never a cache
POLICY = re.compile(r"BAD PASSWORD|already used|exhausted maximum number of retries|too short|"
                    r"too simple|too similar|dictionary|palindrome|character classes|quality",
                    re.IGNORECASE)
SUDO_REFUSAL = re.compile(r"^sudo:|sudoers|Sorry, try again|incorrect password", re.MULTILINE)
USER_MISSING = re.compile(r"does not exist|unknown user", re.IGNORECASE)
DETAIL_LIMIT = 300


class Sudo(NamedTuple):
    """How this session's login becomes root: a sudo prefix, or why it cannot."""

    argv: list[str] | None
    wants_password: bool = False
    refusal: str | None = None


class LinuxDriver:
    def change_password(self, session: Session, command: RotateCommand, login_password: str) -> None:
        user, asset = command.username, command.asset.name
        password = command.new_secret.get_secret_value()
        if not USERNAME.match(user):   # the schema checks it too; the chpasswd line relies on it
            raise ChangeFailed("bad_username", f"{user!r} is not a valid user name")
        if any(char in password for char in "\n\r\0"):
            raise ChangeFailed("unsupported_secret", f"the new password for {user} contains a line "
                                                     f"break or NUL, which chpasswd cannot set")
        secrets = (password, login_password)
        if _probe(session, ["getent", "passwd", user], b"", command, secrets).status == 2:
            raise ChangeFailed("user_missing", f"user {user} does not exist on {asset}")
        argv, stdin = [], b""
        if command.login_username != "root":
            sudo = session.remember("sudo", lambda: _find_sudo(session, command, login_password))
            if sudo.argv is None:
                raise ChangeFailed("privilege_failed", sudo.refusal)
            argv = sudo.argv
            stdin = login_password.encode() + b"\n" if sudo.wants_password else b""
        done = session.run(argv + ["chpasswd"], stdin + f"{user}:{password}\n".encode(),
                           timeout=command.timeout, secrets=secrets)
        if done.status != 0:
            raise _refusal(done, command)


def _find_sudo(session: Session, command: RotateCommand, login_password: str) -> Sudo:
    """Ask sudo whether the login may run chpasswd: without a password, else with its own."""
    login, asset, secrets = command.login_username, command.asset.name, (login_password,)
    if _probe(session, SUDO_NOPASSWD + ["-l", "chpasswd"], b"", command, secrets).status == 0:
        return Sudo(SUDO_NOPASSWD)
    probe = _probe(session, SUDO_PASSWORD + ["-l", "chpasswd"], login_password.encode() + b"\n",
                   command, secrets)
    if probe.status == 0:
        return Sudo(SUDO_PASSWORD, wants_password=True)
    return Sudo(None, refusal=f"{login} may not run chpasswd with sudo on {asset}: {_detail(probe)}")


def _probe(session: Session, argv: list[str], stdin: bytes, command: RotateCommand,
           secrets: tuple[str, ...]) -> Completed:
    """Run a command that changes nothing: if it fails, the change was certainly not sent."""
    try:
        return session.run(argv, stdin, timeout=command.timeout, secrets=secrets)
    except SshError as exc:
        raise SshError(exc.code, str(exc)) from None


def _refusal(done: Completed, command: RotateCommand) -> ChangeFailed:
    """Name the reason a person can act on; chpasswd failed, so the password is unchanged."""
    user, asset = command.username, command.asset.name
    if SUDO_REFUSAL.search(done.stderr):
        return ChangeFailed("privilege_failed", f"sudo refused to run chpasswd on {asset}: "
                                                f"{_detail(done)}")
    if USER_MISSING.search(done.stderr):
        return ChangeFailed("user_missing", f"user {user} does not exist on {asset}")
    if POLICY.search(done.stderr):
        return ChangeFailed("policy_rejected", f"the password policy on {asset} rejected the new "
                                               f"password for {user}: {_detail(done)}")
    return ChangeFailed("change_failed", f"chpasswd failed for {user} on {asset}: {_detail(done)}")


def _detail(done: Completed) -> str:
    """The remote error output (already scrubbed of secrets) as one short line."""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return "; ".join(lines)[:DETAIL_LIMIT] or f"exit status {done.status}"
