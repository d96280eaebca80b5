"""One account's rotation (or verification), step 2 of the rotation protocol in DESIGN.md, for
any kind of target: the connector (`worker.connectors`) does the target's steps, this module
decides what they mean.

Log in as the privileged account, change the secret, then prove it with a *new* login as the
account. The status is what the controller may safely conclude: `failed` only when the change
was certainly not made (never sent, or refused by the target), `unverified` whenever it may have
been made but the new secret could not be shown to work, `success` only after that login, on a
target seen to refuse a wrong secret, and (where the platform says so) once the old secret is
refused too. A command past its validity changes nothing.
"""
from __future__ import annotations

import logging
import time
import traceback

from shared.logs import log_ids
from shared.messages import RotateCommand, RotateResult
from worker.connectors import Connector, TargetError, Targets, connector_class
from worker.connectors.base import ensure_time_to_change
from worker.errors import scrub
from worker.metrics import count_result

logger = logging.getLogger(__name__)
MAX_ERROR = 4000          # RotateResult.error's bound
# Refusals the command alone decides (or the target's fixed rules): an earlier delivery of the
# same command was refused the same way, so it changed nothing either.
SAME_ON_EVERY_DELIVERY = frozenset({"expired", "unsupported_secret", "bad_secret", "empty_secret",
                                    "no_secret", "bad_dialogue", "no_dialogue", "unsupported",
                                    "protected"})


def rotate(command: RotateCommand, targets: Targets, worker_id: str,
           redelivered: bool) -> RotateResult:
    """Carry out `command` and say what happened; never raises (a bug too ends in a result)."""
    with log_ids(record=command.record_id):
        run = _Run(command, targets, worker_id)
        try:
            return run.verify() if command.action == "verify" else run.rotate(redelivered)
        except Exception as exc:
            logger.error("record %s: unexpected error\n%s", command.record_id,
                         scrub("".join(traceback.format_exception(exc)), run.target.secrets()))
            return run.result("unverified" if run.target.change_started else "failed",
                              "internal_error", f"{command.asset.name}: unexpected "
                                                f"{type(exc).__name__} in the worker (see its log)")


class _Run:
    """One command's handling: its connector, and when it started."""

    def __init__(self, command: RotateCommand, targets: Targets, worker_id: str):
        self.command = command
        self.worker_id = worker_id
        self.started_at = time.time()
        self.target: Connector = connector_class(command.asset.platform)(command, targets)

    def rotate(self, redelivered: bool) -> RotateResult:
        c = self.command
        seen_before = redelivered or c.attempt > 1
        try:
            ensure_time_to_change(c)   # early, once more right before the change is sent
            self.target.check()
            if seen_before:
                repeated = self.check_repeat()
                if repeated is not None:
                    return repeated
                seen_before = False    # the target still has the old secret: as if new
            self.target.change()
        except TargetError as exc:
            if exc.command_sent:
                return self.settle_unknown(exc)
            if seen_before and exc.code not in SAME_ON_EVERY_DELIVERY:
                # an earlier delivery may have made the change before this one could look
                return self.result("unverified", exc.code, f"{exc}; an earlier delivery of this "
                                                           f"command may have changed the "
                                                           f"{self.kind} of {c.username}")
            return self.result("failed", exc.code, str(exc))
        return self.prove()

    def check_repeat(self) -> RotateResult | None:
        """A message seen before (redelivered, or dispatched again) may have done its work, or
        be stale: a newer rotation may have set another secret since. So: if the new secret
        already works, that is success; if the old one no longer works either, change nothing.
        None: the target still has the old secret, go ahead."""
        c = self.command
        if self.target.logs_in(c.username, c.new_secret.get_secret_value()):
            logger.info("record %s: seen before, and the new %s already works", c.record_id,
                        self.kind)
            return self.prove(new_works=True)
        if c.old_secret is not None and not self.target.logs_in(c.username,
                                                                c.old_secret.get_secret_value()):
            return self.result("failed", "stale", f"{c.asset.name}: neither the new nor the expected "
                                                  f"current {self.kind} of {c.username} logs in; "
                                                  f"nothing was changed")
        return None

    def prove(self, *, new_works: bool = False) -> RotateResult:
        """The new secret works on a target that checks secrets, and the change is complete."""
        c = self.command
        try:
            if not (new_works or self.target.logs_in(c.username, c.new_secret.get_secret_value())):
                return self.unproven("verify_failed", f"{c.username} cannot log in with the new "
                                                      f"{self.kind}")
            if not self.target.refuses_wrong_secret():
                return self.unproven("no_password_check", "this server does not check passwords: "
                                                          "it let in a wrong one too")
            self.target.finish()
            if (self.target.old_secret_refused and c.old_secret is not None
                    and self.target.logs_in(c.username, c.old_secret.get_secret_value())):
                return self.unproven("old_secret_works", f"the old {self.kind} of {c.username} "
                                                         f"still logs in")
        except TargetError as exc:
            return self.unproven(exc.code, f"the proof failed: {exc}")
        return self.result("success")

    def unproven(self, code: str, reason: str) -> RotateResult:
        return self.result("unverified", code, f"{self.command.asset.name}: the change was made "
                                               f"but {reason}")

    def settle_unknown(self, exc: TargetError) -> RotateResult:
        """The change may or may not have happened: a login with the new secret decides."""
        c = self.command
        try:
            if self.target.logs_in(c.username, c.new_secret.get_secret_value()):
                return self.prove(new_works=True)
        except TargetError:
            pass
        return self.result("unverified", exc.code, f"{exc}; the {self.kind} of {c.username} may "
                                                   f"have changed, and a login with the new one "
                                                   f"did not succeed")

    def verify(self) -> RotateResult:
        """Which candidate logs in as the account (fresh logins; nothing is changed)."""
        c = self.command
        try:
            for index, candidate in enumerate(c.candidates):
                if self.target.logs_in(c.username, candidate.get_secret_value()):
                    if not self.target.refuses_wrong_secret():
                        return self.result("failed", "no_password_check",
                                           f"{c.asset.name}: this server does not check "
                                           f"passwords, so no candidate can be told apart")
                    return self.result("success", working_index=index)
        except TargetError as exc:
            return self.result("failed", exc.code, str(exc))
        return self.result("failed", "no_candidate", f"{c.asset.name}: none of the "
                                                     f"{len(c.candidates)} candidate {self.kind}s "
                                                     f"logs in as {c.username}")

    @property
    def kind(self) -> str:
        return "password" if self.command.secret_type == "password" else "key"

    def result(self, status: str, error_code: str | None = None, error: str | None = None,
               working_index: int | None = None) -> RotateResult:
        c = self.command
        if error is not None and len(error) > MAX_ERROR:
            error = error[:MAX_ERROR - 1] + "…"
        outcome = f"{status} ({error_code}: {error})" if error_code else status
        logger.info("record %s %s %s@%s: %s", c.record_id, c.action, c.username, c.asset.name,
                    outcome)
        finished_at = time.time()
        count_result(c.asset.platform, c.action, status, error_code, finished_at - self.started_at)
        return RotateResult(record_id=c.record_id, attempt=c.attempt, zone=c.zone,
                            worker_id=self.worker_id, status=status, error_code=error_code,
                            error=error, host_key=self.target.host_key,
                            login_index=self.target.login_index, working_index=working_index,
                            note=self.target.note, refusal_seen=self.target.refusal_seen,
                            started_at=self.started_at, finished_at=finished_at,
                            expired_not_after=c.not_after if error_code == "expired" else None)
