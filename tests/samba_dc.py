"""A real Active Directory domain controller for the tests: Samba (`samba-tool domain
provision --server-role=dc --dns-backend=NONE`) in a temporary directory of its own, run as
`samba -i` with only its LDAP service, bound to a loopback address of its own in 127.88.0.0/16
(claimed, so parallel test workers each have theirs), LDAPS on 636 with a certificate of a test CA (tests.certs). The domain keeps Samba's
default password policy (complexity on, at least 7 characters, history 24). Provisioned once
per session (a few seconds) and stopped at the end, even when it fails."""
from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import ldap3
import pytest
from ldap3.protocol.formatters.formatters import format_sid

from tests.certs import make_certificates
from tests.processes import claim_address
from tests.server_process import server_in_temp_dir, stop_process, wait_until_answering

REALM, DOMAIN = "KEYTURN.TEST", "KEYTURN"
BASE_DN = "DC=keyturn,DC=test"
USERS = f"CN=Users,{BASE_DN}"
ADMIN = ("Administrator", "Admin-pw-Samba-1")
START_SECONDS = 60
RESET_PASSWORD = "00299570-246d-11d0-a768-00aa006e0529"   # the extended right's GUID


class SambaDC:
    """One provisioned, running DC; `admin()` is a connection bound as its Administrator."""

    def __init__(self, directory: Path):
        self.directory = directory
        # LDAP and LDAPS on their own ports, so an address of its own (parallel test workers)
        self.address, self._address_lock = claim_address("127.88", (389, 636))
        self.port = 636
        self.log_path = directory / "samba.log"
        certs = make_certificates(directory, self.address)
        self.ca = certs.ca
        self.options = [f"--option=interfaces={self.address}/8", "--option=bind interfaces only=yes",
                        "--option=server services=ldap", f"--option=log file={self.log_path}",
                        # its pid file in its own directory, not the machine's /run/samba
                        f"--option=pid directory={directory}",
                        "--option=old password allowed period=0",
                        "--option=tls enabled=yes", f"--option=tls keyfile={certs.key}",
                        f"--option=tls certfile={certs.cert}", f"--option=tls cafile={certs.ca}"]
        done = subprocess.run(["samba-tool", "domain", "provision", f"--targetdir={directory}/dc",
                               "--server-role=dc", "--dns-backend=NONE", f"--realm={REALM}",
                               f"--domain={DOMAIN}", f"--adminpass={ADMIN[1]}",
                               "--host-name=ktdc", *self.options],
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"samba-tool domain provision failed: {done.stderr[-2000:]}")
        self.config = directory / "dc" / "etc" / "smb.conf"
        with (directory / "samba.out").open("wb") as out:
            self.process = subprocess.Popen(["samba", "-i", "-d1", "-s", str(self.config),
                                             *self.options],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def wait_ready(self) -> None:
        wait_until_answering(self.process, lambda: self.admin().unbind(),
                             (ldap3.core.exceptions.LDAPException, RuntimeError), START_SECONDS,
                             lambda: f"samba exited: {self.log_text()[-2000:]}", pause=0.2)

    def connect(self, name: str, password: str) -> ldap3.Connection:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca))
        server = ldap3.Server(self.address, port=self.port, use_ssl=True, tls=tls,
                              get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(server, name, password, receive_timeout=10)

    def admin(self) -> ldap3.Connection:
        conn = self.connect(f"{ADMIN[0]}@{REALM.lower()}", ADMIN[1])
        conn.open()
        if not conn.bind():
            raise RuntimeError(f"the DC refused its Administrator: {conn.result}")
        return conn

    def add_user(self, name: str, password: str, *, groups: tuple[str, ...] = ()) -> str:
        """An enabled user `name` (sAMAccountName, and UPN name@keyturn.test) with `password`,
        in `groups` (CNs under CN=Users or CN=Builtin); returns its DN."""
        dn = f"CN={name},{USERS}"
        conn = self.admin()
        try:
            if not conn.add(dn, ["top", "person", "organizationalPerson", "user"],
                            {"sAMAccountName": name, "userPrincipalName": f"{name}@keyturn.test",
                             "unicodePwd": f'"{password}"'.encode("utf-16-le"),
                             "userAccountControl": 512}):
                raise RuntimeError(f"cannot add {dn}: {conn.result['message']}")
            for group in groups:
                where = "Builtin" if group == "Administrators" else "Users"
                if not conn.modify(f"CN={group},CN={where},{BASE_DN}",
                                   {"member": [(ldap3.MODIFY_ADD, [dn])]}):
                    raise RuntimeError(f"cannot add {dn} to {group}: {conn.result['message']}")
        finally:
            conn.unbind()
        return dn

    def add_group(self, name: str, *, member_of: str) -> str:
        """A global group `name` under CN=Users, itself a member of group `member_of`."""
        dn = f"CN={name},{USERS}"
        conn = self.admin()
        try:
            conn.add(dn, ["top", "group"], {"sAMAccountName": name})
            conn.modify(f"CN={member_of},{USERS}", {"member": [(ldap3.MODIFY_ADD, [dn])]})
        finally:
            conn.unbind()
        return dn

    def grant_reset_password(self, trustee: str, on: str) -> None:
        """Give the account `trustee` (a sAMAccountName) the Reset Password extended right on
        the entry `on`, as a domain's delegation to a help desk would."""
        conn = self.admin()
        try:
            conn.search(BASE_DN, f"(sAMAccountName={trustee})", attributes=["objectSid"])
            sid = format_sid(conn.entries[0].objectSid.raw_values[0])
        finally:
            conn.unbind()
        done = subprocess.run(["samba-tool", "dsacl", "set", "-H",
                               f"{self.directory}/dc/private/sam.ldb", f"--objectdn={on}",
                               f"--sddl=(OA;;CR;{RESET_PASSWORD};;{sid})"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"samba-tool dsacl set failed: {done.stderr[-1000:]}")

    def logs_in(self, name: str, password: str) -> bool:
        """A fresh simple bind as `name` (a DN or a UPN)."""
        conn = self.connect(name, password)
        try:
            conn.open()
            return conn.bind()
        finally:
            conn.unbind()

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace")
                         for path in (self.directory / "samba.out", self.log_path)
                         if path.exists())

    def stop(self) -> None:
        stop_process(self.process, 20)
        os.close(self._address_lock)


@pytest.fixture(scope="session")
def samba_dc():
    """A Samba AD DC of the tests' own, domain KEYTURN.TEST."""
    def start(directory: Path) -> SambaDC:
        server = SambaDC(directory)
        server.wait_ready()
        return server
    with server_in_temp_dir("kt-samba-", start) as server:
        yield server
