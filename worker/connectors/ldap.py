"""OpenLDAP accounts (and any directory with the Password Modify extended operation, RFC
3062): the privileged bind DN sets the new password with that operation, so the server hashes
it by its own `olcPasswordHash` and the plaintext crosses only inside TLS (slapd's `stats` log
shows `PASSMOD id=<dn> new`, never a password); a fresh bind as the entry proves it.

An account name that is a DN names its entry; any other name goes, escaped as an RDN value,
into `user_dn`, else, escaped for a filter, into `user_filter`, searched under `base_dn`. The
privileged account binds by its DN (or by `user_dn`). Secure mode also refuses the bind DN's
own entry and entries whose first RDN value is a protected name (`cn=admin,...`).
"""
from __future__ import annotations

import ldap3
from ldap3.utils.dn import escape_rdn, parse_dn, safe_dn

from shared.platforms import PLACEHOLDER, platform
from worker.connectors.directory import DirectoryConnector
from worker.errors import TargetError


def is_dn(name: str) -> bool:
    """The registry's rule: a plain account name has no `=`, a DN always does."""
    return "=" in name


def same_dn(one: str, other: str) -> bool:
    try:
        return safe_dn(one).lower() == safe_dn(other).lower()
    except Exception:        # ldap3 raises its own or ValueError on a DN it cannot parse
        return False


class OpenLdapConnector(DirectoryConnector):

    def bind_name(self, name: str) -> str:
        if is_dn(name):
            return name
        if self.command.params.user_dn:
            return self._from_template(name)
        raise TargetError("login_name", f"{self.where}: the privileged account {name} is not a "
                                        f"DN: name it by its DN, or set user_dn")

    def find(self, conn: ldap3.Connection) -> str:
        c, params = self.command, self.command.params
        if is_dn(c.username):
            dn = c.username
        elif params.user_dn:
            dn = self._from_template(c.username)
        elif params.base_dn:
            dn = self.search_one(conn, params.base_dn, params.user_filter, c.username)["dn"]
        else:
            raise TargetError("no_base_dn", f"{self.where}: set user_dn or base_dn to find "
                                            f"{c.username}; nothing was changed")
        if c.secure_mode and self._protected(dn):
            raise TargetError("protected", f"{self.where}: secure mode does not rotate {dn} (the "
                                           f"directory's administrator); nothing was changed")
        return dn

    def set_password(self, conn: ldap3.Connection, dn: str, secret: str) -> bool:
        return conn.extend.standard.modify_password(user=dn, new_password=secret) is True

    def explain(self, result: dict) -> tuple[str, str]:
        if result.get("result") == 32:                    # noSuchObject
            return "no_such_account", f"there is no entry {result.get('matchedDN') or ''}".strip()
        if result.get("result") == 19:                    # constraintViolation (ppolicy)
            return "policy_refused", f"the directory's password policy refused it ({self.said(result)})"
        return super().explain(result)

    def _from_template(self, name: str) -> str:
        return self.command.params.user_dn.replace(PLACEHOLDER, escape_rdn(name))

    def _protected(self, dn: str) -> bool:
        c = self.command
        if same_dn(dn, self.bind_name(c.login_username)):
            return True
        first = parse_dn(safe_dn(dn))[0]
        return first[1].lower() in platform(c.asset.platform).protected_usernames
