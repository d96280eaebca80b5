"""worker.rotate on a real MariaDB server (tests.mariadb_server): each outcome of the rotation
protocol for 'user'@'host' accounts, checked on the server itself (logins, the stored hashes,
and the general and binary logs, which must never hold a password)."""
from __future__ import annotations

import time
import uuid

import pymysql
import pytest

from shared.messages import AssetTarget, RotateCommand
from tests.mariadb_server import ROOT_PASSWORD, free_port
from worker.connectors.mysql import native_hash
from worker.rotate import rotate

ROOT = ("root", ROOT_PASSWORD)
HOSTILE = ["""it's "quoted" \\ backslash \\' {{ x }} %s %% $(touch /tmp/kt-pwned) ü 密码""",
           "'; DROP USER 'root'@'127.0.0.1'; --",
           "\\",
           "x" * 200]


def command(server, username: str, new_secret: str | None = None, *, login=ROOT,
            port: int | None = None, params: dict | None = None, **fields) -> RotateCommand:
    asset = AssetTarget(name="db-1", address=server.address, port=port or server.port,
                        platform="mysql")
    return RotateCommand(record_id=7, zone="dmz", asset=asset, login_username=login[0],
                         login_secrets=list(login[1:]), username=username, new_secret=new_secret,
                         params=params or {},
                         **{"timeout": 5, "attempt": 1, "not_after": time.time() + 600} | fields)


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def account(mariadb):
    """A new 'user'@'%' with a known password, and a bystander whose hash must not change."""
    user, old = fresh("app"), fresh("old")
    mariadb.create_user(user, "%", old)
    mariadb.create_user("bystander", "%", "bystander-pw")
    return user, old


def rotated(result, status="success", code=None):
    assert (result.status, result.error_code) == (status, code), result.error
    return result


def test_rotation_sets_the_new_password_and_the_logs_hold_no_password(mariadb, targets, account):
    user, old = account
    new = fresh("new")
    bystander = mariadb.stored_hash("bystander", "%")

    result = rotated(rotate(command(mariadb, user, new, old_secret=old), targets, "w1", False))

    assert result.login_index == 0
    assert mariadb.password_works(user, new) and not mariadb.password_works(user, old)
    assert mariadb.stored_hash(user, "%") == native_hash(new)
    assert mariadb.stored_hash("bystander", "%") == bystander
    general, binlog = mariadb.general_log(), mariadb.binlog()
    assert native_hash(new) in general and native_hash(new) in binlog     # the logs are read
    for secret in (old, new, ROOT_PASSWORD):
        assert secret not in general and secret not in binlog


@pytest.mark.parametrize("password", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_passwords_are_set_exactly(mariadb, targets, account, password):
    user, old = account
    rotated(rotate(command(mariadb, user, password, old_secret=old), targets, "w1", False))
    assert mariadb.password_works(user, password) and not mariadb.password_works(user, old)
    assert mariadb.password_works("root", ROOT_PASSWORD)


def test_account_host_picks_one_entry_and_all_hosts_changes_every_one(mariadb, targets):
    user, wide, local = fresh("app"), fresh("wide"), fresh("local")
    mariadb.create_user(user, "%", wide)
    mariadb.create_user(user, "127.0.0.1", local)       # the entry a login from 127.0.0.1 matches

    new = fresh("new")
    rotated(rotate(command(mariadb, user, new, old_secret=local,
                           params={"account_host": "127.0.0.1"}), targets, "w1", False))
    assert mariadb.stored_hash(user, "127.0.0.1") == native_hash(new)
    assert mariadb.stored_hash(user, "%") == native_hash(wide)

    # 'u'@'%' changes, but the proof's login still matches 'u'@'127.0.0.1': not a success
    result = rotate(command(mariadb, user, fresh("new"), old_secret=new), targets, "w1", False)
    rotated(result, "unverified", "verify_failed")
    assert mariadb.stored_hash(user, "127.0.0.1") == native_hash(new)

    newest = fresh("newest")
    rotated(rotate(command(mariadb, user, newest, old_secret=new, params={"all_hosts": True}),
                   targets, "w1", False))
    assert {mariadb.stored_hash(user, host) for host in ("%", "127.0.0.1")} == {native_hash(newest)}


def test_the_pending_login_secret_is_tried_after_the_current_one(mariadb, targets, account):
    user, old = account
    login = ("root", "not-roots-password", ROOT_PASSWORD)
    result = rotated(rotate(command(mariadb, user, fresh(), login=login), targets, "w1", False))
    assert result.login_index == 1


def test_the_privileged_account_can_rotate_itself(mariadb, targets):
    admin, old, new = fresh("admin"), fresh("old"), fresh("new")
    mariadb.create_user(admin, "%", old, "ALL PRIVILEGES")
    rotated(rotate(command(mariadb, admin, new, login=(admin, old), old_secret=old),
                   targets, "w1", False))
    assert mariadb.password_works(admin, new) and not mariadb.password_works(admin, old)
    # its pooled login was keyed by the old password; with the new one it serves the next command
    rotated(rotate(command(mariadb, "bystander", fresh(), login=(admin, new)),
                   targets, "w1", False))


@pytest.mark.parametrize("code, login, username, says", [
    ("login_failed", ("root", "wrong"), None, "cannot log in as root"),
    ("unreachable", ROOT, None, "Can't connect"),
    ("no_such_account", ROOT, "nobody", "there is no account 'nobody' for host '%'"),
    ("insufficient_privilege", "weak", None, "CREATE USER"),
])
def test_failures_before_the_change_leave_the_account_untouched(mariadb, targets, account, code,
                                                                login, username, says):
    user, old = account
    if login == "weak":                     # may read mysql.user, may not ALTER USER
        login = (fresh("weak"), "weak-pw")
        mariadb.create_user(login[0], "%", login[1], "SELECT")
    cmd = command(mariadb, username or user, fresh(), login=login, old_secret=old,
                  port=free_port() if code == "unreachable" else None)

    result = rotated(rotate(cmd, targets, "w1", False), "failed", code)

    assert "db-1" in result.error and says in result.error
    for secret in (*login[1:], old, cmd.new_secret.get_secret_value()):
        assert secret not in result.error
    assert mariadb.password_works(user, old)


def test_no_such_host_entry_is_a_missing_account(mariadb, targets, account):
    user, old = account
    result = rotate(command(mariadb, user, fresh(), params={"account_host": "10.0.0.1"}),
                    targets, "w1", False)
    rotated(result, "failed", "no_such_account")
    assert mariadb.password_works(user, old)


def test_verify_finds_the_working_candidate(mariadb, targets, account):
    user, old = account
    result = rotated(rotate(command(mariadb, user, action="verify",
                                    candidates=["wrong-1", old, "wrong-2"]), targets, "w1", False))
    assert result.working_index == 1
    rotated(rotate(command(mariadb, user, action="verify", candidates=["wrong-1"]),
                   targets, "w1", False), "failed", "no_candidate")


@pytest.mark.parametrize("tls", ["disable", "prefer", "require", "verify-full"])
def test_tls_settings(mariadb, targets, account, tls):
    """The privileged account may log in only over TLS: every setting but `disable` uses it."""
    user, old = account
    admin = (fresh("tlsadmin"), "tls-admin-pw")
    mariadb.create_user(admin[0], "%", admin[1], "ALL PRIVILEGES")
    mariadb.sql("ALTER USER %s@'%%' REQUIRE SSL", admin[0])
    params = {"tls": tls, "tls_ca": str(mariadb.ca_file)}
    result = rotate(command(mariadb, user, fresh(), login=admin, old_secret=old, params=params),
                    targets, "w1", False)
    rotated(result, *(("failed", "login_failed") if tls == "disable" else ("success",)))


def test_tls_verify_full_refuses_a_certificate_it_cannot_check(mariadb, targets, account):
    user, old = account
    result = rotate(command(mariadb, user, fresh(), params={"tls": "verify-full"}),
                    targets, "w1", False)
    rotated(result, "failed", "unreachable")
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert mariadb.password_works(user, old)


@pytest.mark.parametrize("ran", [True, False], ids=["ran", "lost before it ran"])
def test_a_lost_answer_to_the_change_is_settled_by_a_login(mariadb, targets, account,
                                                           monkeypatch, ran):
    """The connection breaks once ALTER USER is sent: the change may have been made, so it is
    never `failed`; a login with the new password decides."""
    user, old = account
    execute = pymysql.cursors.Cursor.execute

    def lose_the_answer(cursor, query, args=None):
        if not query.startswith("ALTER USER"):
            return execute(cursor, query, args)
        if ran:
            execute(cursor, query, args)
        raise pymysql.OperationalError(2013, "Lost connection to MySQL server during query")

    monkeypatch.setattr(pymysql.cursors.Cursor, "execute", lose_the_answer)
    new = fresh("new")
    result = rotate(command(mariadb, user, new, old_secret=old), targets, "w1", False)
    if ran:
        rotated(result)
        assert mariadb.password_works(user, new)
    else:
        rotated(result, "unverified", "connection_lost")
        assert mariadb.password_works(user, old)


def test_one_privileged_login_serves_a_batch(mariadb, targets):
    users = [fresh("batch") for _ in range(3)]
    for user in users:
        mariadb.create_user(user, "%", "batch-old")
    before = mariadb.general_log().count("Connect\troot@127.0.0.1")
    for user in users:
        rotated(rotate(command(mariadb, user, fresh()), targets, "w1", False))
    assert mariadb.general_log().count("Connect\troot@127.0.0.1") - before == 1
