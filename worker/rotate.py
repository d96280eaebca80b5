"""One account's rotation (or verification), step 2 of the rotation protocol in DESIGN.md.

Log in as the privileged account, change the password or SSH key, then prove it with a *new*
login as the account. The status is what the controller may safely conclude: `failed` only when
the change was certainly not made (never sent, or refused by the host), `unverified` whenever it
may have been made but the new secret could not be shown to work, `success` only after that
login. The privileged account may rotate itself (secure mode off); its pooled session is then
retired, as it is keyed by a secret that no longer works.
"""
from __future__ import annotations

import logging
import time
import traceback

from shared.messages import AssetTarget, RotateCommand, RotateResult
from worker import ssh
from worker.platforms import DRIVERS, ChangeFailed, Root, UnixDriver
from worker.sessions import SessionPool
from worker.ssh import SshError, scrub

logger = logging.getLogger(__name__)
MAX_ERROR = 4000          # RotateResult.error's bound


def expired(command: RotateCommand) -> bool:
    """Past its validity, a command may no longer change anything (see `not_after`)."""
    return time.time() > command.not_after


def rotate(command: RotateCommand, pool: SessionPool, worker_id: str,
           redelivered: bool) -> RotateResult:
    """Carry out `command` and say what happened; never raises (a bug too ends in a result)."""
    run = _Run(command, pool, worker_id)
    try:
        return run.verify() if command.action == "verify" else run.rotate(redelivered)
    except Exception as exc:
        logger.error("record %s: unexpected error\n%s", command.record_id,
                     scrub("".join(traceback.format_exception(exc)), run.secrets))
        return run.result("unverified" if run.change_started else "failed", "internal_error",
                          f"{command.asset.name}: unexpected {type(exc).__name__} in the worker "
                          f"(see its log)")


class _Run:
    """The state of one command's handling: what was learned, and whether the change began."""

    def __init__(self, command: RotateCommand, pool: SessionPool, worker_id: str):
        self.command = command
        self.pool = pool
        self.worker_id = worker_id
        self.asset: AssetTarget = command.asset
        self.started_at = time.time()
        self.host_key: str | None = None
        self.login_index: int | None = None
        self.change_started = False
        given = [s for s in (command.new_secret, command.old_secret) if s]
        self.secrets = [s.get_secret_value() for s in [*command.login_secrets, *command.candidates, *given]]

    def rotate(self, redelivered: bool) -> RotateResult:
        c = self.command
        driver = DRIVERS[c.asset.platform]
        if expired(c):
            return self.result("failed", "expired", f"{c.asset.name}: the command for {c.username} "
                                                    f"expired before it could run; nothing was "
                                                    f"changed")
        try:
            driver.check(c)
            if redelivered or c.attempt > 1:
                repeated = self.check_repeat()
                if repeated is not None:
                    return repeated
            self.change(driver)
        except ChangeFailed as exc:
            return self.result("failed", exc.code, str(exc))
        except SshError as exc:
            if not exc.command_sent:
                return self.result("failed", exc.code, str(exc))
            return self.settle_unknown(exc)
        return self.prove()

    def check_repeat(self) -> RotateResult | None:
        """A message seen before (redelivered, or dispatched again) may have done its work, or
        be stale: a newer rotation may have set another secret since. So: if the new secret
        already works, that is success; if the old one no longer works either, change nothing.
        None: the host still has the old secret, go ahead."""
        c = self.command
        if self.logs_in(c.username, c.new_secret.get_secret_value()):
            logger.info("record %s: seen before, and the new %s already works", c.record_id,
                        self.kind)
            return self.result("success")
        if c.old_secret is not None and not self.logs_in(c.username, c.old_secret.get_secret_value()):
            return self.result("failed", "stale", f"{c.asset.name}: neither the new nor the expected "
                                                  f"current {self.kind} of {c.username} logs in; "
                                                  f"nothing was changed")
        return None

    def change(self, driver: UnixDriver) -> None:
        """Log in (pooled) and change; a pooled session found dead before anything was sent is
        replaced once by a fresh login."""
        c = self.command
        logins = [secret.get_secret_value() for secret in c.login_secrets]
        for attempt in (1, 2):
            session, self.login_index = self.pool.session(self.asset, c.login_username, logins,
                                                          c.timeout, c.login_secret_type)
            self.learn(session.host_key)
            self.change_started = True
            try:
                driver.change(Root(session, c, logins[self.login_index]), c)
            except SshError as exc:
                self.pool.discard(session)
                if exc.command_sent or exc.code != "connection_lost" or attempt == 2:
                    raise
                self.change_started = False
                continue
            if c.username == c.login_username and c.secret_type == c.login_secret_type:
                self.pool.retire(session)
            return

    def prove(self) -> RotateResult:
        c = self.command
        try:
            if self.logs_in(c.username, c.new_secret.get_secret_value()):
                return self.result("success")
            reason = f"{c.username} cannot log in with the new {self.kind}"
        except SshError as exc:
            reason = f"the login as {c.username} failed: {exc}"
        return self.result("unverified", "verify_failed",
                           f"{c.asset.name}: the host reported the change done but {reason}")

    def settle_unknown(self, exc: SshError) -> RotateResult:
        """The change may or may not have happened: a login with the new password decides."""
        c = self.command
        try:
            if self.logs_in(c.username, c.new_secret.get_secret_value()):
                return self.result("success")
        except SshError:
            pass
        return self.result("unverified", exc.code, f"{exc}; the {self.kind} of {c.username} may "
                                                   f"have changed, and a login with the new one "
                                                   f"did not succeed")

    def verify(self) -> RotateResult:
        """Which candidate logs in as the account (fresh logins; nothing is changed)."""
        c = self.command
        try:
            for index, candidate in enumerate(c.candidates):
                if self.logs_in(c.username, candidate.get_secret_value()):
                    return self.result("success", working_index=index)
        except SshError as exc:
            return self.result("failed", exc.code, str(exc))
        return self.result("failed", "no_candidate", f"{c.asset.name}: none of the "
                                                     f"{len(c.candidates)} candidate {self.kind}s "
                                                     f"logs in as {c.username}")

    @property
    def kind(self) -> str:
        return "password" if self.command.secret_type == "password" else "key"

    def logs_in(self, username: str, secret: str) -> bool:
        check = ssh.login_works(self.asset, username, secret, self.command.timeout,
                                secret_type=self.command.secret_type)
        self.learn(check.host_key)
        return check.works

    def learn(self, host_key: str) -> None:
        """Report the key seen, and hold later connections of this run to it (first use)."""
        self.host_key = host_key
        if self.asset.host_key is None:
            self.asset = self.asset.model_copy(update={"host_key": host_key})

    def result(self, status: str, error_code: str | None = None, error: str | None = None,
               working_index: int | None = None) -> RotateResult:
        c = self.command
        if error is not None and len(error) > MAX_ERROR:
            error = error[:MAX_ERROR - 1] + "…"
        outcome = f"{status} ({error_code}: {error})" if error_code else status
        logger.info("record %s %s %s@%s: %s", c.record_id, c.action, c.username, c.asset.name,
                    outcome)
        return RotateResult(record_id=c.record_id, attempt=c.attempt, zone=c.zone,
                            worker_id=self.worker_id, status=status, error_code=error_code,
                            error=error, host_key=self.host_key, login_index=self.login_index,
                            working_index=working_index, started_at=self.started_at,
                            finished_at=time.time(),
                            expired_not_after=c.not_after if error_code == "expired" else None)
