"""How many commands a worker carries out at once: enough to hide the round trips to far hosts,
no more than buys throughput.

A rotation is mostly waiting: a few dozen round trips to its host. Hosts a fraction of a
millisecond away keep a handful of rotations busy; hosts 40 ms away need dozens in flight for
the same throughput. A fixed number is wrong for one or the other, so the limit follows what
rotations take, as TCP Vegas and Netflix's gradient limiter do. Once per window (about one
round of commands) it compares the window's average time with the quickest window's: within
TOLERANCE of it, the time is latency and the limit grows; slower, the time is queueing (on this
machine's CPU, on a host's shared session, on a slow host) and the limit shrinks in proportion.
It stays between a floor and the ceiling KEYTURN_WORKER_THREADS (the worker's threads): no host
gets more than a fixed worker of that setting would give it, and less when it answers slowly.
"""
from __future__ import annotations

import math
import threading
import time

TOLERANCE = 1.5           # a window this much slower than the quickest is still latency
MIN_GRADIENT = 0.5        # the limit is at most halved per window
PROBE_EVERY = 30          # windows between probes of the quickest time (see `_learn`)
GROWTH = 4                # per window until queueing first shows (a run may be a few windows)


class InFlightLimit:
    """A gate for commands: `enter` waits until fewer than `limit` are in flight, `leave`
    learns from how long the command took."""

    def __init__(self, ceiling: int, initial: int = 8, floor: int = 2, clock=time.monotonic):
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self._limit = float(min(max(initial, self.floor), ceiling))
        self._clock = clock
        self._quickest: float | None = None   # the quickest window's average since the probe
        self._window: list[float] = []         # the times of the commands of this window
        self._windows = 0
        self._growing = True                   # quadrupling each window until queueing shows
        self._probe: tuple[float, float] | None = None   # (its start, the limit to go back to)
        self._in_flight = 0
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> float:
        """Wait until fewer than `limit` commands are in flight, then count one in; returns its
        start, for `leave`."""
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
        return self._clock()

    def leave(self, started: float) -> None:
        """The command that entered at `started` has ended: learn from how long it took."""
        seconds = self._clock() - started
        with self._changed:
            self._in_flight -= 1
            if self._probe is None or started >= self._probe[0]:
                self._learn(seconds)
            self._changed.notify_all()

    def _learn(self, seconds: float) -> None:
        """One command took `seconds`. Once per window (as many commands as the limit, about one
        round of them), compare their average with the quickest window's and move the limit:
        quadrupled while no queueing has shown (a run may be a few windows long: the limit must
        find its level at once), then up by its square root, down in proportion to the slowdown.
        Every PROBE_EVERY windows one window of commands started at the floor (those still in
        flight at the higher limit do not count) sets the quickest time afresh, so a workload
        that got slower (farther hosts) is not taken for queueing for ever."""
        self._window.append(seconds)
        if len(self._window) < self.limit:
            return
        average = sum(self._window) / len(self._window)
        self._window = []
        self._windows += 1
        if self._probe is not None:
            self._quickest, self._limit, self._probe = average, self._probe[1], None
            return
        if self._quickest is None or average < self._quickest:
            self._quickest = average
        if self._windows % PROBE_EVERY == 0:
            self._probe, self._limit = (self._clock(), self._limit), float(self.floor)
            return
        gradient = 1.0 if average <= 0 else \
            max(MIN_GRADIENT, min(1.0, TOLERANCE * self._quickest / average))
        self._growing = self._growing and gradient == 1.0
        grown = GROWTH * self._limit if self._growing else \
            self._limit * gradient + math.sqrt(self._limit)
        self._limit = max(self.floor, min(self.ceiling, grown))
