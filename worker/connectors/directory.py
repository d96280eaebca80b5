"""What OpenLDAP (`worker.connectors.ldap`) and Active Directory (`worker.connectors.ad`)
accounts share, with ldap3: an encrypted connection (LDAPS, or StartTLS before anything else)
whose server certificate is verified; simple binds that tell a refused password from every
other failure; the account's entry found by a search with its name escaped; and the
directory's refusals in words.

Each step opens its own connection (a bind is cheap, and a fresh bind is what proves a
password); nothing is pooled yet. ldap3 keeps a bind's password on its connection object: no
connection is ever logged, and ldap3's own exceptions name no password.
"""
from __future__ import annotations

import math
import ssl
import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from worker.connectors.base import Connector
from worker.errors import TargetError, scrub

INVALID_CREDENTIALS = 49
SHOWN = 300               # how much of a directory's message a reason quotes


def close(conn: ldap3.Connection) -> None:
    """Unbind; a connection that already broke has nothing left to close."""
    try:
        conn.unbind()
    except LDAPException:
        pass


class DirectoryConnector(Connector):
    """A directory account. Subclasses say how a name becomes a bind name and an entry
    (`bind_name`, `find`), how a password is set (`set_password`), and what the directory's
    answers mean (`bind_refused`, `explain`)."""

    old_secret_refused = True        # a directory keeps one password per account

    def __init__(self, command, targets):
        super().__init__(command, targets)
        self.dn: str | None = None   # the account's entry, once found

    # What a subclass provides.

    def bind_name(self, name: str) -> str:
        """What the privileged account `name` binds as."""
        raise NotImplementedError

    def find(self, conn: ldap3.Connection) -> str:
        """The DN of the command's account, looked up as the privileged account; TargetError
        (nothing sent) when there is none or secure mode protects it."""
        raise NotImplementedError

    def set_password(self, conn: ldap3.Connection, dn: str, secret: str) -> bool:
        """Send the change; whether the directory answered success (its answer is in
        `conn.result`)."""
        raise NotImplementedError

    def bind_refused(self, result: dict) -> str | None:
        """For a bind the directory refused (invalidCredentials): None when the password was
        wrong, else why the account may not log in, in words."""
        return None

    def explain(self, result: dict) -> tuple[str, str]:
        """(error code, words) for a refused operation."""
        if result.get("result") == 50:        # insufficientAccessRights
            return "privilege_failed", "the privileged account may not do this"
        return "target_error", self.said(result)

    # The connector's steps.

    def change(self) -> None:
        c = self.command
        conn = self._privileged()
        try:
            self.dn = self.find(conn)
            self.before_change()
            try:
                done = self.set_password(conn, self.dn, c.new_secret.get_secret_value())
            except LDAPException as exc:
                raise self._lost(exc, "setting the password", sent=True) from None
            if not done:
                code, words = self.explain(conn.result)
                raise TargetError(code, f"{self.where}: the directory refused the new password "
                                        f"of {c.username}: {words}; nothing was changed")
        finally:
            close(conn)

    def logs_in(self, username: str, secret: str) -> bool:
        """A fresh bind as the command's account (the protocol's only `username`), by the DN
        `find` gave."""
        if self.dn is None:            # a proof before any change (a message seen before)
            conn = self._privileged()
            try:
                self.dn = self.find(conn)
            finally:
                close(conn)
        conn = self._bind(self.dn, secret)
        if conn is None:
            return False
        close(conn)
        return True

    # Connections.

    def _privileged(self) -> ldap3.Connection:
        c = self.command
        for index, secret in enumerate(c.login_secrets):
            conn = self._bind(self.bind_name(c.login_username), secret.get_secret_value())
            if conn is not None:
                self.login_index = index
                return conn
        tried = ("its password was" if len(c.login_secrets) == 1
                 else f"all {len(c.login_secrets)} known passwords were")
        raise TargetError("login_failed", f"{self.where}: cannot log in as {c.login_username}: "
                                          f"{tried} rejected")

    def _bind(self, name: str, secret: str) -> ldap3.Connection | None:
        """A new connection bound as `name`; None when the directory refuses the password.
        An empty password would be an unauthenticated bind, which proves nothing."""
        if not secret:
            raise TargetError("empty_secret", f"{self.where}: an empty password is never sent")
        conn = self.open(name, secret)
        try:
            if conn.bind():
                return conn
        except LDAPException as exc:
            close(conn)
            raise self._lost(exc, f"logging in as {name}", sent=False) from None
        result = conn.result
        close(conn)
        if result.get("result") == INVALID_CREDENTIALS:
            why = self.bind_refused(result)
            if why is None:
                return None
            raise TargetError("login_error", f"{self.where}: {name} may not log in: {why}")
        raise TargetError("login_error", f"{self.where}: the directory did not let {name} in: "
                                         f"{self.said(result)}")

    def open(self, name: str | None = None, secret: str | None = None) -> ldap3.Connection:
        """An open, encrypted connection, not bound yet (to bind as `name`, else anonymous)."""
        c, params = self.command, self.command.params
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=params.tls_ca)
        seconds = max(1, math.ceil(c.timeout))         # ldap3 packs it as a whole number
        server = ldap3.Server(c.asset.address, port=c.asset.port,
                              use_ssl=params.transport == "ldaps", tls=tls,
                              get_info=ldap3.NONE, connect_timeout=seconds)
        conn = None
        try:
            conn = ldap3.Connection(server, user=name, password=secret,
                                    authentication=ldap3.SIMPLE if name else ldap3.ANONYMOUS,
                                    receive_timeout=seconds, raise_exceptions=False,
                                    auto_referrals=False)
            conn.open()
            if params.transport == "starttls":
                conn.start_tls()
        except LDAPException as exc:
            if conn is not None:
                close(conn)
            raise TargetError("unreachable", f"{self.where}: cannot open an encrypted connection: "
                                             f"{self._quote(str(exc))}") from None
        return conn

    def _lost(self, exc: LDAPException, doing: str, *, sent: bool) -> TargetError:
        return TargetError("connection_lost", f"{self.where}: the connection broke while {doing}: "
                                              f"{self._quote(str(exc))}", command_sent=sent)

    # Searching.

    def search_one(self, conn: ldap3.Connection, base: str, template: str, name: str,
                   attributes: list[str] | None = None) -> dict:
        """The one entry under `base` that `template` (a filter with `{username}`) finds for
        `name`, escaped; TargetError when there is none, several, or the search failed."""
        query = template.replace("{username}", escape_filter_chars(name))
        try:
            conn.search(base, query, ldap3.SUBTREE, attributes=attributes or [], size_limit=2,
                        time_limit=max(1, math.ceil(self.command.timeout)))
        except LDAPException as exc:
            raise self._lost(exc, f"looking up {name}", sent=False) from None
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if conn.result.get("result") not in (0, 4):       # success, sizeLimitExceeded
            raise TargetError("lookup_failed", f"{self.where}: looking up {name} under {base} "
                                               f"failed: {self.said(conn.result)}")
        if len(entries) > 1:
            raise TargetError("ambiguous_account", f"{self.where}: more than one entry under "
                                                   f"{base} matches {name}; nothing was changed")
        if not entries:
            raise TargetError("no_such_account", f"{self.where}: no entry under {base} matches "
                                                 f"{name}; nothing was changed")
        return entries[0]

    def said(self, result: dict) -> str:
        """The directory's own answer: its result name and message."""
        message = (result.get("message") or "").strip()
        name = result.get("description") or f"result {result.get('result')}"
        return self._quote(f"{name}: {message}" if message else name)

    def _quote(self, text: str) -> str:
        return scrub(" ".join(text.split()), self.secrets())[:SHOWN]
