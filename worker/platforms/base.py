"""What every platform driver promises, so `worker.rotate` can judge outcomes the same way."""
from __future__ import annotations

from typing import Protocol

from shared.errors import KeyturnError
from shared.messages import RotateCommand
from worker.sessions import Session


class ChangeFailed(KeyturnError):
    """The host refused the change, so the old password is still in place: `code` for the
    controller (`user_missing`, `policy_rejected`, `privilege_failed`, ...), text for a person."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Driver(Protocol):
    def change_password(self, session: Session, command: RotateCommand, login_password: str) -> None:
        """Set `command.new_secret` for `command.username` through the privileged `session`.

        Raises `ChangeFailed` when the host refused (nothing changed) and `SshError` when the
        connection failed; `SshError.command_sent` is True only if the change itself may have run."""
