"""PostgreSQL roles: the privileged role (a superuser, or a role with CREATEROLE) sets the new
password as a SCRAM-SHA-256 verifier computed here (libpq's `PQencryptPasswordConn`), so the
plaintext never reaches the server, its log (`log_statement=all` shows the verifier) or
`pg_stat_statements`; a fresh connection as the role proves a password.

Privileged connections are pooled between commands (one per worker thread at most, keyed by a
salted fingerprint of the password, never the password). libpq reports a failed connection
with a message only, no SQLSTATE, so a refused password is told by the server's (English) text;
any other failure is an error, never a "logs in". psycopg's connection errors carry the
connection's parameters, the password among them: they are never chained, logged or quoted.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from worker.connectors.base import Connector
from worker.connectors.pooling import FAILURE_MEMORY, IDLE_SECONDS, FailureMemory, IdlePool
from worker.errors import TargetError, scrub

# What the server says when it will not let a role in (SQLSTATE 28P01 and 28000).
REFUSED = re.compile(r'password authentication failed|no pg_hba\.conf entry|pg_hba\.conf rejects|'
                     r'role ".*" does not exist|is not permitted to log in')


@dataclass
class Lease:
    """A privileged connection lent to one command, and the pool slot it goes back to."""

    conn: psycopg.Connection
    key: tuple
    index: int                  # which login secret it was opened with
    pooled: bool                # it had waited in the pool (and may have died there)


class Pool:
    """Idle privileged connections per (address, port, database, TLS, timeout, login, secret
    fingerprint); a command takes one (or opens one) and gives it back, so concurrent commands
    on one server each have their own and a batch logs in once per worker thread. A refused or
    slow login is remembered for a while, so a batch does not repeat it for every role.
    Thread-safe."""

    def __init__(self, *, idle_seconds: float = IDLE_SECONDS,
                 failure_memory: float = FAILURE_MEMORY):
        self._idle = IdlePool(psycopg.Connection.close, idle_seconds=idle_seconds)
        self._failures = FailureMemory({"login_failed"}, seconds=failure_memory)

    def lease(self, place: tuple, secrets: list[str], open_) -> Lease:
        """An idle connection for `place` opened with one of `secrets` (the earliest), else
        `open_(secrets)` → (connection, index), which raises TargetError when it cannot."""
        keys = self._idle.keys(place, secrets)
        taken = self._idle.take(keys)     # a dead one is found by its first statement
        if taken is not None:
            conn, index = taken
            return Lease(conn, keys[index], index, pooled=True)
        conn, index = self._failures.log_in(tuple(keys), lambda: open_(secrets))
        return Lease(conn, keys[index], index, pooled=False)

    def give_back(self, lease: Lease) -> None:
        """Keep the connection for the next command, if it is idle and healthy."""
        conn = lease.conn
        if lost(conn) or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        self._idle.give_back(lease.key, conn)

    def prune(self) -> None:
        """Close connections idle for `idle_seconds`; forget old failures."""
        self._idle.prune()
        self._failures.prune()

    def close(self) -> None:
        self._idle.close()


def lost(conn: psycopg.Connection) -> bool:
    return conn.broken or conn.closed


def tls_options(params) -> dict:
    """libpq's TLS settings: `verify-full` checks the server's certificate against `tls_ca`,
    else the system's CAs (libpq's `system`, which only a verifying mode accepts)."""
    if params.tls == "verify-full":
        return {"sslmode": "verify-full", "sslrootcert": params.tls_ca or "system"}
    return {"sslmode": params.tls}


class PostgresConnector(Connector):
    old_secret_refused = True

    @classmethod
    def new_pool(cls) -> Pool:
        return Pool()

    def change(self) -> None:
        """Check the role (exists; not a superuser in secure mode), then set its verifier."""
        c = self.command
        lease, superuser = self._lease_and_look_up()
        try:
            if superuser is None:
                raise TargetError("no_such_account", f"{self.where}: there is no role "
                                                     f"{c.username}; nothing was changed")
            if superuser and c.secure_mode:
                raise TargetError("protected", f"{self.where}: {c.username} is a superuser, which "
                                               f"secure mode does not rotate; nothing was changed")
            self._alter(lease.conn)
        finally:
            if c.username == c.login_username:
                lease.conn.close()       # pooled under a password that no longer works
            else:
                self.pool.give_back(lease)

    def _lease_and_look_up(self) -> tuple[Lease, bool | None]:
        """A privileged connection, and whether the role is a superuser (None: no such role).
        A pooled connection found dead (the server restarted) is dropped for another."""
        c = self.command
        place = (c.asset.address, c.asset.port, c.params.database, c.params.tls, c.params.tls_ca,
                 c.timeout, c.login_username)
        logins = [secret.get_secret_value() for secret in c.login_secrets]
        while True:
            lease = self.pool.lease(place, logins, self._log_in_privileged)
            self.login_index = lease.index
            try:
                row = lease.conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                                         (c.username,)).fetchone()
                return lease, (row[0] if row else None)
            except psycopg.Error as exc:
                failure = self._failure(exc, lease.conn, "looking up the role", changing=False)
            died_idle = lease.pooled and lost(lease.conn)
            lease.conn.close()
            if not died_idle:
                raise failure

    def _alter(self, conn: psycopg.Connection) -> None:
        c = self.command
        verifier = conn.pgconn.encrypt_password(c.new_secret.get_secret_value().encode(),
                                                c.username.encode(), b"scram-sha-256").decode()
        # A utility statement takes no bound parameters: the verifier (not the secret) is quoted
        # by psycopg as a literal, the role name as an identifier.
        statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(c.username),
                                                                sql.Literal(verifier))
        self.before_change()     # ends within the validity: statement_timeout is the timeout
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise self._failure(exc, conn, "setting the password", changing=True) from None

    def _failure(self, exc: psycopg.Error, conn: psycopg.Connection, doing: str, *,
                 changing: bool) -> TargetError:
        """What a failed statement means. An error answered on a connection that is still
        healthy rolled the statement back (autocommit); a lost connection may have run it."""
        c = self.command
        if lost(conn):
            return TargetError("connection_lost", f"{self.where}: the connection as "
                                                  f"{c.login_username} broke while {doing}",
                               command_sent=changing)
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return TargetError("privilege_failed", f"{self.where}: {c.login_username} may not "
                                                   f"change the password of {c.username}: it needs "
                                                   f"CREATEROLE (from PostgreSQL 16 also ADMIN "
                                                   f"OPTION on the role) or superuser")
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return TargetError("timeout", f"{self.where}: {doing} for {c.username} did not finish "
                                          f"in time; the server cancelled it")
        reason = scrub(exc.diag.message_primary or type(exc).__name__, self.secrets())[:200]
        return TargetError("target_error", f"{self.where}: the server refused {doing} for "
                                           f"{c.username} ({exc.sqlstate}: {reason})")

    def _log_in_privileged(self, secrets: list[str]) -> tuple[psycopg.Connection, int]:
        c = self.command
        for index, secret in enumerate(secrets):
            conn = self._connect(c.login_username, secret)
            if conn is not None:
                return conn, index
        tried = ("its password was" if len(secrets) == 1
                 else f"all {len(secrets)} known passwords were")
        raise TargetError("login_failed", f"{self.where}: cannot log in as {c.login_username}: "
                                          f"{tried} rejected")

    def logs_in(self, username: str, secret: str) -> bool:
        conn = self._connect(username, secret)
        if conn is None:
            return False
        conn.close()
        return True

    def _connect(self, role: str, secret: str) -> psycopg.Connection | None:
        """A new connection as `role` with `secret`, None if the server refused the secret;
        TargetError if the server cannot be reached or refused for another reason."""
        c = self.command
        try:
            return psycopg.connect(host=c.asset.address, port=c.asset.port,
                                   dbname=c.params.database, user=role, password=secret,
                                   **tls_options(c.params),
                                   connect_timeout=max(2, math.ceil(c.timeout)),
                                   options=f"-c statement_timeout={math.ceil(c.timeout * 1000)}",
                                   application_name="keyturn", autocommit=True)
        except psycopg.OperationalError as exc:
            text = str(exc)
        said = re.search(r"FATAL:\s+(.*)", text)
        if said and REFUSED.search(said.group(1)):
            return None
        if said:
            reason = scrub(said.group(1), self.secrets())[:200]
            raise TargetError("login_error", f"{self.where}: the server did not let {role} in: "
                                             f"{reason}")
        reason = text.rsplit("failed: ", 1)[-1].splitlines()[0]   # libpq's: Connection refused
        reason = scrub(reason, self.secrets())[:200]
        raise TargetError("unreachable", f"{self.where}: cannot connect: {reason}")
