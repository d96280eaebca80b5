"""A real OpenLDAP `slapd` for the tests, in a temporary directory of its own (slapd.conf, an
mdb database), on free loopback ports: LDAPS with a certificate of a test CA (tests.certs),
and plain LDAP for StartTLS, which refuses a password bind before TLS (`security
simple_bind=128`). Passwords are checked for real ({SSHA} hashes); the root DN is the
administrator, and `cn=pwadmin` may write others' passwords but is not root. slapd logs at
level `stats` (what an operator runs in production) to a file the tests read. Started once
per session and stopped at the end, even when it fails."""
from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import ldap3
import pytest

from tests.certs import make_certificates
from tests.processes import free_port
from tests.server_process import server_in_temp_dir, stop_process, wait_until_answering

SUFFIX = "dc=keyturn,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
ROOT = (f"cn=admin,{SUFFIX}", "root-pw-slapd")
PWADMIN = (f"cn=pwadmin,{SUFFIX}", "pwadmin-pw-slapd")
START_SECONDS = 15

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
security simple_bind=128
password-hash {{SSHA}}

database mdb
maxsize 67108864
suffix "{suffix}"
rootdn "{root}"
rootpw {root_hash}
directory {dir}/db
access to attrs=userPassword
    by self write
    by dn.exact="{pwadmin}" write
    by anonymous auth
    by * none
access to *
    by * read
"""


class SlapdServer:
    """One running slapd; `admin()` is a connection bound as its root DN."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.address = "127.0.0.1"
        self.port = free_port()                  # LDAPS
        self.plain_port = free_port()            # LDAP + StartTLS
        self.log_path = directory / "slapd.log"
        certs = make_certificates(directory)
        self.ca = certs.ca
        (directory / "db").mkdir()
        root_hash = subprocess.run(["slappasswd", "-s", ROOT[1]], capture_output=True,
                                   text=True, check=True).stdout.strip()
        config = directory / "slapd.conf"
        config.write_text(CONFIG.format(dir=directory, ca=certs.ca, cert=certs.cert,
                                        key=certs.key, suffix=SUFFIX, root=ROOT[0],
                                        root_hash=root_hash, pwadmin=PWADMIN[0]))
        urls = f"ldaps://{self.address}:{self.port}/ ldap://{self.address}:{self.plain_port}/"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(["slapd", "-f", str(config), "-h", urls, "-d", "stats"],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def wait_ready(self) -> None:
        wait_until_answering(self.process, lambda: self.admin().unbind(),
                             ldap3.core.exceptions.LDAPException, START_SECONDS,
                             lambda: f"slapd exited: {self.log_text()[-2000:]}")

    def connect(self, dn: str, password: str) -> ldap3.Connection:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca))
        server = ldap3.Server(self.address, port=self.port, use_ssl=True, tls=tls,
                              get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(server, dn, password, receive_timeout=5)

    def admin(self) -> ldap3.Connection:
        conn = self.connect(*ROOT)
        conn.open()
        if not conn.bind():
            raise RuntimeError(f"slapd refused its root DN: {conn.result}")
        return conn

    def seed(self) -> None:
        conn = self.admin()
        conn.add(SUFFIX, ["dcObject", "organization"], {"dc": "keyturn", "o": "keyturn tests"})
        conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
        conn.add(PWADMIN[0], ["organizationalRole", "simpleSecurityObject"],
                 {"cn": "pwadmin", "userPassword": PWADMIN[1]})
        conn.unbind()

    def add_user(self, uid: str, password: str, *, under: str = PEOPLE) -> str:
        """A person entry `uid=<uid>,<under>` with `password` (set by Password Modify, so slapd
        stores its hash); returns its DN."""
        conn = self.admin()
        dn = f"uid={ldap3.utils.dn.escape_rdn(uid)},{under}"
        if not conn.add(dn, ["inetOrgPerson"], {"uid": uid, "cn": uid, "sn": uid}):
            raise RuntimeError(f"cannot add {dn}: {conn.result}")
        if conn.extend.standard.modify_password(user=dn, new_password=password) is not True:
            raise RuntimeError(f"cannot set the password of {dn}: {conn.result}")
        conn.unbind()
        return dn

    def password_of(self, dn: str) -> str:
        """The stored userPassword value (a hash)."""
        conn = self.admin()
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword"])
        value = conn.entries[0].userPassword.value
        value = value.decode() if isinstance(value, bytes) else value
        conn.unbind()
        return value

    def logs_in(self, dn: str, password: str) -> bool:
        conn = self.connect(dn, password)
        try:
            conn.open()
            return conn.bind()
        finally:
            conn.unbind()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def slapd():
    """A slapd of the tests' own, seeded with ou=people and cn=pwadmin."""
    def start(directory: Path) -> SlapdServer:
        server = SlapdServer(directory)
        server.wait_ready()
        server.seed()
        return server
    with server_in_temp_dir("kt-slapd-", start) as server:
        yield server
