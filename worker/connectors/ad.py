"""Active Directory accounts: an account allowed to reset passwords replaces `unicodePwd` (the
new password quoted, in UTF-16-LE) over LDAPS or StartTLS, so the domain controller applies
the domain's password policy (length, complexity; history too where the DC honours the policy
hints control sent with it: Windows Server 2008 R2 and later, not Samba 4.17) and hashes it
itself; a refusal ends `failed` with the reason in words. A fresh bind as the account's DN
proves a password.

Accounts are found by sAMAccountName, or by userPrincipalName for a name with @, under
`base_dn` (default: the domain's naming context from the rootDSE). The privileged account binds
by UPN or DN as given, a plain name as the implicit UPN name@<DNS domain>. Secure mode also
refuses the built-in Administrator and krbtgt (by RID, whatever their names), accounts marked
adminCount=1, and members, nested too (tokenGroups), of Domain / Enterprise / Schema Admins or
Administrators.
"""
from __future__ import annotations

import re
import struct

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from worker.connectors.directory import DirectoryConnector, close
from worker.errors import TargetError

# LDAP_SERVER_POLICY_HINTS (flags 1: enforce the password policy, history included, on a
# reset); not critical, so a DC that does not know it still takes the change.
POLICY_HINTS = ("1.2.840.113556.1.4.2239", False, b"\x30\x03\x02\x01\x01")
ADMIN_RIDS = {500, 502}                 # the built-in Administrator, krbtgt
ADMIN_GROUP_RIDS = {512, 518, 519}      # Domain Admins, Schema Admins, Enterprise Admins
BUILTIN_ADMINISTRATORS = "S-1-5-32-544"

# The Win32 code at the start of a DC's diagnostic message ("0000052D: ...").
WIN32_CODE = re.compile(r"\A([0-9A-Fa-f]{8}):")
REFUSALS = {
    0x52D: ("policy_refused", "the new password does not meet the domain's password policy "
                              "(too short, not complex enough, or used before)"),
    0x5: ("privilege_failed", "the privileged account may not reset this account's password "
                              "(it needs the Reset Password right on it)"),
    0x2035: ("target_error", "the domain controller will not set it (a password is only set "
                             "over an encrypted connection, by an account allowed to)"),
}
# The `data` code of a refused bind ("... AcceptSecurityContext error, data 533, v1db1").
BIND_DATA = re.compile(r"\bdata ([0-9a-fA-F]+)\b")
NOT_ALLOWED = {
    "530": "it may not log in at this time",
    "531": "it may not log in from this computer",
    "532": "its password has expired",
    "533": "the account is disabled",
    "701": "the account has expired",
    "773": "its password must be changed at the next logon",
    "775": "the account is locked out",
}


def sid_text(raw: bytes) -> str:
    """A binary SID as S-1-5-21-...; ValueError when it is not one."""
    if len(raw) < 8 or raw[0] != 1 or len(raw) != 8 + 4 * raw[1]:
        raise ValueError("not a SID")
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack(f"<{raw[1]}I", raw[8:])
    return "-".join(["S", "1", str(authority), *map(str, subs)])


def is_admin_group(sid: str) -> bool:
    parts = sid.split("-")
    return sid == BUILTIN_ADMINISTRATORS or (sid.startswith("S-1-5-21-")
                                             and int(parts[-1]) in ADMIN_GROUP_RIDS)


class ActiveDirectoryConnector(DirectoryConnector):
    # A domain may let the previous password in for a while ("old password allowed period",
    # 60 minutes by default on Windows and Samba): that is its policy, not a change that failed,
    # so the new password's fresh bind is the proof.
    old_secret_refused = False

    def __init__(self, command, targets):
        super().__init__(command, targets)
        self._naming_context: str | None = command.params.base_dn

    def bind_name(self, name: str) -> str:
        if "@" in name or "=" in name:
            return name
        return f"{name}@{self._dns_domain()}"

    def find(self, conn: ldap3.Connection) -> str:
        c = self.command
        attribute = "userPrincipalName" if "@" in c.username else "sAMAccountName"
        entry = self.search_one(conn, self._base(conn),
                                f"(&(objectCategory=person)(objectClass=user)"
                                f"({attribute}={{username}}))", c.username,
                                ["objectSid", "adminCount"])
        if c.secure_mode:
            self._refuse_privileged(conn, entry)
        return entry["dn"]

    def set_password(self, conn: ldap3.Connection, dn: str, secret: str) -> bool:
        value = f'"{secret}"'.encode("utf-16-le")
        return conn.modify(dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [value])]},
                           controls=[POLICY_HINTS])

    def explain(self, result: dict) -> tuple[str, str]:
        message = result.get("message") or ""
        code = WIN32_CODE.match(message)
        if code and int(code.group(1), 16) in REFUSALS:
            error, words = REFUSALS[int(code.group(1), 16)]
            detail = self._quote(self._detail(message))
            return error, f"{words}{f' ({detail})' if detail else ''}"
        if result.get("result") == 50:        # insufficientAccessRights, whatever the code
            return REFUSALS[0x5]
        return super().explain(result)

    def bind_refused(self, result: dict) -> str | None:
        data = BIND_DATA.search(result.get("message") or "")
        code = data.group(1).lower() if data else "52e"
        return NOT_ALLOWED.get(code, f"the domain controller refused it (data {code})"
                               if code not in ("52e", "525") else None)

    # Helpers.

    def _refuse_privileged(self, conn: ldap3.Connection, entry: dict) -> None:
        attributes = entry.get("raw_attributes", {})
        sid = (attributes.get("objectSid") or [b""])[0]
        rid = int(sid_text(sid).rsplit("-", 1)[-1]) if sid else None
        admin_count = (attributes.get("adminCount") or [b"0"])[0]
        why = None
        if rid in ADMIN_RIDS:
            why = "is the domain's built-in Administrator or krbtgt"
        elif admin_count.strip() == b"1":
            why = "is marked adminCount=1 (a member, or former member, of a protected group)"
        elif any(is_admin_group(sid_text(group)) for group in self._token_groups(conn, entry)):
            why = "is a member of Domain, Enterprise or Schema Admins or Administrators"
        if why:
            raise TargetError("protected", f"{self.where}: {self.command.username} {why}, which "
                                           f"secure mode does not rotate; nothing was changed")

    def _token_groups(self, conn: ldap3.Connection, entry: dict) -> list[bytes]:
        """Every group the account is in, nested ones too (the DC computes tokenGroups on a
        base search); TargetError when it cannot be read, as secure mode cannot tell then."""
        try:
            conn.search(entry["dn"], "(objectClass=*)", ldap3.BASE, attributes=["tokenGroups"])
        except LDAPException as exc:
            raise TargetError("lookup_failed", f"{self.where}: reading the groups of "
                                               f"{self.command.username} failed: "
                                               f"{self._quote(str(exc))}") from None
        found = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if conn.result.get("result") != 0 or not found:
            raise TargetError("lookup_failed", f"{self.where}: cannot read the groups of "
                                               f"{self.command.username}, so secure mode cannot "
                                               f"tell whether it is an administrator: "
                                               f"{self.said(conn.result)}")
        return found[0].get("raw_attributes", {}).get("tokenGroups", [])

    def _base(self, conn: ldap3.Connection) -> str:
        """`base_dn`, else the domain's naming context (the rootDSE's defaultNamingContext)."""
        if self._naming_context is None:
            try:
                conn.search("", "(objectClass=*)", ldap3.BASE,
                            attributes=["defaultNamingContext"])
            except LDAPException as exc:
                raise TargetError("lookup_failed", f"{self.where}: reading the rootDSE failed: "
                                                   f"{self._quote(str(exc))}") from None
            found = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
            context = found[0]["attributes"].get("defaultNamingContext") if found else None
            if not context:
                raise TargetError("no_base_dn", f"{self.where}: the directory names no "
                                                f"defaultNamingContext: set base_dn")
            self._naming_context = context if isinstance(context, str) else context[0]
        return self._naming_context

    def _dns_domain(self) -> str:
        """The DNS name of the domain (DC=corp,DC=example,DC=com: corp.example.com), from
        `base_dn` or an anonymous read of the rootDSE, which every DC allows."""
        if self._naming_context is None:
            conn = self.open()
            try:
                self._base(conn)
            finally:
                close(conn)
        labels = [value for attribute, value, _ in parse_dn(self._naming_context)
                  if attribute.lower() == "dc"]
        if not labels:
            raise TargetError("login_name", f"{self.where}: base_dn has no DC= parts to bind "
                                            f"{self.command.login_username} by; name it by UPN")
        return ".".join(labels)

    @staticmethod
    def _detail(message: str) -> str:
        """What a DC adds in words after its code (Samba: "the password is too short. It
        should be equal or longer than 7 characters!"; Windows adds only DSIDs)."""
        text = WIN32_CODE.sub("", message).strip()
        text = re.sub(r"\A(Constraint violation - )?(check_password_restrictions: )?", "", text)
        return "" if not text or "DSID-" in text else text.rstrip("!. ")[:200]
