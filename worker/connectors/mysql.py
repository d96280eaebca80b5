"""MySQL and MariaDB accounts ('user'@'host'): the privileged login (pooled per server and login)
checks that the account exists, then sets a mysql_native_password hash computed here, so the
server's general log and binary log show the hash, never the password. A new connection as the
account proves a secret. Values reach SQL only as PyMySQL's escaped parameters.

TLS (`params.tls`): `disable`: none; `prefer`: TLS when the server offers it, its certificate not
checked (PyMySQL's default since 1.2); `require`: TLS or no connection, certificate not checked;
`verify-full`: TLS with the certificate checked against `params.tls_ca` (else the system's CAs)
and the asset's address.
"""
from __future__ import annotations

import hashlib
import ssl

import pymysql

from shared.platforms import MysqlParams
from worker.connectors.base import Connector
from worker.connectors.pooling import IdlePool
from worker.errors import TargetError, scrub

IDLE_PER_LOGIN = 4                          # idle connections kept per server and login
ACCESS_DENIED = 1045                        # a login refused: wrong password or no such account
NO_PRIVILEGE = {1044, 1142, 1143, 1227}     # database, table, column, global privilege missing
UNREACHABLE = {2003, 2005, 2026}            # cannot connect (refused, timeout, TLS), unknown host
CONNECTION_LOST = {2006, 2013}


def native_hash(password: str) -> str:
    """The mysql_native_password hash of `password` as the server stores it."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def tls_options(params: MysqlParams) -> dict:
    """PyMySQL's connect arguments for `params.tls` (see the module docstring)."""
    if params.tls == "disable":
        return {"ssl_disabled": True}
    if params.tls == "prefer":
        return {}
    context = ssl.create_default_context(cafile=params.tls_ca)   # an SSLContext makes TLS required
    if params.tls == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return {"ssl": context}


def _close(connection: pymysql.Connection) -> None:
    try:
        connection.close()
    except pymysql.MySQLError:
        pass                                # already closed, or the server is gone: it is closed


def _answers(connection: pymysql.Connection) -> bool:
    """Whether a pooled connection still answers (it may have timed out or the server restarted
    while it waited)."""
    try:
        connection.ping()
        return True
    except pymysql.MySQLError:
        return False


class MysqlConnector(Connector):
    old_secret_refused = True      # the new hash replaces the old one

    @classmethod
    def new_pool(cls) -> IdlePool[pymysql.Connection]:
        """Privileged connections by server, login and login secret's fingerprint."""
        return IdlePool(_close, per_key=IDLE_PER_LOGIN)

    def change(self) -> None:
        """Log in (pooled), find the account's host entries, and set the new hash on all of them
        in one statement."""
        connection, key = self.privileged()
        try:
            hosts = self.account_hosts(connection)
            self.before_change()
            self.set_hash(connection, hosts)
        except BaseException:
            _close(connection)
            raise
        if self.command.login_username == self.command.username:
            _close(connection)           # keyed by a secret that no longer works
        else:
            self.pool.give_back(key, connection)

    def logs_in(self, username: str, secret: str) -> bool:
        connection = self.connect(username, secret)
        if connection is None:
            return False
        _close(connection)
        return True

    def privileged(self) -> tuple[pymysql.Connection, tuple]:
        """A connection as the privileged account and its pool key: a pooled one for any of the
        login secrets, else a new login trying them in order (current, then pending)."""
        c = self.command
        server = (c.asset.address, c.asset.port, c.login_username, c.params.tls, c.params.tls_ca)
        logins = [secret.get_secret_value() for secret in c.login_secrets]
        keys = self.pool.keys(server, logins)
        taken = self.pool.take(keys, alive=_answers)
        if taken is not None:
            connection, self.login_index = taken
            return connection, keys[self.login_index]
        for index, secret in enumerate(logins):
            connection = self.connect(c.login_username, secret)
            if connection is not None:
                self.login_index = index
                return connection, keys[index]
        tried = ("its password was" if len(logins) == 1
                 else f"all {len(logins)} known passwords were")
        raise TargetError("login_failed", f"{self.where}: cannot log in as {c.login_username}: "
                                          f"{tried} rejected")

    def connect(self, username: str, secret: str) -> pymysql.Connection | None:
        """A new connection as `username`; None when the server refuses the login."""
        c = self.command
        try:
            # bytes: PyMySQL would encode a str as latin-1; the hash is of the UTF-8 bytes
            return pymysql.connect(host=c.asset.address, port=c.asset.port, user=username,
                                   password=secret.encode(), connect_timeout=c.timeout,
                                   read_timeout=c.timeout, write_timeout=c.timeout,
                                   autocommit=True, **tls_options(c.params))
        except pymysql.MySQLError as exc:
            if exc.args and exc.args[0] == ACCESS_DENIED:
                return None
            raise self.error(exc, f"cannot connect as {username}") from None

    def account_hosts(self, connection: pymysql.Connection) -> list[str]:
        """The host parts of the accounts to change: `account_host`, or with `all_hosts` every
        host of the user. TargetError `no_such_account` when there is none."""
        c = self.command
        query, args = "SELECT Host FROM mysql.user WHERE User = %s", [c.username]
        if not c.params.all_hosts:
            query += " AND Host = %s"
            args.append(c.params.account_host)
        try:
            with connection.cursor() as cursor:
                cursor.execute(query, args)
                hosts = [host for host, in cursor.fetchall()]
        except pymysql.MySQLError as exc:
            raise self.error(exc, f"cannot read mysql.user as {c.login_username}") from None
        if not hosts:
            which = "any host" if c.params.all_hosts else f"host '{c.params.account_host}'"
            raise TargetError("no_such_account", f"{self.where}: there is no account "
                                                 f"'{c.username}' for {which}; nothing was changed")
        return hosts

    def set_hash(self, connection: pymysql.Connection, hosts: list[str]) -> None:
        """ALTER USER with the hash (MariaDB's `IDENTIFIED BY PASSWORD`, MySQL's `IDENTIFIED WITH
        mysql_native_password AS`). A server's refusal of a single account means it is
        unchanged; with several, some may have changed, as when the answer is lost."""
        c = self.command
        form = ("IDENTIFIED BY PASSWORD %s" if "MariaDB" in connection.get_server_info()
                else "IDENTIFIED WITH mysql_native_password AS %s")
        statement = "ALTER USER " + ", ".join([f"%s@%s {form}"] * len(hosts))
        hashed = native_hash(c.new_secret.get_secret_value())
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, [value for host in hosts
                                           for value in (c.username, host, hashed)])
        except pymysql.MySQLError as exc:
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            answered = errno and not 2000 <= errno < 3000     # 2xxx: the client's own errors
            accounts = ", ".join(f"'{c.username}'@'{host}'" for host in hosts)
            raise self.error(exc, f"ALTER USER {accounts} as {c.login_username}",
                             sent=not (answered and len(hosts) == 1), hashed=hashed) from None

    def error(self, exc: pymysql.MySQLError, doing: str, *, sent: bool = False,
              hashed: str | None = None) -> TargetError:
        """A TargetError naming the asset, what was being done and the server's answer (which
        never holds a password; a hash is scrubbed too)."""
        errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        code = ("unreachable" if errno in UNREACHABLE else
                "connection_lost" if errno in CONNECTION_LOST else
                "insufficient_privilege" if errno in NO_PRIVILEGE else
                "login_failed" if errno == ACCESS_DENIED else "mysql_error")
        text = scrub(f"{self.where}: {doing}: {message}", [*self.secrets(), hashed or ""])
        return TargetError(code, text, command_sent=sent)
