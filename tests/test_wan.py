"""The slow network of the WAN benchmark (tests.wan): a host behind it is a round trip away
from the client namespace, and no namespace of it has a default route."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.sshd_hosts import SshHostFarm
from tests.wan import Wan, in_netns

ONE_WAY_MS = 30


@pytest.fixture(scope="module")
def slow_host(tmp_path_factory):
    base = tmp_path_factory.mktemp("wan")
    wan = Wan(base / "wan", ONE_WAY_MS, 1)
    farm = SshHostFarm(base / "hosts", wan)
    try:
        yield wan, farm.start_hosts(1, users={"alice": "alice-pw-1"})[0]
    finally:
        farm.close()
        wan.close()


def connect_seconds(address: str) -> float:
    started = time.perf_counter()
    with socket.create_connection((address, 22), timeout=5):
        return time.perf_counter() - started


def test_a_host_is_a_round_trip_away_from_the_client_namespace(slow_host):
    wan, host = slow_host
    assert host.address.startswith("10.77.")
    assert host.password_works("alice", "alice-pw-1")          # over the delay line
    assert not host.password_works("alice", "wrong")
    rtt = min(in_netns(wan.client_netns, connect_seconds, host.address) for _ in range(3))
    assert 2 * ONE_WAY_MS / 1000 * 0.9 <= rtt < 2 * ONE_WAY_MS / 1000 + 0.05


def test_no_default_route_in_the_namespaces(slow_host):
    wan, host = slow_host
    for netns in (wan.client_netns, host._netns):
        routes = subprocess.run(["nsenter", f"--net={netns}", "ip", "route"], check=True,
                                capture_output=True, text=True).stdout
        assert routes.strip() and "default" not in routes


def test_a_forwarded_port_reaches_the_machines_loopback(slow_host):
    wan, _ = slow_host
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(5)
        port = server.getsockname()[1]
        wan.forward(port)
        with in_netns(wan.client_netns, socket.create_connection, ("127.0.0.1", port), 5) as peer:
            peer.sendall(b"ping")
            received = []
            while b"ping" not in received:      # the forwarder's own readiness probe: empty
                accepted, _ = server.accept()
                with accepted:
                    accepted.settimeout(5)
                    received.append(accepted.recv(16))
