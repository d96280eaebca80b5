"""The one error type of a step on a target (an SSH command, a database statement)."""
from __future__ import annotations

from shared.errors import KeyturnError


class TargetError(KeyturnError):
    """A step on a target failed: `code` for the controller, the message for a person.
    `command_sent`: the change had been sent and may have run, so its outcome is unknown, and
    the rotation protocol must settle it by a login (`unverified` if that does not prove it)."""

    def __init__(self, code: str, message: str, *, command_sent: bool = False):
        super().__init__(message)
        self.code = code
        self.command_sent = command_sent
