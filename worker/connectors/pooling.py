"""What the connectors' pools of privileged logins share: keys that name a login secret only by a
salted fingerprint, idle connections kept per key between commands, and the memory of a login
that was refused or slow to fail."""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from typing import Callable, Collection, Generic, TypeVar

from worker.errors import TargetError

IDLE_SECONDS = 60.0
FAILURE_MEMORY = 30.0           # a refused or slow login is not tried again so soon
SLOW_FAILURE = 1.0              # seconds: worth not waiting for twice
C = TypeVar("C")
T = TypeVar("T")


class Fingerprints:
    """HMAC-SHA256 of a secret under a salt of this object's own, so a pool's keys never hold a
    secret, nor a plain hash that a list of guesses could be matched against."""

    def __init__(self):
        self._salt = os.urandom(32)

    def of(self, secret: str) -> str:
        return hmac.new(self._salt, secret.encode(), hashlib.sha256).hexdigest()


class IdlePool(Generic[C]):
    """Idle connections per key (a place plus the login secret's fingerprint), each serving one
    command at a time: `take` hands one out, `give_back` keeps it (at most `per_key` under a
    key, if given) and `prune` closes those idle for `idle_seconds`. `close_one` is how the
    connector closes a connection. Thread-safe."""

    def __init__(self, close_one: Callable[[C], None], *, idle_seconds: float = IDLE_SECONDS,
                 per_key: int | None = None):
        self.idle_seconds = idle_seconds
        self.per_key = per_key
        self._close_one = close_one
        self._prints = Fingerprints()
        self._lock = threading.Lock()
        self._idle: dict[tuple, list[tuple[float, C]]] = {}

    def keys(self, place: tuple, secrets: list[str]) -> list[tuple]:
        """The key of a login at `place` with each of `secrets`, in order."""
        return [place + (self._prints.of(secret),) for secret in secrets]

    def take(self, keys: list[tuple], alive: Callable[[C], bool] | None = None
             ) -> tuple[C, int] | None:
        """An idle connection under the earliest of `keys` that has one, and that key's index,
        or None. With `alive`, one it refuses is closed and another tried; without, the caller
        finds out on first use."""
        while True:
            with self._lock:
                found = next(((index, idle) for index, key in enumerate(keys)
                              if (idle := self._idle.get(key))), None)
                if found is None:
                    return None
                index, idle = found
                _, conn = idle.pop()
            if alive is None or alive(conn):
                return conn, index
            self._close_one(conn)

    def give_back(self, key: tuple, conn: C) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if self.per_key is None or len(idle) < self.per_key:
                idle.append((time.monotonic(), conn))
                return
        self._close_one(conn)

    def prune(self) -> None:
        """Close the connections idle for `idle_seconds`."""
        now = time.monotonic()
        stale = []
        with self._lock:
            for key, idle in list(self._idle.items()):
                stale += [conn for since, conn in idle if now - since >= self.idle_seconds]
                idle[:] = [(since, conn) for since, conn in idle if now - since < self.idle_seconds]
                if not idle:
                    del self._idle[key]
        for conn in stale:
            self._close_one(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                self._close_one(conn)


class FailureMemory:
    """Logins that were refused (a code in `lockout_risks`: the target saw a wrong secret) or
    slow to fail, remembered for `seconds`, so a batch neither locks the privileged account out
    nor waits on a dead target for every account. An instant failure (connection refused) costs
    nothing to try again, so a target that comes back is used at once. Thread-safe."""

    def __init__(self, lockout_risks: Collection[str], *, seconds: float = FAILURE_MEMORY):
        self.lockout_risks = lockout_risks
        self.seconds = seconds
        self._lock = threading.Lock()
        self._failures: dict[tuple, tuple[float, TargetError]] = {}

    def log_in(self, key: tuple, log_in: Callable[[], T]) -> T:
        """`log_in()`, unless it failed under `key` (the place and every secret tried) a moment
        ago: then that failure again, of the same type, without trying."""
        with self._lock:
            failed = self._failures.get(key)
        if failed and time.monotonic() - failed[0] < self.seconds:
            raise type(failed[1])(failed[1].code, f"{failed[1]} (a moment ago; not retried for "
                                                  f"{self.seconds:g} s)")
        started = time.monotonic()
        try:
            return log_in()
        except TargetError as exc:
            if exc.code in self.lockout_risks or time.monotonic() - started >= SLOW_FAILURE:
                with self._lock:
                    self._failures[key] = (time.monotonic(), exc)
            raise

    def prune(self) -> None:
        """Forget the failures older than `seconds`."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, (at, _) in self._failures.items() if now - at >= self.seconds]:
                del self._failures[key]
