"""The worker's side of a plan's limits (`worker.limits`): rotations on one asset and in one
zone never run beyond their limit at once, whatever reached the worker, and new connections
in a zone keep to their rate."""
from __future__ import annotations

import threading
import time

from shared.messages import AssetTarget, RotateCommand, RotationLimits
from worker.limits import Limits, before_connect


def command(record_id: int, address: str, **limits) -> RotateCommand:
    return RotateCommand(
        record_id=record_id, attempt=1, zone="dmz",
        asset=AssetTarget(name=f"h-{address}", address=address, port=22, platform="linux"),
        login_username="ops", login_secrets=["pw"], username="alice", new_secret="n",
        old_secret="o", not_after=time.time() + 60,
        limits=RotationLimits(**limits) if limits else None)


def most_at_once(limits: Limits, commands: list[RotateCommand]) -> dict[str, int]:
    """Run every command's slot on its own thread for a moment; the most seen per address."""
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    lock = threading.Lock()

    def rotate(c):
        with limits.slot(c):
            with lock:
                running[c.asset.address] = running.get(c.asset.address, 0) + 1
                most[c.asset.address] = max(most.get(c.asset.address, 0),
                                            running[c.asset.address])
            time.sleep(0.05)
            with lock:
                running[c.asset.address] -= 1
    threads = [threading.Thread(target=rotate, args=(c,)) for c in commands]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most


def test_an_asset_limit_holds_on_the_worker():
    commands = [command(i, "10.0.0.1" if i % 2 else "10.0.0.2", asset_in_flight=1)
                for i in range(1, 9)]
    assert most_at_once(Limits(), commands) == {"10.0.0.1": 1, "10.0.0.2": 1}


def test_a_zone_limit_holds_across_its_assets():
    limits, seen, lock = Limits(), [0, 0], threading.Lock()
    commands = [command(i, f"10.0.0.{i}", zone_in_flight=2) for i in range(1, 7)]

    def rotate(c):
        with limits.slot(c):
            with lock:
                seen[0] += 1
                seen[1] = max(seen)
            time.sleep(0.05)
            with lock:
                seen[0] -= 1
    threads = [threading.Thread(target=rotate, args=(c,)) for c in commands]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen[1] == 2


def test_without_limits_commands_run_together():
    commands = [command(i, "10.0.0.1") for i in range(1, 5)]
    assert most_at_once(Limits(), commands)["10.0.0.1"] > 1     # the check can see overlap


def test_new_connections_keep_to_the_zone_rate():
    limits = Limits()
    started = time.monotonic()
    with limits.slot(command(1, "10.0.0.1", connects_per_second=20)):
        for _ in range(30):         # a second's worth at once, then one every 50 ms
            before_connect()
    assert 0.45 < time.monotonic() - started < 1.5
    started = time.monotonic()
    for _ in range(30):
        before_connect()            # outside a rate-limited command: no wait
    assert time.monotonic() - started < 0.1
