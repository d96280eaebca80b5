"""A slow network for the sshd test hosts (`tests.sshd_hosts`): each host in its own network
namespace, joined to one *client* namespace (where a benchmark runs the worker, the reference
script and Ansible) by a delay line.

This machine's kernel has no netem, so the delay line is a small process (`python -m tests.wan`)
that holds a TUN device in every namespace and moves each IP packet from one to the other after
`one_way_ms` (plus or minus `jitter_ms`, never reordering a direction). Addresses are in
10.77.0.0/16 and exist only in namespaces made here; there is no default route anywhere. The
client namespace reaches a service of the machine's loopback (RabbitMQ) only through `forward`:
socat listening on the client namespace's 127.0.0.1, relaying over a Unix socket.

Each namespace's holder (and the delay line) ends when the pipe on its stdin closes: on
`close()`, and when the test process dies in any way.
"""
from __future__ import annotations

import ctypes
import fcntl
import heapq
import os
import random
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

CLIENT_ADDRESS = "10.77.0.1"
NETWORK = "10.77.0.0/16"
DEVICE = "wan0"
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000

# `sh -c CLIENT_SCRIPT`, run inside a fresh network namespace.
CLIENT_SCRIPT = f"""
set -e
ip link set lo up
ip tuntap add dev {DEVICE} mode tun
ip addr add {CLIENT_ADDRESS}/32 dev {DEVICE}
ip link set {DEVICE} up
ip route add {NETWORK} dev {DEVICE}
echo ready
read -r _ || true
"""


def host_setup(address: str) -> str:
    """`ip -batch` lines for a host's namespace: its address on the TUN, a route to the client
    alone."""
    return (f"link set lo up\ntuntap add dev {DEVICE} mode tun\n"
            f"addr add {address}/32 dev {DEVICE}\nlink set {DEVICE} up\n"
            f"route add {CLIENT_ADDRESS}/32 dev {DEVICE}\n")


def enter(netns: str) -> None:
    """Move the calling thread into the network namespace at `netns` (a /proc/PID/ns/net)."""
    fd = os.open(netns, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)


def in_netns(netns: str, function, *args, **kwargs):
    """`function(*args)` in a thread inside `netns`; threads and processes it starts are in that
    namespace too. Returns its value or raises its exception."""
    outcome: dict = {}

    def run():
        try:
            enter(netns)
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:       # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="in-netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Wan:
    """The client namespace and the delay line; hosts `attach` their namespaces to it."""

    def __init__(self, directory: Path, one_way_ms: float = 20.0, jitter_ms: float = 1.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.one_way_ms = one_way_ms
        self._lock = threading.Lock()
        self._next_host = 2
        self._forwarders: list[subprocess.Popen] = []
        self._client = self._delay = None
        try:
            self._client = subprocess.Popen(["unshare", "--net", "sh", "-c", CLIENT_SCRIPT],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            if self._client.stdout.readline() != b"ready\n":
                raise RuntimeError("the client network namespace could not be set up")
            self.client_netns = f"/proc/{self._client.pid}/ns/net"
            self._delay = subprocess.Popen(
                [sys.executable, "-m", "tests.wan", str(one_way_ms), str(jitter_ms)],
                cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE)
            self._order(f"client {self.client_netns}")
        except BaseException:
            self.close()
            raise

    @property
    def enter_argv(self) -> list[str]:
        """A command prefix that runs a program in the client namespace."""
        return ["nsenter", f"--net={self.client_netns}", "--"]

    def new_address(self) -> str:
        with self._lock:
            n, self._next_host = self._next_host, self._next_host + 1
        if n > 0xFFFE:
            raise RuntimeError(f"no address left in {NETWORK}")
        return f"10.77.{n >> 8}.{n & 0xFF}"

    def attach(self, address: str, netns: str) -> None:
        """Give the host namespace at `netns` its address and plug it into the delay line."""
        subprocess.run(["nsenter", f"--net={netns}", "--", "ip", "-batch", "-"],
                       input=host_setup(address).encode(), check=True, capture_output=True,
                       timeout=30)
        self._order(f"host {address} {netns}")

    def forward(self, port: int) -> None:
        """Serve the machine's 127.0.0.1:`port` on the client namespace's 127.0.0.1:`port`."""
        if shutil.which("socat") is None:
            raise RuntimeError("the WAN needs socat (apt-get install -y socat)")
        path = self.directory / f"forward-{port}.sock"
        self._start_forwarder(["socat", f"UNIX-LISTEN:{path},fork,mode=600",
                               f"TCP:127.0.0.1:{port}"], path.exists)
        self._start_forwarder([*self.enter_argv, "socat",
                               f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                               f"UNIX-CONNECT:{path}"], lambda: self._listens(port))

    def _start_forwarder(self, argv: list[str], ready) -> None:
        self._forwarders.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"socat did not start: {' '.join(argv)}")
            time.sleep(0.02)

    def _listens(self, port: int) -> bool:
        def probe():
            with socket.socket() as conn:
                return conn.connect_ex(("127.0.0.1", port)) == 0
        return in_netns(self.client_netns, probe)

    def _order(self, line: str) -> None:
        with self._lock:
            self._delay.stdin.write(line.encode() + b"\n")
            self._delay.stdin.flush()
            if self._delay.stdout.readline() != b"ok\n":
                raise RuntimeError(f"the delay line refused: {line.split()[0]}")

    def close(self) -> None:
        """Stop the forwarders, the delay line and the client namespace; idempotent."""
        for process in self._forwarders:
            process.terminate()
        for process in self._forwarders:
            process.wait(timeout=10)
        self._forwarders = []
        for process in (self._delay, self._client):
            if process is not None and process.poll() is None:
                process.stdin.close()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._delay = self._client = None


# ---- the delay line (its own process: no GIL shared with what it measures) --------------------

def open_tun(netns: str) -> int:
    """The TUN device DEVICE of the namespace at `netns`, opened non-blocking."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(netns)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        return fd
    finally:
        if ctypes.CDLL(None, use_errno=True).setns(own, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(own)


def delay_line(one_way: float, jitter: float) -> None:
    """Orders on stdin (`client NETNS`, `host ADDRESS NETNS`; answered `ok`), packets between the
    client's TUN and the hosts' after the delay; ends when stdin closes."""
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    client = None
    hosts: dict[bytes, int] = {}       # host address (4 bytes) -> its TUN
    due: list = []                     # (when, sequence, out fd, packet)
    last: dict[int, float] = {}        # out fd -> when its last packet leaves (no reordering)
    sequence = 0
    pending = b""
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        for key, _ in selector.select(timeout):
            fd = key.fd
            if fd == sys.stdin.fileno():
                chunk = os.read(fd, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    words = line.decode().split()
                    tun = open_tun(words[-1])
                    selector.register(tun, selectors.EVENT_READ)
                    if words[0] == "client":
                        client = tun
                    else:
                        hosts[bytes(map(int, words[1].split(".")))] = tun
                    sys.stdout.write("ok\n")
                    sys.stdout.flush()
                continue
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                out = hosts.get(packet[16:20]) if fd == client else client
                if out is None or len(packet) < 20:
                    continue
                when = max(time.monotonic() + one_way + random.uniform(-jitter, jitter),
                           last.get(out, 0.0))
                last[out] = when
                sequence += 1
                heapq.heappush(due, (when, sequence, out, packet))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, out, packet = heapq.heappop(due)
            try:
                os.write(out, packet)
            except OSError:
                pass            # a full or gone device drops the packet, as a wire would


if __name__ == "__main__":
    delay_line(float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000)
