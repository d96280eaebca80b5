"""Privileged SSH sessions shared by the rotations on one asset.

A login costs a TCP connect, a key exchange and a PAM password check; a batch of accounts on one
host pays it once: the first rotation logs in, the others open channels on the same transport (a
few at a time). Sessions are keyed by a salted fingerprint of the login secret, never the
secret, and dropped when dead or idle. A login that was refused or slow to fail is remembered
for a short while, so a batch neither locks the privileged account out with wrong passwords nor
waits on a dead host again and again; an instant failure (connection refused) costs nothing to
try again, so a host that comes back is used at once.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, TypeVar

from shared.messages import AssetTarget
from worker import ssh
from worker.connectors.pooling import FAILURE_MEMORY, IDLE_SECONDS, FailureMemory, Fingerprints
from worker.errors import describe
from worker.ssh import Completed, SshError

CHANNELS_PER_SESSION = 8
LOCKOUT_RISKS = ("login_failed", "bad_secret")       # the host saw a wrong secret
T = TypeVar("T")


class Session:
    """One authenticated privileged connection; runs commands a few at a time."""

    def __init__(self, connection: ssh.Connection, channels: int):
        self.connection = connection
        self.last_used = time.monotonic()
        self._channels = threading.BoundedSemaphore(channels)
        self._facts: dict[str, object] = {}
        self._facts_lock = threading.Lock()   # held while a fact is computed with commands
        self._lock = threading.Lock()
        self._running = 0
        self._retired = False

    @property
    def host_key(self) -> str:
        return self.connection.host_key

    def run(self, argv: list[str], stdin: bytes = b"", *, timeout: float,
            secrets: Iterable[str] = (), preamble: bytes = b"", ready: bytes | None = None,
            binary: bool = False) -> Completed:
        """`Connection.run`, waiting (within `timeout`) for one of the session's channels."""
        if not self._channels.acquire(timeout=timeout):
            raise SshError("timeout", f"{describe(self.connection.asset)}: no free SSH channel "
                                      f"within {timeout:g} s")
        with self._lock:
            self._running += 1
        try:
            return self.connection.run(argv, stdin, timeout=timeout, secrets=secrets,
                                       preamble=preamble, ready=ready, binary=binary)
        finally:
            self._channels.release()
            self.last_used = time.monotonic()
            with self._lock:
                self._running -= 1
                close = self._retired and not self._running
            if close:
                self.connection.close()

    def remember(self, name: str, compute: Callable[[], T]) -> T:
        """A fact about this login (e.g. how it becomes root), computed once per session."""
        with self._facts_lock:
            if name not in self._facts:
                self._facts[name] = compute()
            return self._facts[name]

    def retire(self) -> None:
        """Close once the commands running on it have ended (see `SessionPool.retire`)."""
        with self._lock:
            self._retired = True
            close = not self._running
        if close:
            self.connection.close()


class SessionPool:
    """Thread-safe pool of privileged sessions, one per (address, port, login, host-key rule,
    login secret fingerprint). Per-host locks make concurrent rotations on a host share a login."""

    def __init__(self, *, idle_seconds: float = IDLE_SECONDS,
                 channels: int = CHANNELS_PER_SESSION, failure_memory: float = FAILURE_MEMORY):
        self.idle_seconds = idle_seconds
        self.channels = channels
        self._prints = Fingerprints()
        self._failures = FailureMemory(LOCKOUT_RISKS, seconds=failure_memory)
        self._lock = threading.Lock()
        self._sessions: dict[tuple, Session] = {}
        self._host_locks: dict[tuple, threading.Lock] = {}   # bounded by the zone's inventory

    def session(self, asset: AssetTarget, username: str, secrets: list[str], timeout: float,
                secret_type: str = "password") -> tuple[Session, int]:
        """A live session as `username` and the index of the secret it logged in with: a pooled
        one if any of `secrets` has one, else a new login trying `secrets` in order."""
        host = (asset.address, asset.port, username, asset.host_key, asset.trust_first_use,
                secret_type)
        prints = [self._prints.of(secret) for secret in secrets]
        with self._lock:
            host_lock = self._host_locks.setdefault(host, threading.Lock())
        with host_lock:
            with self._lock:
                for index, print_ in enumerate(prints):
                    session = self._sessions.get(host + (print_,))
                    if session is not None and session.connection.alive():
                        session.last_used = time.monotonic()
                        return session, index
            connection, index = self._failures.log_in(
                host + tuple(prints),
                lambda: log_in(asset, username, secrets, secret_type, timeout))
            session = Session(connection, self.channels)
            with self._lock:
                self._sessions[host + (prints[index],)] = session
            return session, index

    def discard(self, session: Session) -> None:
        """Forget and close a session that failed (the next rotation logs in afresh)."""
        self._forget(session)
        session.connection.close()

    def retire(self, session: Session) -> None:
        """Forget a session whose login secret was just rotated: it is no longer the secret
        it is keyed by, and sudo must not be fed the old one. Rotations still running on it
        finish first; then it closes."""
        self._forget(session)
        session.retire()

    def _forget(self, session: Session) -> None:
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s is session]:
                del self._sessions[key]

    def prune(self) -> None:
        """Close dead sessions and those idle for `idle_seconds`; forget old failures."""
        now = time.monotonic()
        with self._lock:
            stale = {key: s for key, s in self._sessions.items()
                     if not s.connection.alive() or now - s.last_used >= self.idle_seconds}
            for key in stale:
                del self._sessions[key]
        self._failures.prune()
        for session in stale.values():
            session.connection.close()

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.connection.close()


def log_in(asset: AssetTarget, username: str, secrets: list[str], secret_type: str,
            timeout: float) -> tuple[ssh.Connection, int]:
    """Connect and try each secret in order, reconnecting if the host hangs up between tries."""
    connection = None
    try:
        for index, secret in enumerate(secrets):
            if connection is None or not connection.alive():
                if connection is not None:
                    connection.close()
                connection = ssh.connect(asset, timeout)
            if connection.login(username, secret, secret_type):
                return connection, index
    except BaseException:
        if connection is not None:
            connection.close()
        raise
    connection.close()
    kind = "password" if secret_type == "password" else "key"
    tried = f"its {kind} was" if len(secrets) == 1 else f"all {len(secrets)} known {kind}s were"
    raise SshError("login_failed", f"{describe(asset)}: cannot log in as {username}: "
                                   f"{tried} rejected")
