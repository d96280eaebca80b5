"""PostgreSQL clusters of the tests' own, with real password checking.

The machine's PostgreSQL trusts 127.0.0.1, which proves nothing about passwords, so this plugin
runs `initdb` and `pg_ctl` (from the Debian packages) as the `postgres` OS user in a temporary
directory: `scram-sha-256` for 127.0.0.1 in pg_hba.conf, every statement logged to a file there
(`log_statement=all`), `pg_stat_statements` loaded, on a free loopback port. The cluster is
stopped and its directory removed at the end of the session, also when tests fail.

Load with ``pytest_plugins = ["tests.pg_server"]``; use the ``pg_server`` fixture (and
``pg_trust_server``, a cluster that lets in any password, for the proof that must fail there).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.certs import make_certificates
from tests.processes import free_port

ADMIN = ("kt_admin", "kt-admin-pw")       # the cluster's superuser (initdb's bootstrap role)
RUN_AS = ["runuser", "-u", "postgres", "--"]   # initdb and postgres refuse to run as root


def bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) not installed")
    return found[-1].parent



class PgServer:
    """One cluster: where it listens, its superuser, its log, and helpers to look at roles."""

    def __init__(self, auth: str):
        self.auth = auth
        self.address, self.port = "127.0.0.1", free_port()
        self.admin, self.admin_password = ADMIN
        self.dir = Path(tempfile.mkdtemp(prefix="keyturn-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self._bin = bin_dir()

    def create(self) -> None:
        """initdb, our settings, start, and pg_stat_statements."""
        shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        self._as_postgres("initdb", "-D", self.data, "-U", self.admin, f"--pwfile={pwfile}",
                          "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync")
        pwfile.unlink()
        self.certificate = make_certificates(self.dir)
        for path in self.certificate:
            shutil.chown(path, "postgres", "postgres")
        self.certificate.key.chmod(0o600)
        (self.data / "pg_hba.conf").write_text(f"host all all 127.0.0.1/32 {self.auth}\n")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\n"
                       "password_encryption = 'scram-sha-256'\nlog_statement = 'all'\n"
                       "log_connections = on\nshared_preload_libraries = 'pg_stat_statements'\n"
                       f"ssl = on\nssl_cert_file = '{self.certificate.cert}'\n"
                       f"ssl_key_file = '{self.certificate.key}'\nfsync = off\n")
        self.start()
        self.sql("CREATE EXTENSION pg_stat_statements")

    def _as_postgres(self, program: str, *args, check: bool = True) -> None:
        subprocess.run([*RUN_AS, self._bin / program, *map(str, args)], check=check,
                       capture_output=True, timeout=120, cwd=self.dir)

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60", "start")

    def restart(self) -> None:
        """Restart the server: every open connection to it dies."""
        self._as_postgres("pg_ctl", "-D", self.data, "-l", self.log_path, "-m", "fast", "-w",
                          "restart")

    def close(self) -> None:
        """Stop (if it runs) and remove every file of the cluster."""
        if (self.data / "postmaster.pid").exists():
            self._as_postgres("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop",
                              check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, user: str | None = None, password: str | None = None) -> psycopg.Connection:
        return psycopg.connect(host=self.address, port=self.port, dbname="postgres",
                               user=user or self.admin, password=password or self.admin_password,
                               connect_timeout=5, autocommit=True)

    def sql(self, query, *params) -> list[tuple]:
        """Run `query` (a string or a psycopg.sql composition) as the superuser."""
        with self.connect() as conn:
            cursor = conn.execute(query, params or None)
            return cursor.fetchall() if cursor.description else []

    def create_role(self, name: str, password: str, options: str = "LOGIN") -> None:
        """(Re)create role `name` with `password` (sent as a SCRAM verifier) and `options`
        (SQL keywords: the tests' own constants)."""
        self.sql(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        with self.connect() as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(),
                                                    b"scram-sha-256").decode()
            conn.execute(sql.SQL("CREATE ROLE {} " + options + " PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(verifier)))

    def verifier(self, name: str) -> str | None:
        """What pg_authid holds for the role: changes whenever its password is set."""
        rows = self.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", name)
        return rows[0][0] if rows else None

    def logs_in(self, name: str, password: str) -> bool:
        try:
            self.connect(name, password).close()
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return False
            raise
        return True

    def statements(self) -> str:
        """Every statement pg_stat_statements has seen, one a line."""
        return "\n".join(row[0] for row in self.sql("SELECT query FROM pg_stat_statements"))


@pytest.fixture(scope="session")
def pg_server():
    """A cluster that checks passwords (scram-sha-256)."""
    yield from _cluster("scram-sha-256")


@pytest.fixture(scope="session")
def pg_trust_server():
    """A cluster whose pg_hba.conf says `trust`: it lets in any password."""
    yield from _cluster("trust")


def _cluster(auth: str):
    server = PgServer(auth)
    try:
        server.create()
        yield server
    finally:
        server.close()
