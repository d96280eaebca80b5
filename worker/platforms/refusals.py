"""What a refusal by the host means: a `ChangeFailed` whose code the controller stores and whose
text (built from the host's scrubbed error output) a person can act on."""
from __future__ import annotations

import re

from worker.errors import TargetError
from shared.messages import RotateCommand
from worker.ssh import Completed

POLICY = re.compile(r"BAD PASSWORD|already used|exhausted maximum number of retries|too short|"
                    r"too simple|too similar|dictionary|palindrome|character classes|quality",
                    re.IGNORECASE)
USER_MISSING = re.compile(r"does not exist|unknown user", re.IGNORECASE)
DETAIL_LIMIT = 300


class ChangeFailed(TargetError):
    """The host refused the change, so the old secret is still in place: `code` for the
    controller (`user_missing`, `policy_rejected`, `privilege_failed`, ...), text for a person."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)


def detail(done: Completed) -> str:
    """The remote error output (already scrubbed of secrets) as one short line."""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return "; ".join(lines)[:DETAIL_LIMIT] or f"exit status {done.status}"


def must(done: Completed, failure: str, code: str = "change_failed") -> None:
    """Raise `ChangeFailed(code)` saying `failure` and why, unless the command succeeded."""
    if done.status != 0:
        raise ChangeFailed(code, f"{failure}: {detail(done)}")


def password_refusal(done: Completed, command: RotateCommand) -> ChangeFailed:
    """Why chpasswd failed (so the password is unchanged)."""
    user, asset = command.username, command.asset.name
    if USER_MISSING.search(done.stderr):
        return ChangeFailed("user_missing", f"user {user} does not exist on {asset}")
    if POLICY.search(done.stderr):
        return ChangeFailed("policy_rejected", f"the password policy on {asset} rejected the new "
                                               f"password for {user}: {detail(done)}")
    return ChangeFailed("change_failed", f"chpasswd failed for {user} on {asset}: {detail(done)}")
