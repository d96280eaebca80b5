"""How the privileged login runs a command as root, as the plan's `become` says.

`none` runs it as the login itself (right when that is root); `sudo` prefixes sudo, fed the
login's password on stdin when it wants one (learned once per session with a probe that changes
nothing); `su` runs `su root -c` with root's password on stdin, and a fixed script that prints a
ready line before it execs the command, so the command's input (a new secret) is only sent once
su has let it run and can never be read by su as a password. `auto` is none for root, else sudo.
Secrets only ever travel on stdin; a refusal by sudo or su is `ChangeFailed("privilege_failed")`.
"""
from __future__ import annotations

import re
import shlex
from typing import NamedTuple

from shared.messages import RotateCommand
from worker.connectors.base import ensure_time_to_change
from worker.platforms.refusals import ChangeFailed, detail
from worker.sessions import Session
from worker.ssh import Completed, SshError

SUDO_NOPASSWD = ["sudo", "-n"]
SUDO_PASSWORD = ["sudo", "-S", "-k", "-p", ""]   # -k: always read the password line, never a cache
SUDO_REFUSAL = re.compile(r"^sudo:|sudoers|Sorry, try again|incorrect password", re.MULTILINE)
READY = "keyturn-ready"
SU_SCRIPT = f"PATH=/usr/sbin:/sbin:$PATH; export PATH; echo {READY} && exec "


class Sudo(NamedTuple):
    """How this session's login uses sudo: a prefix, or why it cannot."""

    argv: list[str] | None
    wants_password: bool = False
    refusal: str | None = None


class Root:
    """Runs commands as root (or, `look`, as the login) for one command's change."""

    def __init__(self, session: Session, command: RotateCommand, login_secret: str):
        self.session = session
        self.command = command
        self.login_secret = login_secret
        become = command.params.become_secret
        self.become_secret = become.get_secret_value() if become else None
        given = [s.get_secret_value() for s in (command.new_secret, command.old_secret) if s]
        self.secrets = tuple(s for s in (login_secret, self.become_secret, *given) if s)
        self.how = command.params.become
        if self.how == "auto":
            self.how = "none" if command.login_username == "root" else "sudo"

    def look(self, argv: list[str]) -> Completed:
        """Run a command that changes nothing as the login itself (user look-ups)."""
        return self._run(argv, b"")

    def run(self, argv: list[str], stdin: bytes = b"", *, sets_secret: bool = False,
            binary: bool = False) -> Completed:
        """Run `argv` as root. Only a command that `sets_secret` may leave its outcome unknown
        (`SshError.command_sent`); any other one failing mid-way changed no secret. `binary`:
        stdout as the exact bytes (a file's content)."""
        c, program = self.command, argv[0]
        preamble, ready = b"", None
        if self.how == "sudo":
            sudo = self.session.remember("sudo", self._find_sudo)
            if sudo.argv is None:
                raise ChangeFailed("privilege_failed", sudo.refusal)
            argv = sudo.argv + argv
            preamble = self.login_secret.encode() + b"\n" if sudo.wants_password else b""
        elif self.how == "su":
            if self.become_secret is None or "\n" in self.become_secret:
                raise ChangeFailed("privilege_failed", f"becoming root with su on {c.asset.name} "
                                                       f"needs root's password (one line)")
            argv = ["su", "root", "-c", SU_SCRIPT + shlex.join(argv)]
            preamble, ready = self.become_secret.encode() + b"\n", f"{READY}\n".encode()
        done = self._run(argv, stdin, preamble=preamble, ready=ready, keep_unknown=sets_secret,
                         binary=binary)
        if not done.ready:
            raise ChangeFailed("privilege_failed", f"su to root failed on {c.asset.name}: "
                                                   f"{detail(done)}")
        if self.how == "sudo" and done.status != 0 and SUDO_REFUSAL.search(done.stderr):
            raise ChangeFailed("privilege_failed", f"sudo refused to run {program} on "
                                                   f"{c.asset.name}: {detail(done)}")
        return done

    def _run(self, argv: list[str], stdin: bytes, *, keep_unknown: bool = False,
             **options) -> Completed:
        if keep_unknown:   # a command that sets a secret runs only inside the command's validity
            ensure_time_to_change(self.command)
        try:
            return self.session.run(argv, stdin, timeout=self.command.timeout,
                                    secrets=self.secrets, **options)
        except SshError as exc:
            if keep_unknown:
                raise
            raise SshError(exc.code, str(exc)) from None

    def _find_sudo(self) -> Sudo:
        """Ask sudo whether the login may use it: without a password, else with its own."""
        c = self.command
        login, asset = c.login_username, c.asset.name
        if self._run(SUDO_NOPASSWD + ["-l"], b"").status == 0:
            return Sudo(SUDO_NOPASSWD)
        if c.login_secret_type != "password":
            return Sudo(None, refusal=f"sudo wants a password from {login} on {asset}, and "
                                      f"{login} logs in with an SSH key")
        probe = self._run(SUDO_PASSWORD + ["-l"], b"", preamble=self.login_secret.encode() + b"\n")
        if probe.status == 0:
            return Sudo(SUDO_PASSWORD, wants_password=True)
        return Sudo(None, refusal=f"{login} may not use sudo on {asset}: {detail(probe)}")
