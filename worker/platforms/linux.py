"""Linux (and generic UNIX with the same tools): getent, useradd, chpasswd, runuser.

The password only ever travels on chpasswd's stdin, in chpasswd's own `user:password` line, so
quotes, `$`, `{{ }}`, backslashes or non-ASCII letters in it are just bytes.
"""
from __future__ import annotations

from worker.platforms.base import Account, UnixDriver
from worker.platforms.values import NewUser
from worker.ssh import Completed

GETENT_NOT_FOUND = 2


class LinuxDriver(UnixDriver):
    default_shell = "/bin/bash"
    password_argv = ["chpasswd"]

    def lookup_argv(self, user: str) -> list[str]:
        return ["getent", "passwd", user]

    def user_missing(self, done: Completed) -> bool:
        return done.status == GETENT_NOT_FOUND

    def parse_lookup(self, stdout: str) -> Account:
        """`name:x:uid:gid:gecos:home:shell`; the group as its number (chown takes either)."""
        fields = stdout.strip().split(":")
        return Account(home=fields[5], group=fields[3])

    def create_argv(self, user: str, new: NewUser) -> list[str]:
        argv = ["useradd", "-m", "-d", new.home, "-s", new.shell]
        if new.group:
            argv += ["-g", new.group]
        if new.groups:
            argv += ["-G", ",".join(new.groups)]
        if new.uid is not None:
            argv += ["-u", str(new.uid)]
        return [*argv, "--", user]

    def as_user(self, user: str, argv: list[str]) -> list[str]:
        return ["runuser", "-u", user, "--", *argv]
