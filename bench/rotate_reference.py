"""The reference for `bench.rotate`: the least SSH work that rotates a password and proves it,
in a minimal paramiko script, with keyturn's parallelism and host-key pinning.

Per host, one privileged session (logged in once, reused by every account on the host, several
channels at a time); per account, one channel running `sudo -n chpasswd` with `user:password` on
stdin, then a fresh connection and login as the account with its new password. `threads`
accounts are in flight at once, taken in the given order (keyturn's worker takes its messages
in record order, host by host, the same way). No probes, no result messages, no database.
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import paramiko


class Target(NamedTuple):
    address: str
    host_key: str          # "ssh-ed25519 AAAA...": refused if the host presents another
    login: str             # the privileged account (a NOPASSWD sudoer)
    login_password: str
    username: str
    new_password: str


def connect(address: str, host_key: str, timeout: float) -> paramiko.Transport:
    """A transport whose host key matches the pin (checked before any password is sent)."""
    sock = socket.create_connection((address, 22), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as keyturn: no Nagle stalls
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
    transport.start_client(timeout=timeout)
    key = transport.get_remote_server_key()
    if f"{key.get_name()} {key.get_base64()}" != host_key:
        transport.close()
        raise RuntimeError(f"{address}: host key mismatch")
    return transport


def login_works(address: str, host_key: str, username: str, password: str,
                timeout: float) -> bool:
    transport = connect(address, host_key, timeout)
    try:
        transport.auth_password(username, password)
        return transport.is_authenticated()
    except paramiko.AuthenticationException:
        return False
    finally:
        transport.close()


class Sessions:
    """One privileged transport per host, opened by the first account that needs it."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._transports: dict[str, paramiko.Transport] = {}

    def get(self, target: Target) -> paramiko.Transport:
        with self._lock:
            host_lock = self._host_locks.setdefault(target.address, threading.Lock())
        with host_lock:
            transport = self._transports.get(target.address)
            if transport is None or not transport.is_active():
                transport = connect(target.address, target.host_key, self.timeout)
                transport.auth_password(target.login, target.login_password)
                self._transports[target.address] = transport
            return transport

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


def rotate_one(sessions: Sessions, target: Target, timeout: float) -> bool:
    """Change the password through the host's shared session, then log in with it afresh."""
    channel = sessions.get(target).open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.exec_command("sudo -n chpasswd")
        channel.sendall(f"{target.username}:{target.new_password}\n".encode())
        channel.shutdown_write()
        while channel.recv(32768):
            pass
        if not channel.status_event.wait(timeout) or channel.exit_status != 0:
            return False
    finally:
        channel.close()
    return login_works(target.address, target.host_key, target.username, target.new_password,
                       timeout)


def rotate_all(targets: list[Target], threads: int, timeout: float = 15.0) -> tuple[float, int]:
    """Rotate and verify every target with `threads` in flight; (seconds, how many succeeded)."""
    sessions = Sessions(timeout)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            outcomes = list(pool.map(lambda t: rotate_one(sessions, t, timeout), targets))
        return time.perf_counter() - started, sum(outcomes)
    finally:
        sessions.close()
