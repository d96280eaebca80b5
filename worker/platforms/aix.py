"""AIX: lsuser, mkuser, `chpasswd -c` (clears the ADMCHG flag, so the account is not asked to
change the password it was just given at its next login) and su to act as a user.

Not tried on a real AIX host: the tests check the exact argv and stdin sent.
"""
from __future__ import annotations

import shlex

from worker.platforms.base import Account, UnixDriver
from worker.platforms.refusals import USER_MISSING
from worker.platforms.values import NewUser
from worker.ssh import Completed


class AixDriver(UnixDriver):
    default_shell = "/usr/bin/ksh"
    password_argv = ["chpasswd", "-c"]

    def lookup_argv(self, user: str) -> list[str]:
        return ["lsuser", "-c", "-a", "home", "pgrp", user]

    def user_missing(self, done: Completed) -> bool:
        return done.status != 0 and bool(USER_MISSING.search(done.stderr))

    def parse_lookup(self, stdout: str) -> Account:
        """`#name:home:pgrp` then `alice:/home/alice:staff` (colon form, header first)."""
        header, row = stdout.strip().splitlines()[-2:]
        fields = dict(zip(header.lstrip("#").split(":"), row.split(":")))
        return Account(home=fields["home"], group=fields["pgrp"])

    def create_argv(self, user: str, new: NewUser) -> list[str]:
        argv = ["mkuser", f"home={new.home}", f"shell={new.shell}"]
        if new.group:
            argv.append(f"pgrp={new.group}")
        if new.groups:
            argv.append(f"groups={','.join(new.groups)}")
        if new.uid is not None:
            argv.append(f"id={new.uid}")
        return [*argv, user]

    def as_user(self, user: str, argv: list[str]) -> list[str]:
        return ["su", user, "-c", shlex.join(argv)]

    def bounded(self, argv: list[str], seconds: float) -> list[str]:
        """AIX ships no `timeout`: there, only the file type check keeps a read from blocking."""
        return argv
