"""The worker's in-flight limit (worker.concurrency): it grows while commands take as long as
usual (far hosts: latency to hide), shrinks when they take longer the more run at once
(queueing), and never lets more than the limit through."""
from __future__ import annotations

import statistics
import threading
import time

from worker.concurrency import InFlightLimit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_rounds(limit: InFlightLimit, clock: Clock, seconds_for, rounds: int) -> list[int]:
    """Closed loop: each round, as many commands as the limit lets in run together and take
    `seconds_for(how many)`; returns the limit after each round."""
    seen = []
    for _ in range(rounds):
        started = [limit.enter() for _ in range(limit.limit)]
        clock.now += seconds_for(len(started))
        for start in started:
            limit.leave(start)
        seen.append(limit.limit)
    return seen


def test_far_hosts_grow_the_limit_to_the_ceiling():
    clock = Clock()
    limit = InFlightLimit(64, clock=clock)
    assert limit.limit == 8                          # the old fixed number, to start with
    seen = run_rounds(limit, clock, lambda n: 1.5, 20)    # 40 ms hosts: each takes 1.5 s
    assert seen[:2] == [32, 64]                      # a run may be short: it gets there at once
    assert seen == sorted(seen)


def test_queueing_keeps_the_limit_near_what_the_capacity_serves():
    """A machine that does 6 rotations at once: more in flight only makes each take longer."""
    clock = Clock()
    limit = InFlightLimit(64, clock=clock)
    seen = run_rounds(limit, clock, lambda n: 0.1 * max(1.0, n / 6), 200)
    assert max(seen) <= 32 and max(seen[5:]) <= 24, seen
    assert statistics.median(seen) >= 6            # the capacity is used, though


def test_a_slower_workload_is_not_taken_for_queueing_for_ever():
    """Near hosts, then far ones: the probe at the floor finds the new usual time."""
    clock = Clock()
    limit = InFlightLimit(64, clock=clock)
    run_rounds(limit, clock, lambda n: 0.1 * max(1.0, n / 6), 50)
    seen = run_rounds(limit, clock, lambda n: 1.5, 40)
    assert min(seen[:9]) <= 4                      # taken for queueing at first
    assert seen[25:39] == [64] * 14                # until the probe (then one probe window)


def test_latency_that_rises_later_brings_the_limit_down():
    clock = Clock()
    limit = InFlightLimit(64, clock=clock)
    run_rounds(limit, clock, lambda n: 1.0, 20)
    assert limit.limit == 64
    seen = run_rounds(limit, clock, lambda n: 1.0 * max(1.0, n / 8), 60)
    assert seen[-1] < 32


def test_never_more_in_flight_than_the_limit():
    limit = InFlightLimit(3, initial=3)
    most = 0
    lock = threading.Lock()

    def command():
        nonlocal most
        started = limit.enter()
        with lock:
            most = max(most, limit.in_flight)
        time.sleep(0.01)
        limit.leave(started)

    threads = [threading.Thread(target=command) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert most == 3 and limit.in_flight == 0


def test_a_small_setting_is_the_limit():
    limit = InFlightLimit(1)
    assert (limit.floor, limit.limit) == (1, 1)
