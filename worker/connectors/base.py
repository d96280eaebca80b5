"""What the rotation protocol (`worker.rotate`) needs of one kind of target.

A connector opens a privileged session, changes one account's secret, proves a secret with a
fresh login, and closes; its steps raise `TargetError`, whose `command_sent` says whether the
change may have been made. The protocol around it (expiry, the repeat check for a message seen
before, change, prove, settle `failed` / `unverified` / `success`) is generic and lives once.

One connector object serves one command; what outlives a command (pooled privileged sessions,
which targets were seen to refuse a wrong secret) lives in the worker's `Targets`. The controller
remembers refusals too (a result's `refusal_seen`, a command's `refusal_known`), so a worker that
has just started does not cost each host a refused login again.
"""
from __future__ import annotations

import secrets as random
import threading
import time
from shared.messages import RotateCommand
from shared.platforms import SecretType
from worker import sshkeys
from worker.errors import TargetError, describe

PROOF_SECONDS = 3600.0       # how long "this target refuses a wrong secret" is trusted


def ensure_time_to_change(command: RotateCommand, seconds: float | None = None) -> None:
    """Refuse (`expired`, nothing sent) to start a change that could not finish within the
    command's validity: every change then ends by `not_after`, which the controller's rule
    "no other rotation of the account before the deadline" counts on. `seconds`: how long the
    change may take (by default the command's timeout)."""
    if time.time() + (command.timeout if seconds is None else seconds) > command.not_after:
        raise TargetError("expired", f"the command for {command.username} on "
                                     f"{command.asset.name} expired before the change was sent; "
                                     f"nothing was changed")


class Targets:
    """What a worker keeps between commands: each connector's pool of privileged sessions
    (created on first use), and which targets were seen to refuse a wrong secret."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pools: dict[type, object] = {}
        self._proofs: dict[tuple, tuple[float, bool]] = {}

    def pool(self, connector: type[Connector]):
        with self._lock:
            if connector not in self._pools:
                self._pools[connector] = connector.new_pool()
            return self._pools[connector]

    def known_proof(self, key: tuple) -> bool | None:
        """Whether this target was seen to refuse a wrong secret lately (None: not known)."""
        with self._lock:
            known = self._proofs.get(key)
        return known[1] if known and time.monotonic() - known[0] < PROOF_SECONDS else None

    def remember_proof(self, key: tuple, refused: bool) -> None:
        with self._lock:
            self._proofs[key] = (time.monotonic(), refused)

    def prune(self) -> None:
        for pool in self._each_pool():
            pool.prune()

    def close(self) -> None:
        for pool in self._each_pool():
            pool.close()

    def _each_pool(self) -> list:
        with self._lock:
            return [pool for pool in self._pools.values() if pool is not None]


class Connector:
    """One kind of target. Subclasses implement `change` and `logs_in`, and may override the
    others; `change` calls `before_change()` right before sending what may change the secret."""

    # After a change, the old secret must be refused too (databases: it replaces; Redis:
    # removed in `finish`). UNIX accounts may keep working keys, so they do not claim it.
    old_secret_refused = False

    def __init__(self, command: RotateCommand, targets: Targets):
        self.command = command
        self.targets = targets
        self.pool = targets.pool(type(self))
        self.where = describe(command.asset)     # how messages name the target
        self.change_started = False
        self.host_key: str | None = None      # reported for pinning (SSH)
        self.login_index: int | None = None   # which login secret opened the privileged session
        self.note: str | None = None          # what a person should know of the change (reported)
        self.refusal_seen = False             # this command saw the target refuse a wrong secret

    @classmethod
    def new_pool(cls):
        """What this connector pools between commands (with `prune()` and `close()`), or None."""
        return None

    def check(self) -> None:
        """Refuse, before anything is sent, values this target cannot take safely."""

    def change(self) -> None:
        """Log in as the privileged account and set the account's new secret."""
        raise NotImplementedError

    def logs_in(self, username: str, secret: str) -> bool:
        """Whether a fresh login as `username` with `secret` (of the command's secret type)
        succeeds; TargetError when it cannot tell (the target is down, ...)."""
        raise NotImplementedError

    def before_change(self, seconds: float | None = None) -> None:
        """Call right before sending what may change the secret (which may take `seconds`)."""
        ensure_time_to_change(self.command, seconds)
        self.change_started = True

    def finish(self) -> None:
        """After the new secret is proven: what completes the change (Redis drops the old)."""

    def proof_key(self) -> tuple:
        """What a wrong-secret check is cached under: the target (not the account)."""
        asset = self.command.asset
        return (asset.platform, asset.address, asset.port, self.command.secret_type)

    def refuses_wrong_secret(self) -> bool:
        """Whether the target checks secrets at all (PostgreSQL `trust` or a PAM `permit` host
        accept anything): a fresh login with a random wrong secret must fail. Checked at most
        once per `PROOF_SECONDS` by a worker (a refused login can cost a host its failure
        delay), and not at all while the controller saw it lately. Concurrent first checks may
        both run; each gives the same answer."""
        known = self.known_refusal()
        if known is None:
            known = not self.logs_in(self.command.username, self.wrong_secret())
            self.remember_refusal(known)
        return known

    def known_refusal(self) -> bool | None:
        """Whether this target refuses a wrong secret, if the controller or this worker saw it
        lately; None: check."""
        if self.command.refusal_known:
            return True
        return self.targets.known_proof(self.proof_key())

    def remember_refusal(self, refused: bool) -> None:
        self.targets.remember_proof(self.proof_key(), refused)
        self.refusal_seen = refused

    def wrong_secret(self) -> str:
        if self.command.secret_type == SecretType.SSH_KEY:
            return sshkeys.random_private_key()
        return "keyturn-wrong-" + random.token_urlsafe(24)

    def secrets(self) -> list[str]:
        """Every secret of the command, for scrubbing them out of anything reported."""
        c = self.command
        given = [s for s in (c.new_secret, c.old_secret) if s]
        return [s.get_secret_value() for s in [*c.login_secrets, *c.candidates, *given]]
