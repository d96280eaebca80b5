"""Plan parameters checked before they become arguments of useradd, mkuser or a sudoers line.

They reach the host only as argv elements, but useradd, mkuser, /etc/passwd and sudoers have
their own syntax (`:` and `,` separate fields, `#` starts a comment, a newline a new rule), so
anything that could mean more than the operator wrote is refused before any change is made.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from shared.platforms import UnixParams
from worker.platforms.refusals import ChangeFailed

PATH = re.compile(r"^(?:/[A-Za-z0-9_.+-]+)+/?$|^/$")
GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
MAX_UID = 2**31 - 2
SUDOERS_ESCAPED = re.compile(r"([,:=])")   # sudoers wants these escaped in a command
SUDOERS_REFUSED = re.compile(r"[\x00-\x1f\x7f#\\]")   # line breaks, comments, escapes


class NewUser(NamedTuple):
    home: str
    shell: str
    group: str | None
    groups: list[str]
    uid: int | None


def new_user(user: str, params: UnixParams, default_shell: str) -> NewUser:
    """What to create `user` with: the plan's values, else /home/<user> and `default_shell`."""
    home = _path("home", params.home or f"/home/{user}")
    shell = _path("shell", params.shell or default_shell)
    for group in filter(None, [params.group, *params.groups]):
        if not GROUP.match(group):
            raise ChangeFailed("bad_params", f"group {group!r} is not a valid group name")
    if params.uid is not None and params.uid > MAX_UID:
        raise ChangeFailed("bad_params", f"uid {params.uid} is out of range")
    return NewUser(home, shell, params.group, list(params.groups), params.uid)


def sudoers_line(user: str, commands: list[str]) -> str:
    """`user ALL=(ALL) NOPASSWD: cmd, ...` with each command escaped the way sudoers reads it."""
    if not commands:
        raise ChangeFailed("bad_params", "modify_sudo needs at least one sudo command")
    escaped = []
    for command in commands:
        command = command.strip()
        if SUDOERS_REFUSED.search(command) or not (command == "ALL" or command.startswith("/")):
            raise ChangeFailed("bad_params", f"sudo command {command!r} cannot be written to "
                                             f"sudoers as it is: give a full path, without line "
                                             f"breaks, # or backslashes")
        escaped.append(SUDOERS_ESCAPED.sub(r"\\\1", command))
    return f"{user} ALL=(ALL) NOPASSWD: {', '.join(escaped)}\n"


def _path(name: str, value: str) -> str:
    if not PATH.match(value) or "/../" in f"{value}/" or len(value) > 1024:
        raise ChangeFailed("bad_params", f"{name} {value!r} is not a plain absolute path")
    return value
