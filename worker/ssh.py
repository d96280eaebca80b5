"""SSH to assets with pinned host keys and hard deadlines (paramiko).

Every failure is an `SshError` whose code the controller stores and whose message is built only
from that code and host facts (name, address, user name), so no secret can ride along in an
exception. The host key is checked before any password leaves this process, and every wait
(connect, banner, key exchange, login, channel, command) has a limit, so a paused or half-dead
host can hold a worker thread only for a few timeouts, never forever. Output is read up to
`OUTPUT_LIMIT` bytes a stream, so a host cannot fill the worker's memory either.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import socket
import threading
import time
from typing import Iterable, NamedTuple

import paramiko

from worker.errors import TargetError, describe, scrub
from worker.limits import before_connect
from shared.messages import AssetTarget
from worker import sshkeys
from worker.metrics import SSH_STEPS

logger = logging.getLogger(__name__)
RSA_ALGORITHMS = ["rsa-sha2-512", "rsa-sha2-256"]   # how an `ssh-rsa` pin is negotiated
OUTPUT_LIMIT = 1024 * 1024   # bytes read from one output stream of a command, at most


class SshError(TargetError):
    """An SSH step failed. `command_sent` is True when a command had been sent and may have
    run, so its outcome is unknown (for a password change: the host may now have the new
    password)."""


class OutputTooLarge(Exception):
    """A command printed more than `OUTPUT_LIMIT` bytes (e.g. it read /dev/zero)."""


class Completed(NamedTuple):
    """A finished remote command; its output is already scrubbed of the secrets involved.
    `ready` is False when a command run with a ready line ended before printing it."""

    status: int
    stdout: str | bytes   # bytes when run with `binary`
    stderr: str
    ready: bool = True


class LoginCheck(NamedTuple):
    works: bool
    host_key: str


def fingerprint(key_line: str) -> str:
    """The SHA256 fingerprint OpenSSH shows for a public key line, for error messages."""
    try:
        blob = base64.b64decode(key_line.split()[1], validate=True)
    except (IndexError, ValueError):
        return "an unreadable key"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def connect(asset: AssetTarget, timeout: float) -> Connection:
    """An unauthenticated transport to `asset` whose host key matches the pin (or, when the
    asset allows it, is learned on first use). Refused before any password is sent otherwise."""
    where = describe(asset)
    before_connect()      # the plan's new-connections-per-second limit in this zone
    started = time.monotonic()
    try:
        sock = socket.create_connection((asset.address, asset.port), timeout=timeout)
    except socket.gaierror:
        raise SshError("unreachable", f"{where}: the address does not resolve") from None
    except TimeoutError:
        raise SshError("timeout", f"{where}: no TCP answer within {timeout:g} s") from None
    except OSError as exc:
        raise SshError("unreachable", f"{where}: {(exc.strerror or 'cannot connect').lower()}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # else ~40 ms per channel open
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = timeout
    transport.auth_timeout = transport.channel_timeout = timeout
    pinned = asset.host_key.split()[:2] if asset.host_key else None
    if pinned:
        _prefer_key_type(transport, pinned[0])
    try:
        transport.start_client(timeout=timeout)   # returns quietly on timeout: the key read raises
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise _handshake_error(exc, where, timeout, started) from None
    seen = f"{key.get_name()} {key.get_base64()}"
    if pinned is None and not asset.trust_first_use:
        transport.close()
        raise SshError("host_key_unknown", f"{where}: no host key is pinned and first-use trust is "
                                           f"off (it presents {fingerprint(seen)}); nothing was sent")
    if pinned is not None and seen.split() != pinned:
        transport.close()
        raise SshError("host_key_mismatch", f"{where}: the host key changed (pinned "
                                            f"{fingerprint(asset.host_key)}, presented "
                                            f"{fingerprint(seen)}); no password was sent")
    SSH_STEPS["connect"].observe(time.monotonic() - started)
    return Connection(transport, asset, seen)


def login_works(asset: AssetTarget, username: str, secret: str, timeout: float, *,
                secret_type: str = "password") -> LoginCheck:
    """Whether a fresh login (new transport, same host-key rules) as `username` succeeds."""
    with connect(asset, timeout) as connection:
        return LoginCheck(connection.login(username, secret, secret_type), connection.host_key)


def _prefer_key_type(transport: paramiko.Transport, key_type: str) -> None:
    """Ask for the pinned key's type first, so a host with several keys presents that one."""
    options = transport.get_security_options()
    wanted = [k for k in (RSA_ALGORITHMS if key_type == "ssh-rsa" else [key_type])
              if k in options.key_types]
    options.key_types = wanted + [k for k in options.key_types if k not in wanted]


def _handshake_error(exc: BaseException, where: str, timeout: float, started: float) -> SshError:
    if isinstance(exc.__context__, TimeoutError) or time.monotonic() - started >= timeout * 0.95:
        return SshError("timeout", f"{where}: no SSH handshake within {timeout:g} s")
    if isinstance(exc, paramiko.IncompatiblePeer):
        return SshError("unreachable", f"{where}: no SSH algorithm in common (a SHA-1-only host?)")
    return SshError("unreachable", f"{where}: the SSH handshake failed (the connection was closed)")


class Connection:
    """A transport to one asset whose host key has been checked; logs in, runs commands."""

    def __init__(self, transport: paramiko.Transport, asset: AssetTarget, host_key: str):
        self.asset = asset
        self.host_key = host_key
        self._transport = transport
        self._where = describe(asset)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def alive(self) -> bool:
        return self._transport.is_active()

    def close(self) -> None:
        self._transport.close()

    def login(self, username: str, secret: str, secret_type: str = "password") -> bool:
        """Password or private-key authentication; False when the host rejects the secret."""
        kind = "password" if secret_type == "password" else "key"
        started = time.monotonic()
        try:
            if kind == "password":
                further = self._transport.auth_password(username, secret)
            else:
                further = self._transport.auth_publickey(username, sshkeys.private_key(secret))
        except sshkeys.BadKey as exc:
            raise SshError("bad_secret", f"{self._where}: the key to log in as {username}: "
                                         f"{exc}") from None
        except paramiko.BadAuthenticationType:
            raise SshError("login_failed", f"{self._where}: the host does not accept {kind} "
                                           f"logins for {username}") from None
        except paramiko.AuthenticationException:
            if time.monotonic() - started >= self._transport.auth_timeout * 0.95:
                raise SshError("timeout", f"{self._where}: no answer to the login of {username} "
                                          f"within {self._transport.auth_timeout:g} s") from None
            return False
        except (paramiko.SSHException, EOFError, OSError):
            raise SshError("connection_lost", f"{self._where}: the connection ended during the "
                                              f"login of {username}") from None
        finally:
            SSH_STEPS["auth"].observe(time.monotonic() - started)
        if further:
            raise SshError("login_failed", f"{self._where}: {username} needs a second "
                                           f"authentication factor ({', '.join(further)})")
        return True

    def shell(self, timeout: float) -> paramiko.Channel:
        """An interactive shell on a terminal, for a device CLI that knows no other way in
        (`worker.dialogue`). A terminal echoes what is typed: read it only through a reader that
        masks secrets. Wide, so the device does not wrap (or redraw) long lines."""
        try:
            channel = self._transport.open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.get_pty(term="vt100", width=512, height=48)
            channel.invoke_shell()
        except (paramiko.SSHException, EOFError, OSError):
            raise SshError("connection_lost", f"{self._where}: cannot open an interactive "
                                              f"shell") from None
        return channel

    def run(self, argv: list[str], stdin: bytes = b"", *, timeout: float,
            secrets: Iterable[str] = (), preamble: bytes = b"", ready: bytes | None = None,
            binary: bool = False) -> Completed:
        """Run `argv` (quoted with shlex, no pty: nothing on stdin is echoed) with `stdin`, and
        wait for its exit status at most `timeout` seconds in all. Secrets go on stdin only.
        `binary`: stdout is the exact bytes, unscrubbed (a file that holds none of `secrets`).

        `preamble` is written first (a password for sudo or su). With `ready`, `stdin` is held
        back until the command prints that line, so it reaches the command and never the
        program that read the preamble; output up to that line is dropped, and a command that
        ends without printing it has `Completed.ready` False (it never ran)."""
        name = f"`{shlex.join(argv)}`"   # user names at most: never a secret
        try:
            channel = self._transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError):
            raise SshError("connection_lost", f"{self._where}: cannot open a channel to run "
                                              f"{name}") from None
        expired = threading.Event()

        def expire() -> None:   # the hard deadline: closing the channel ends every wait below
            expired.set()
            _close(channel)

        deadline = threading.Timer(timeout, expire)
        deadline.daemon = True
        deadline.start()
        started = time.monotonic()
        stdout = stderr = b""
        running = ready is None   # has the command itself begun?
        try:
            channel.settimeout(timeout)
            channel.exec_command(shlex.join(argv))
            channel.sendall(preamble)
            if not running:
                running, stdout = _read_past(channel.recv, ready)
            # EOF only after input, so only to commands that read to the end: an EOF crossing
            # the server's channel close makes OpenSSH drop the whole shared connection
            # (paramiko #1705). A command given no input must not read stdin.
            if stdin and running:
                channel.sendall(stdin)
                channel.shutdown_write()
            stdout += _read_to_eof(channel.recv)
            stderr = _read_to_eof(channel.recv_stderr)
            channel.status_event.wait(timeout)   # never recv_exit_status(): it ignores timeouts
        except OutputTooLarge:   # the channel closes below, so the host stops writing
            raise SshError("output_too_large", f"{self._where}: {name} printed more than "
                                               f"{OUTPUT_LIMIT} bytes; the rest was not read",
                           command_sent=running) from None
        except TimeoutError:   # a read's own limit ran out just before the deadline closed it
            expired.set()
        except (paramiko.SSHException, EOFError, OSError):
            pass   # judged below: no exit status means the outcome is unknown
        finally:
            deadline.cancel()
            _close(channel)
            SSH_STEPS["command"].observe(time.monotonic() - started)
        if channel.exit_status >= 0:
            logger.debug("%s: %s exited with %s", self._where, name, channel.exit_status)
            return Completed(channel.exit_status, stdout if binary else _text(stdout, secrets),
                             _text(stderr, secrets), running)
        if expired.is_set():
            raise SshError("timeout", f"{self._where}: {name} did not finish within {timeout:g} s",
                           command_sent=running)
        raise SshError("connection_lost", f"{self._where}: {name} ended without an exit status "
                                          f"(connection lost or process killed)", command_sent=running)


def _close(channel: paramiko.Channel) -> None:
    """Close a channel; on a connection that just died, paramiko raises while saying goodbye."""
    try:
        channel.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


def _read_to_eof(recv) -> bytes:
    """Everything up to EOF; `OutputTooLarge` past `OUTPUT_LIMIT` bytes, so a host's output can
    never fill the worker's memory."""
    chunks, size = [], 0
    while chunk := recv(32768):
        size += len(chunk)
        if size > OUTPUT_LIMIT:
            raise OutputTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _read_past(recv, line: bytes) -> tuple[bool, bytes]:
    """Read until `line` has been printed: (True, what follows it), or (False, b"") at EOF."""
    seen = b""
    while chunk := recv(32768):
        seen += chunk
        if line in seen:
            return True, seen.split(line, 1)[1]
        if len(seen) > OUTPUT_LIMIT:
            raise OutputTooLarge
    return False, b""


def _text(output: bytes, secrets: Iterable[str]) -> str:
    return scrub(output.decode("utf-8", "replace"), secrets)
