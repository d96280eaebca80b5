"""The one error type of a step on a target (an SSH command, a database statement), and how
its messages name the target and keep secrets out."""
from __future__ import annotations

from typing import Iterable

from shared.errors import KeyturnError
from shared.messages import AssetTarget


class TargetError(KeyturnError):
    """A step on a target failed: `code` for the controller, the message for a person.
    `command_sent`: the change had been sent and may have run, so its outcome is unknown, and
    the rotation protocol must settle it by a login (`unverified` if that does not prove it)."""

    def __init__(self, code: str, message: str, *, command_sent: bool = False):
        super().__init__(message)
        self.code = code
        self.command_sent = command_sent


def describe(asset: AssetTarget) -> str:
    """How a message names the target: `name (address:port)`."""
    return f"{asset.name} ({asset.address}:{asset.port})"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***` (longest first, so none survives in part)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
