"""Real keyturn processes for end-to-end tests: started with the `keyturn` command, each with a
log file, stopped (or killed) by the test and always cleaned up; and the waits and loopback
ports the tests' own servers share."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYTURN = [sys.executable, "-m", "shared.cli"]


class KeyturnProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path,
                 command: list[str] = KEYTURN):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(command + args, env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then SIGKILL if it does not end in time; returns the exit status."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        """kill -9: the process gets no chance to clean up or acknowledge anything."""
        self.popen.kill()
        self.popen.wait()
        self._log.close()


class ProcessGroup:
    """Every process a test started; `close` stops them all, even after a failure."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[KeyturnProcess] = []

    def start(self, name: str, *args: str, command: list[str] = KEYTURN, **env) -> KeyturnProcess:
        """`command` (the main install's `keyturn` unless given) with `args`, more `env`."""
        process = KeyturnProcess(name, list(args), self.env | env, self.log_dir, command)
        self.processes.append(process)
        return process

    def run(self, *args: str, input: str | None = None, timeout: float = 300,
            **env) -> subprocess.CompletedProcess:
        """Run a keyturn command to completion (the CLI as an operator would)."""
        return subprocess.run(KEYTURN + list(args), env=self.env | env, input=input, text=True,
                              capture_output=True, timeout=timeout)

    def close(self, grace: float = 30) -> None:
        """SIGTERM to all at once, then SIGKILL to whatever is still running after `grace`."""
        running = [p for p in self.processes if p.running()]
        for process in running:
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            process.stop(timeout=max(0.1, deadline - time.monotonic()))


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def keyturn_env(settings, broker_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    env.update(KEYTURN_DATA_DIR=str(settings.data_dir),
               KEYTURN_DATABASE_URL=settings.effective_database_url,
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if broker_url:
        env["KEYTURN_BROKER_URL"] = broker_url
    return env


def free_port() -> int:
    """A loopback port nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ADDRESS_LOCK_DIR = Path(tempfile.gettempdir()) / "keyturn-test-addresses"


def _ports_free(address: str, ports: tuple[int, ...]) -> bool:
    """Whether nothing listens on these ports of the address, so a server can bind them."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def claim_address(prefix: str, ports: tuple[int, ...]) -> tuple[str, int]:
    """An unused loopback address `prefix.x.y` whose fixed ports are free, and the locked file
    descriptor that keeps every other test process off it until it is closed (parallel test
    workers, a second run on the machine): servers that listen on their protocol's own port
    (sshd on 22, a DC on 389/636) each get an address of their own."""
    ADDRESS_LOCK_DIR.mkdir(exist_ok=True)
    for n in range(2, 0xFFFF):
        address = f"{prefix}.{n >> 8}.{n & 0xFF}"
        fd = os.open(ADDRESS_LOCK_DIR / address, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _ports_free(address, ports):
                return address, fd
        except BlockingIOError:
            pass
        os.close(fd)
    raise RuntimeError(f"no free address left in {prefix}.0.0/16")
