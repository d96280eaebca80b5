"""A plan's rate limits as the worker honours them (`RotateCommand.limits`): at most so many
rotations at once on one asset and in one zone, and at most so many new SSH connections per
second in a zone. The dispatcher holds the same limits across all workers; this holds
whatever reached this worker anyway (a redelivery, a second controller's dispatch). A command
waits for its slot at most until its validity ends; then it runs and finds itself expired,
changing nothing."""
from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from shared.messages import RotateCommand


class ConnectRate:
    """New connections at most `rate` per second (a token bucket holding one second's worth)."""

    def __init__(self, rate: float):
        self.rate = rate
        self._tokens = max(1.0, rate)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> None:
        """Wait for a token, then spend it."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(max(1.0, self.rate),
                                   self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            time.sleep(wait)


_connect_rate: ContextVar[ConnectRate | None] = ContextVar("connect_rate", default=None)


def before_connect() -> None:
    """Called before every new SSH connection: waits under the current command's zone rate."""
    rate = _connect_rate.get()
    if rate is not None:
        rate.take()


class Limits:
    """One worker's view of the limits of the commands it runs."""

    def __init__(self):
        self._running: Counter = Counter()
        self._changed = threading.Condition()
        self._rates: dict[str, ConnectRate] = {}

    @contextmanager
    def slot(self, command: RotateCommand) -> Iterator[None]:
        """Run the body once the command's asset and zone have room for it."""
        limits = command.limits
        if limits is None:
            yield
            return
        wanted = [(key, most) for key, most in (
            (("asset", command.asset.address, command.asset.port), limits.asset_in_flight),
            (("zone", command.zone), limits.zone_in_flight)) if most]
        with self._changed:
            while (any(self._running[key] >= most for key, most in wanted)
                   and time.time() < command.not_after):
                self._changed.wait(timeout=max(0.01, min(1.0, command.not_after - time.time())))
            for key, _ in wanted:
                self._running[key] += 1
            rate = self._rate(command.zone, limits.connects_per_second)
        token = _connect_rate.set(rate)
        try:
            yield
        finally:
            _connect_rate.reset(token)
            with self._changed:
                for key, _ in wanted:
                    self._running[key] -= 1
                self._changed.notify_all()

    def _rate(self, zone: str, rate: float | None) -> ConnectRate | None:
        if rate is None:
            return None
        if zone not in self._rates or self._rates[zone].rate != rate:
            self._rates[zone] = ConnectRate(rate)
        return self._rates[zone]
