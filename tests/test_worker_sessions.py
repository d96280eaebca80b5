"""worker.sessions against a real sshd: one privileged login serves many rotations on a host,
channels are capped, dead and idle sessions are replaced, failed logins are not hammered."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.messages import AssetTarget
from worker import ssh
from worker.sessions import SessionPool
from worker.ssh import SshError

OPS = ("ops", "ops-pw-sessions")


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, sudo_user=OPS)
    yield host
    host.close()


@pytest.fixture
def asset(host):
    return AssetTarget(name="web-1", address=host.address, port=host.port, platform="linux",
                       host_key=host.host_public_key)


@pytest.fixture
def handshakes(monkeypatch) -> list[str]:
    """The address of every SSH connection (key exchange) the pool makes."""
    made, connect = [], ssh.connect

    def counting(asset, timeout):
        made.append(asset.address)
        return connect(asset, timeout)

    monkeypatch.setattr(ssh, "connect", counting)
    return made


def logins(host, outcome: str = "Accepted", at_least: int = 0) -> int:
    """How many password logins as ops sshd has logged with this outcome (waiting up to 2 s for
    `at_least` of them: sshd writes its log a moment after it answers)."""
    deadline = time.monotonic() + 2
    while True:
        count = host.log_path.read_text().count(f"{outcome} password for ops ")
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def test_one_login_serves_concurrent_rotations_on_a_host(host, asset, handshakes):
    pool = SessionPool()
    before = logins(host)
    with ThreadPoolExecutor(max_workers=8) as threads:
        got = list(threads.map(lambda _: pool.session(asset, "ops", ["stale", OPS[1]], 5), range(16)))
    sessions = {id(session) for session, _ in got}
    assert len(sessions) == 1 and {index for _, index in got} == {1}
    session = got[0][0]
    with ThreadPoolExecutor(max_workers=8) as threads:   # many channels over the one transport
        outputs = list(threads.map(lambda n: session.run(["echo", str(n)], timeout=5).stdout,
                                   range(24)))
    assert outputs == [f"{n}\n" for n in range(24)]
    assert handshakes == [asset.address]
    assert logins(host, at_least=before + 1) == before + 1
    pool.close()
    assert not session.connection.alive()


def test_channels_per_session_are_capped(asset):
    pool = SessionPool(channels=2)
    session, _ = pool.session(asset, "ops", [OPS[1]], 5)
    running, peak, lock = 0, 0, threading.Lock()
    original = session.connection.run

    def counting_run(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    session.connection.run = counting_run
    with ThreadPoolExecutor(max_workers=6) as threads:
        list(threads.map(lambda _: session.run(["sleep", "0.3"], timeout=5), range(6)))
    assert peak == 2
    pool.close()


def test_dead_and_idle_sessions_are_replaced(asset, handshakes):
    pool = SessionPool(idle_seconds=0.3)
    first, _ = pool.session(asset, "ops", [OPS[1]], 5)
    first.connection.close()                     # as if the host had dropped the connection
    second, _ = pool.session(asset, "ops", [OPS[1]], 5)
    assert second is not first and len(handshakes) == 2
    assert pool.session(asset, "ops", [OPS[1]], 5)[0] is second
    time.sleep(0.4)
    pool.prune()
    assert not second.connection.alive()
    third, _ = pool.session(asset, "ops", [OPS[1]], 5)
    assert third is not second and len(handshakes) == 3
    pool.discard(third)
    assert not third.connection.alive()
    pool.close()


def test_a_changed_login_secret_gets_its_own_session(host, asset):
    pool = SessionPool()
    old, index = pool.session(asset, "ops", [OPS[1]], 5)
    same, same_index = pool.session(asset, "ops", ["pending-one", OPS[1]], 5)
    assert same is old and (index, same_index) == (0, 1)
    key_text = repr(list(pool._sessions))
    assert OPS[1] not in key_text and asset.address in key_text   # keyed by a fingerprint only
    pool.close()


def test_a_rejected_login_is_remembered_not_retried(host, asset, handshakes):
    pool = SessionPool()
    before = logins(host, "Failed")
    for _ in range(3):
        with pytest.raises(SshError) as caught:
            pool.session(asset, "ops", ["wrong-1", "wrong-2"], 5)
        assert caught.value.code == "login_failed" and "web-1" in str(caught.value)
    assert len(handshakes) == 1
    assert logins(host, "Failed", at_least=before + 2) == before + 2   # each tried once, not 3x
    session, index = pool.session(asset, "ops", ["wrong-1", OPS[1]], 5)   # other secrets: tried
    assert index == 1
    pool.close()


def test_a_refused_connection_is_tried_again_at_once(asset, handshakes):
    """Nothing listens on this loopback port: the refusal is instant, so it is not remembered
    (a host that comes back is used by the next rotation, not 30 s later)."""
    closed = asset.model_copy(update={"address": "127.77.254.254", "port": 9})
    pool = SessionPool()
    for _ in range(2):
        with pytest.raises(SshError) as caught:
            pool.session(closed, "ops", ["any"], 5)
        assert caught.value.code == "unreachable" and "a moment ago" not in str(caught.value)
    assert len(handshakes) == 2
    pool.close()


def test_a_retired_session_closes_after_its_running_commands(asset):
    pool = SessionPool()
    session, _ = pool.session(asset, "ops", [OPS[1]], 5)
    with ThreadPoolExecutor(max_workers=1) as threads:
        running = threads.submit(session.run, ["sh", "-c", "sleep 0.5; echo done"], timeout=5)
        time.sleep(0.2)
        pool.retire(session)
        assert session.connection.alive()                   # still running a command
        assert running.result().stdout == "done\n"
    assert not session.connection.alive()
    assert pool.session(asset, "ops", [OPS[1]], 5)[0] is not session
    pool.close()
