"""A MariaDB server of the tests' own, with real password checking.

`mariadb-install-db` makes a datadir in a temporary directory, and `mariadbd` serves it on a free
loopback port with the general log and the binary log on (files in that directory, so tests can
look for secrets in them) and TLS with a certificate from a CA of its own. Root gets a password
set over the Unix socket, and TCP logins must then give it. The server is stopped and the
directory removed at the end of the session, also when tests fail.

Load with ``pytest_plugins = ["tests.mariadb_server"]`` and use the ``mariadb`` fixture.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql
import pytest

from tests.certs import make_certificates
from tests.processes import free_port
from worker.connectors.mysql import native_hash

ROOT_PASSWORD = "kt-root-pw-mariadb"
START_TIMEOUT = 60.0



class MariaDB:
    """One server: where it listens, its CA, its logs, and root's SQL over the socket."""

    def __init__(self):
        self.address, self.port = "127.0.0.1", free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="keyturn-mariadb-"))
        self.socket = self.dir / "sock"
        self.general_log_path = self.dir / "general.log"
        self.ca_file = self.dir / "ca.pem"
        self.process: subprocess.Popen | None = None
        self.root_password = ""                  # until `start` sets it

    def start(self) -> None:
        # Its own temporary directory: two servers bootstrapping at once in /tmp (parallel test
        # processes) failed on "Error on delete of '/tmp/#sql-temptable-...'".
        (self.dir / "tmp").mkdir()
        run(["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.dir / 'data'}",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             f"--tmpdir={self.dir / 'tmp'}"], self.dir)
        make_certificates(self.dir)
        with (self.dir / "error.log").open("wb") as errors:
            self.process = subprocess.Popen(
                ["mariadbd", "--no-defaults", "--user=root", f"--datadir={self.dir / 'data'}",
                 f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
                 "--skip-name-resolve", "--general-log=1",
                 f"--general-log-file={self.general_log_path}", f"--log-bin={self.dir / 'binlog'}",
                 "--server-id=1", f"--pid-file={self.dir / 'pid'}", f"--tmpdir={self.dir / 'tmp'}",
                 f"--ssl-cert={self.dir / 'server.pem'}", f"--ssl-key={self.dir / 'server.key'}",
                 "--innodb-buffer-pool-size=16M"],
                stdin=subprocess.DEVNULL, stdout=errors, stderr=subprocess.STDOUT)
        self._wait_ready()
        # root's entries other than localhost and 127.0.0.1 (the machine's name, ::1) go
        for host, in self.sql("SELECT Host FROM mysql.user WHERE User = 'root' "
                              "AND Host NOT IN ('localhost', '127.0.0.1')"):
            self.sql("DROP USER 'root'@%s", host)
        hashed = native_hash(ROOT_PASSWORD)
        self.sql("ALTER USER 'root'@'localhost' IDENTIFIED BY PASSWORD %s, "
                 "'root'@'127.0.0.1' IDENTIFIED BY PASSWORD %s", hashed, hashed)
        self.root_password = ROOT_PASSWORD

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                pymysql.connect(unix_socket=str(self.socket), user="root").close()
                return
            except pymysql.MySQLError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "error.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"mariadbd did not start:\n{log}")
                time.sleep(0.1)

    def sql(self, statement: str, *args) -> list[tuple]:
        """Run one statement as root over the socket (values bound by PyMySQL)."""
        with pymysql.connect(unix_socket=str(self.socket), user="root",
                             password=self.root_password,
                             autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute(statement, args or None)
            return list(cursor.fetchall())

    def create_user(self, user: str, host: str, password: str, *grants: str) -> None:
        """A fresh account (dropped first if it exists) with a hashed password, so the plaintext
        never reaches the server's logs; `grants` are privilege lists ON *.*."""
        self.sql("DROP USER IF EXISTS %s@%s", user, host)
        self.sql("CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", user, host, native_hash(password))
        for grant in grants:
            self.sql(f"GRANT {grant} ON *.* TO %s@%s", user, host)

    def stored_hash(self, user: str, host: str) -> str:
        (hashed,), = self.sql("SELECT authentication_string FROM mysql.user "
                              "WHERE User = %s AND Host = %s", user, host)
        return hashed

    def password_works(self, user: str, password: str) -> bool:
        try:
            pymysql.connect(host=self.address, port=self.port, user=user,
                            password=password.encode(), connect_timeout=5).close()
            return True
        except pymysql.OperationalError as exc:
            if exc.args[0] == 1045:
                return False
            raise

    def general_log(self) -> str:
        self.sql("FLUSH GENERAL LOGS")
        return self.general_log_path.read_text(errors="replace")

    def binlog(self) -> str:
        """Every statement in the binary log, decoded by mariadb-binlog."""
        self.sql("FLUSH BINARY LOGS")
        files = sorted(str(path) for path in self.dir.glob("binlog.[0-9]*"))
        return subprocess.run(["mariadb-binlog", "--no-defaults", *files], check=True,
                              capture_output=True, timeout=60).stdout.decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()                 # SIGTERM: mariadbd shuts down cleanly
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=120)
    if done.returncode:
        pytest.fail(f"{argv[0]} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def mariadb():
    if shutil.which("mariadbd") is None:
        pytest.fail("mariadbd is not installed (.ci/prepare installs mariadb-server)")
    server = MariaDB()
    try:
        server.start()
        yield server
    finally:
        server.stop()
