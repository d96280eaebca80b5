"""Redis ACL users (Redis ≥ 6), changed with zero downtime: the new password is added as a
SHA-256 hash (`ACL SETUSER u #<hex>`) while the old one still works; once a fresh `AUTH` proves
the new one, `finish` removes the old hash (`!<hex>`) and persists the users (`ACL SAVE` with an
ACL file, else `CONFIG REWRITE` with a config file, else the change lives in memory only). The
plaintext reaches the server only inside `AUTH`, which Redis never logs nor shows in MONITOR.

The privileged ACL user needs the `acl` commands (`+acl`), `config|get` and `info`, plus
`config|rewrite` where the server has no ACL file.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (AuthenticationError, ConnectionError, NoPermissionError,
                              ResponseError, TimeoutError)
from redis.retry import Retry

from worker.connectors.base import Connector
from worker.connectors.pooling import IDLE_SECONDS, Fingerprints
from worker.errors import TargetError, scrub

logger = logging.getLogger(__name__)


def _no_retry() -> Retry:
    """redis-py retries a failed command by default; whether a change was sent is ours to say."""
    return Retry(NoBackoff(), 0)


def password_hash(secret: str) -> str:
    """What Redis stores for a password (and what `#` / `!` rules name)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _log_in(client: redis.Redis) -> None:
    """Connect (redis-py authenticates on connect) without running a command, so a refused
    password is told apart from a command the user may not run."""
    client.connection_pool.release(client.connection_pool.get_connection())


class _Pooled:
    def __init__(self, client: redis.Redis):
        self.client = client
        self.last_used = time.monotonic()


class ClientPool:
    """Privileged clients kept between commands (thread-safe; each has its own redis-py
    connection pool), one per (address, port, login, salted fingerprint of the login secret,
    never the secret), so a batch on one server logs in once; idle ones are closed."""

    def __init__(self, *, idle_seconds: float = IDLE_SECONDS):
        self.idle_seconds = idle_seconds
        self._prints = Fingerprints()
        self._lock = threading.Lock()
        self._clients: dict[tuple, _Pooled] = {}

    def client(self, address: str, port: int, username: str, secrets: list[str],
               timeout: float) -> tuple[redis.Redis, int]:
        """A client logged in as `username` and the index of the secret it uses: a pooled one if
        any of `secrets` has one, else a new login trying `secrets` in order. AuthenticationError
        when all are refused; ConnectionError / TimeoutError when the server cannot be reached."""
        keys = [(address, port, username, self._prints.of(secret)) for secret in secrets]
        with self._lock:
            for index, key in enumerate(keys):
                if key in self._clients:
                    pooled = self._clients[key]
                    pooled.last_used = time.monotonic()
                    return pooled.client, index
        for index, secret in enumerate(secrets):
            client = redis.Redis(host=address, port=port, username=username, password=secret,
                                 socket_timeout=timeout, socket_connect_timeout=timeout,
                                 retry=_no_retry(), decode_responses=True)
            try:
                _log_in(client)
            except AuthenticationError:
                client.close()
                continue
            except BaseException:
                client.close()
                raise
            with self._lock:
                kept = self._clients.setdefault(keys[index], _Pooled(client))
            if kept.client is not client:      # another thread logged in meanwhile
                client.close()
            return kept.client, index
        raise AuthenticationError("every login secret was refused")

    def retire(self, client: redis.Redis) -> None:
        """Forget a client whose login secret was just removed; commands still running on it
        end first (only its idle connections close now)."""
        with self._lock:
            for key in [k for k, p in self._clients.items() if p.client is client]:
                del self._clients[key]
        client.connection_pool.disconnect(inuse_connections=False)

    def prune(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [key for key, p in self._clients.items()
                    if now - p.last_used >= self.idle_seconds]
            stale = [self._clients.pop(key).client for key in idle]
        for client in stale:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = [p.client for p in self._clients.values()], {}
        for client in clients:
            client.close()


class RedisConnector(Connector):
    old_secret_refused = True        # `finish` removes the old hash

    def __init__(self, command, targets):
        super().__init__(command, targets)
        self.client: redis.Redis | None = None

    @classmethod
    def new_pool(cls) -> ClientPool:
        return ClientPool()

    def proof_key(self) -> tuple:
        """Per user: whether Redis checks passwords is an ACL user's flag (`nopass`)."""
        return super().proof_key() + (self.command.username,)

    def change(self) -> None:
        c = self.command
        self.client = self._privileged()
        user = self._user()
        if "off" in user["flags"]:
            raise TargetError("account_disabled", f"{self.where}: the ACL user {c.username} is "
                                                  f"disabled (off), so no password can log in "
                                                  f"as it; nothing was changed")
        if "nopass" in user["flags"]:
            # A password would turn nopass off and lock out the clients that rely on it; left
            # as it is, the proof reports that this user does not check passwords.
            logger.warning("%s: the ACL user %s has nopass (any password logs in); not changed",
                           self.where, c.username)
            return
        new = "#" + password_hash(c.new_secret.get_secret_value())
        self.before_change()
        self._run(f"add a password to the ACL user {c.username}", self.client.execute_command,
                  "ACL", "SETUSER", c.username, new, sent=True)

    def finish(self) -> None:
        """Remove the old password (every other one when the old is unknown), then persist."""
        c = self.command
        if self.client is None:          # a message seen before: nothing was sent this time
            self.client = self._privileged()
        new = password_hash(c.new_secret.get_secret_value())
        old = password_hash(c.old_secret.get_secret_value()) if c.old_secret else None
        drop = [h for h in self._user()["passwords"] if h != new and (old is None or h == old)]
        if drop:
            self._run(f"remove the old password of the ACL user {c.username}",
                      self.client.execute_command, "ACL", "SETUSER", c.username,
                      *("!" + h for h in drop))
        self._persist()
        if c.username == c.login_username:
            self.pool.retire(self.client)

    def logs_in(self, username: str, secret: str) -> bool:
        """A fresh connection and `AUTH username secret`."""
        asset = self.command.asset
        connection = redis.Connection(host=asset.address, port=asset.port, username=username,
                                      password=secret, socket_timeout=self.command.timeout,
                                      socket_connect_timeout=self.command.timeout,
                                      retry=_no_retry())
        try:
            connection.connect()
        except AuthenticationError:
            return False
        except (ConnectionError, TimeoutError) as exc:
            raise TargetError("unreachable", f"{self.where}: cannot connect to log in as "
                                             f"{username}: {self._said(exc)}") from None
        finally:
            connection.disconnect()
        return True

    def _privileged(self) -> redis.Redis:
        c = self.command
        secrets = [secret.get_secret_value() for secret in c.login_secrets]
        try:
            client, self.login_index = self.pool.client(c.asset.address, c.asset.port,
                                                        c.login_username, secrets, c.timeout)
        except AuthenticationError:
            tried = "its password was" if len(secrets) == 1 else \
                f"all {len(secrets)} known passwords were"
            raise TargetError("login_failed", f"{self.where}: cannot log in as "
                                              f"{c.login_username}: {tried} rejected") from None
        except (ConnectionError, TimeoutError) as exc:
            raise TargetError("unreachable", f"{self.where}: cannot connect: "
                                             f"{self._said(exc)}") from None
        return client

    def _user(self) -> dict:
        c = self.command
        user = self._run(f"read the ACL user {c.username}", self.client.acl_getuser, c.username)
        if user is None:
            raise TargetError("no_such_account", f"{self.where}: there is no ACL user "
                                                 f"{c.username}; nothing was changed")
        return user

    def _persist(self) -> None:
        """Save the users where the server keeps them, and log which (never a secret)."""
        if self._run("read its ACL file setting", self.client.config_get, "aclfile").get("aclfile"):
            how, save = "ACL SAVE", self.client.acl_save
        elif self._run("read its config file", self.client.info, "server").get("config_file"):
            how, save = "CONFIG REWRITE", self.client.config_rewrite
        else:
            self.note = ("changed in memory only: the server has neither an ACL file nor a "
                         "config file, so a restart brings the old password back")
            logger.warning("%s: the ACL user %s is %s", self.where, self.command.username, self.note)
            return
        self._run(f"save its users with {how}", save)
        self.note = f"persisted with {how}"
        logger.info("%s: the ACL user %s %s", self.where, self.command.username, self.note)

    def _run(self, what: str, call: Callable, *args, sent: bool = False):
        """`call(*args)` on the privileged client, its errors as TargetError. `sent`: it may
        change the secret, so a lost answer leaves the change unknown (an error answer does
        not: the server did not apply the command)."""
        login = self.command.login_username
        try:
            return call(*args)
        except NoPermissionError as exc:
            raise TargetError("no_permission", f"{self.where}: {login} lacks the permission to "
                                               f"{what} ({self._said(exc)})") from None
        except ResponseError as exc:
            raise TargetError("refused", f"{self.where}: could not {what}: "
                                         f"{self._said(exc)}") from None
        except AuthenticationError:      # reconnecting: its password was changed meanwhile
            self.pool.retire(self.client)
            raise TargetError("login_failed", f"{self.where}: {login} can no longer log in to "
                                              f"{what}") from None
        except (ConnectionError, TimeoutError) as exc:
            raise TargetError("unreachable" if isinstance(exc, ConnectionError) else "timeout",
                              f"{self.where}: no answer while trying to {what}: "
                              f"{self._said(exc)}", command_sent=sent) from None

    def _said(self, exc: Exception) -> str:
        """What the server or the library said, without any secret or password hash."""
        secrets = self.secrets()
        return scrub(str(exc), [*secrets, *map(password_hash, secrets)])
