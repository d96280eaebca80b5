"""worker.rotate on a real PostgreSQL cluster of the tests' own (scram-sha-256, every statement
logged): each outcome of the rotation protocol, checked on the server itself (logins with the new
and old passwords, pg_authid, its log file and pg_stat_statements)."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg import sql

from shared.messages import AssetTarget, RotateCommand
from tests.certs import make_certificates
from tests.processes import free_port
from worker.rotate import rotate

HOSTILE = ["""it's "quoted" \\ back\\slash {{ x }} $1 $$ %s %(x)s ü 密码""",
           "'; DROP ROLE kt_admin; --",
           "  spaces  " + "x" * 200]


def command(server, username: str, new_secret: str | None = None, *, login=None,
            port: int | None = None, **fields) -> RotateCommand:
    login = login or (server.admin, server.admin_password)
    asset = AssetTarget(name="db-1", address=server.address, port=port or server.port,
                        platform="postgresql")
    return RotateCommand(record_id=7, zone="dmz", asset=asset, login_username=login[0],
                         login_secrets=list(login[1:]), username=username, new_secret=new_secret,
                         **{"timeout": 5, "attempt": 1, "not_after": time.time() + 600} | fields)


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def new_role(server, prefix: str = "app", options: str = "LOGIN") -> tuple[str, str]:
    """A role of this test's own, and its password."""
    name, password = fresh(prefix).replace("-", "_"), fresh("old")
    server.create_role(name, password, options)
    return name, password


def log_since(server, offset: int) -> str:
    return server.log_path.read_text()[offset:]


def assert_not_on_server(server, *secrets: str) -> None:
    """Neither the server's log (every statement) nor pg_stat_statements has seen a secret."""
    seen = server.log_path.read_text() + server.statements()
    assert "ALTER ROLE" in seen                               # the log does record statements
    for secret in secrets:
        assert secret not in seen


def test_the_new_password_logs_in_the_old_is_refused_and_no_plaintext_reaches_the_server(
        pg_server, targets):
    name, old = new_role(pg_server)
    other, other_pw = new_role(pg_server)
    other_verifier, new = pg_server.verifier(other), fresh("new")

    result = rotate(command(pg_server, name, new, old_secret=old), targets, "w1", False)

    assert (result.status, result.error_code, result.error) == ("success", None, None)
    assert (result.login_index, result.worker_id) == (0, "w1")
    assert pg_server.logs_in(name, new) and not pg_server.logs_in(name, old)
    assert pg_server.verifier(name).startswith("SCRAM-SHA-256$")
    assert pg_server.verifier(other) == other_verifier and pg_server.logs_in(other, other_pw)
    assert_not_on_server(pg_server, new, old)


def test_the_privileged_session_is_pooled_between_commands(pg_server, targets):
    """A batch logs the privileged role in once, not once per role; a pooled connection that
    died with a server restart is replaced."""
    roles = [new_role(pg_server) for _ in range(3)]
    offset = len(pg_server.log_path.read_text())
    for name, _ in roles:
        assert rotate(command(pg_server, name, fresh()), targets, "w1", False).status == "success"
    assert log_since(pg_server, offset).count(f"authorized: user={pg_server.admin} ") == 1

    many = [name for name, _ in (new_role(pg_server) for _ in range(12))]
    offset = len(pg_server.log_path.read_text())
    with ThreadPoolExecutor(4) as pool:             # concurrent commands: one connection each
        results = list(pool.map(lambda name: rotate(command(pg_server, name, fresh()), targets,
                                                    "w1", False), many))
    assert {result.status for result in results} == {"success"}
    assert log_since(pg_server, offset).count(f"authorized: user={pg_server.admin} ") <= 3

    pg_server.restart()
    name, _ = roles[0]
    result = rotate(command(pg_server, name, fresh()), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)


@pytest.mark.parametrize("password", HOSTILE, ids=range(len(HOSTILE)))
def test_role_names_that_need_quoting_and_hostile_passwords_are_set_exactly(pg_server, targets,
                                                                             password):
    name = f"App-User.{uuid.uuid4().hex[:6]}"
    pg_server.create_role(name, "old-pw")
    result = rotate(command(pg_server, name, password, old_secret="old-pw"), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert pg_server.logs_in(name, password) and not pg_server.logs_in(name, "old-pw")
    assert pg_server.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", pg_server.admin)
    assert_not_on_server(pg_server, password)


def test_a_createrole_role_may_rotate_and_the_first_working_login_is_reported(pg_server, targets):
    creator, creator_pw = new_role(pg_server, "creator", "LOGIN CREATEROLE")
    name, old = new_role(pg_server)
    pg_server.sql(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(   # PostgreSQL 16+ wants it
        sql.Identifier(name), sql.Identifier(creator)))
    result = rotate(command(pg_server, name, new := fresh(), login=(creator, "stale", creator_pw)),
                    targets, "w1", False)
    assert (result.status, result.login_index, result.error) == ("success", 1, None)
    assert pg_server.logs_in(name, new)


def test_wrong_privileged_password_fails_and_changes_nothing(pg_server, targets):
    name, old = new_role(pg_server)
    before = pg_server.verifier(name)
    result = rotate(command(pg_server, name, fresh(), login=(pg_server.admin, "not-the-pw")),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "login_failed")
    assert result.login_index is None
    assert "db-1" in result.error and pg_server.admin in result.error
    assert "not-the-pw" not in result.error
    assert pg_server.verifier(name) == before and pg_server.logs_in(name, old)


def test_a_server_that_is_down_is_unreachable(pg_server, targets):
    result = rotate(command(pg_server, "app", fresh(), port=free_port()), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "unreachable")
    assert result.error.endswith("cannot connect: Connection refused") and "db-1" in result.error


def test_a_missing_role_fails_before_anything_is_changed(pg_server, targets):
    offset = len(pg_server.log_path.read_text())
    result = rotate(command(pg_server, "nobody_here", fresh()), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "no_such_account")
    assert "nobody_here" in result.error and "db-1" in result.error
    assert "ALTER ROLE" not in log_since(pg_server, offset)


def test_a_role_without_createrole_fails_privilege_failed(pg_server, targets):
    plain, plain_pw = new_role(pg_server, "plain")
    name, old = new_role(pg_server)
    before = pg_server.verifier(name)
    result = rotate(command(pg_server, name, fresh(), login=(plain, plain_pw)), targets, "w1",
                    False)
    assert (result.status, result.error_code) == ("failed", "privilege_failed")
    assert plain in result.error and name in result.error and "CREATEROLE" in result.error
    assert pg_server.verifier(name) == before and pg_server.logs_in(name, old)


def test_secure_mode_refuses_a_superuser_and_without_it_one_is_rotated(pg_server, targets):
    name, old = new_role(pg_server, "dba", "LOGIN SUPERUSER")
    before = pg_server.verifier(name)
    refused = rotate(command(pg_server, name, fresh()), targets, "w1", False)
    assert (refused.status, refused.error_code) == ("failed", "protected")
    assert "superuser" in refused.error and pg_server.verifier(name) == before

    allowed = rotate(command(pg_server, name, new := fresh(), secure_mode=False), targets, "w1",
                     False)
    assert allowed.status == "success" and pg_server.logs_in(name, new)


def test_a_server_that_trusts_everyone_is_never_a_success(pg_trust_server, targets):
    name, _ = new_role(pg_trust_server)
    result = rotate(command(pg_trust_server, name, fresh()), targets, "w1", False)
    assert (result.status, result.error_code) == ("unverified", "no_password_check")
    assert "does not check passwords" in result.error


def test_verify_finds_the_working_candidate(pg_server, targets):
    name, current = new_role(pg_server)
    found = rotate(command(pg_server, name, action="verify", candidates=["not-it", current]),
                   targets, "w1", False)
    assert (found.status, found.working_index) == ("success", 1)
    none = rotate(command(pg_server, name, action="verify", candidates=["not-it"]), targets,
                  "w1", False)
    assert (none.status, none.error_code) == ("failed", "no_candidate")


class RoleLocked:
    """An open transaction that has changed the role, so an ALTER ROLE on it waits."""

    def __init__(self, server, name: str):
        self.server, self.conn = server, server.connect()
        self.conn.autocommit = False
        self.conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 5").format(sql.Identifier(name)))

    def waiting_pid(self) -> int:
        """The keyturn backend waiting for this lock."""
        for _ in range(100):
            rows = self.server.sql("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                   "'keyturn' AND wait_event_type = 'Lock'")
            if rows:
                return rows[0][0]
            time.sleep(0.05)
        raise AssertionError("no keyturn statement waits for the lock")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def test_a_change_that_waits_past_its_timeout_is_cancelled_and_fails(pg_server, targets):
    name, old = new_role(pg_server)
    locked = RoleLocked(pg_server, name)
    try:
        result = rotate(command(pg_server, name, fresh(), timeout=1), targets, "w1", False)
    finally:
        locked.release()
    assert (result.status, result.error_code) == ("failed", "timeout")
    assert pg_server.logs_in(name, old)


def test_a_connection_lost_after_the_change_was_sent_is_unverified(pg_server, targets):
    name, old = new_role(pg_server)
    locked = RoleLocked(pg_server, name)
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(rotate, command(pg_server, name, fresh()), targets, "w1", False)
            pg_server.sql("SELECT pg_terminate_backend(%s)", locked.waiting_pid())
            result = running.result(timeout=30)
    finally:
        locked.release()
    assert (result.status, result.error_code) == ("unverified", "connection_lost")
    assert "may have changed" in result.error
    assert pg_server.logs_in(name, old)


def test_a_change_that_could_not_end_within_the_validity_is_not_sent(pg_server, targets):
    name, old = new_role(pg_server)
    offset = len(pg_server.log_path.read_text())
    late = command(pg_server, name, fresh(), timeout=30, not_after=time.time() + 10)
    result = rotate(late, targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "expired")
    assert "ALTER ROLE" not in log_since(pg_server, offset) and pg_server.logs_in(name, old)


@pytest.mark.parametrize("tls", ["require", "verify-full"])
def test_tls_to_the_server_and_its_certificate_checked(pg_server, targets, tls):
    name, old = new_role(pg_server)
    new, offset = fresh(), len(pg_server.log_path.read_text())
    params = {"tls": tls} | ({"tls_ca": str(pg_server.certificate.ca)} if tls == "verify-full" else {})
    result = rotate(command(pg_server, name, new, params=params), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert pg_server.logs_in(name, new)
    connections = [line for line in log_since(pg_server, offset).splitlines()
                   if "connection authorized" in line]
    assert connections and all("SSL enabled" in line for line in connections)


def test_a_certificate_from_another_ca_is_refused_before_anything_is_sent(pg_server, targets,
                                                                        tmp_path):
    name, old = new_role(pg_server)
    other = make_certificates(tmp_path)
    params = {"tls": "verify-full", "tls_ca": str(other.ca)}
    result = rotate(command(pg_server, name, fresh(), params=params), targets, "w1", False)
    assert result.status == "failed" and "certificate verify failed" in result.error
    assert pg_server.logs_in(name, old)
