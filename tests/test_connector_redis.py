"""worker.rotate on real redis-server instances (tests.redis_server): the zero-downtime ACL change
(new hash added, proven by a fresh AUTH, old hash removed, persisted), checked on the server
itself (logins, ACL GETUSER, the ACL or config file on disk, its log file and MONITOR)."""
from __future__ import annotations

import logging
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from shared.messages import AssetTarget, RotateCommand
from tests.redis_server import ADMIN, free_port
from worker.connectors.redis import RedisConnector, password_hash
from worker.rotate import rotate

APP_RULES = ("~app:*", "+get", "+set")
HOSTILE = ["""it's "quoted" $(touch /tmp/x) `x` {{ y }} %s %n \\ ; | & ü 密码""",
           "  spaces around and inside  ",
           "#starts-with-hash", ">starts-with-gt", "!bang", "x" * 200]


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def command(server, username: str, new: str, old: str | None = None, *, login=ADMIN,
            **fields) -> RotateCommand:
    asset = AssetTarget(name="cache-1", address=server.address, port=server.port, platform="redis")
    return RotateCommand(record_id=7, zone="a", asset=asset, login_username=login[0],
                         login_secrets=list(login[1:]), username=username, new_secret=new,
                         old_secret=old,
                         **{"timeout": 5, "attempt": 1, "not_after": time.time() + 600} | fields)


def passwords(server, username: str) -> list[str]:
    return server.admin().acl_getuser(username)["passwords"]


@pytest.fixture
def app_user(redis_acl_server):
    """A fresh ACL user with a known password: (name, password)."""
    user = (fresh("app"), fresh("old"))
    redis_acl_server.add_user(*user, *APP_RULES)
    return user


def test_rotation_adds_proves_removes_the_old_and_saves_the_acl_file(redis_acl_server, app_user,
                                                                      targets, caplog):
    server, (name, old), new = redis_acl_server, app_user, fresh("new")
    other = (fresh("other"), fresh("other-pw"))
    server.add_user(*other, *APP_RULES)
    caplog.set_level(logging.INFO, logger="worker.connectors.redis")

    result = rotate(command(server, name, new, old), targets, "w1", False)

    assert (result.status, result.error_code, result.error, result.login_index) == \
        ("success", None, None, 0)
    assert server.logs_in(name, new) and not server.logs_in(name, old)
    assert passwords(server, name) == [password_hash(new)]
    saved = server.acl_path.read_text()
    assert password_hash(new) in saved and password_hash(old) not in saved
    assert new not in saved and old not in saved
    assert "persisted with ACL SAVE" in caplog.text and result.note == "persisted with ACL SAVE"
    assert passwords(server, other[0]) == [password_hash(other[1])]
    assert server.logs_in(*other)


def test_a_config_file_server_is_persisted_with_config_rewrite(redis_config_server, targets,
                                                               caplog):
    server, name, old, new = redis_config_server, fresh("app"), fresh("old"), fresh("new")
    server.add_user(name, old, *APP_RULES)
    caplog.set_level(logging.INFO, logger="worker.connectors.redis")

    result = rotate(command(server, name, new, old), targets, "w1", False)

    assert (result.status, result.error) == ("success", None)
    assert server.logs_in(name, new) and not server.logs_in(name, old)
    config = server.config_path.read_text()
    assert password_hash(new) in config and password_hash(old) not in config
    assert new not in config
    assert "persisted with CONFIG REWRITE" in caplog.text
    assert result.note == "persisted with CONFIG REWRITE"


def test_old_and_new_both_log_in_between_the_add_and_the_removal(redis_acl_server, app_user,
                                                                  targets, monkeypatch):
    """Zero downtime: clients still holding the old password keep working until the new one is
    proven."""
    server, (name, old), new = redis_acl_server, app_user, fresh("new")
    seen = {}
    finish = RedisConnector.finish

    def observed_finish(connector):
        seen["old"], seen["new"] = server.logs_in(name, old), server.logs_in(name, new)
        finish(connector)

    monkeypatch.setattr(RedisConnector, "finish", observed_finish)
    result = rotate(command(server, name, new, old), targets, "w1", False)

    assert result.status == "success"
    assert seen == {"old": True, "new": True}
    assert not server.logs_in(name, old)


def test_unknown_old_password_removes_every_other_one(redis_acl_server, app_user, targets):
    server, (name, old), new, extra = redis_acl_server, app_user, fresh("new"), fresh("extra")
    server.admin().execute_command("ACL", "SETUSER", name, ">" + extra)

    result = rotate(command(server, name, new, None), targets, "w1", False)

    assert result.status == "success"
    assert passwords(server, name) == [password_hash(new)]
    assert not server.logs_in(name, old) and not server.logs_in(name, extra)


def test_a_message_seen_before_completes_an_interrupted_change(redis_acl_server, app_user,
                                                               targets):
    """The worker died after adding the new hash: the redelivered message removes the old."""
    server, (name, old), new = redis_acl_server, app_user, fresh("new")
    RedisConnector(command(server, name, new, old), targets).change()
    assert server.logs_in(name, old) and server.logs_in(name, new)

    result = rotate(command(server, name, new, old), targets, "w2", True)

    assert result.status == "success"
    assert passwords(server, name) == [password_hash(new)]


def test_the_login_user_may_rotate_itself_and_log_in_with_the_new_password(redis_acl_server,
                                                                           targets):
    server, ops, new = redis_acl_server, (fresh("ops"), fresh("ops-old")), fresh("ops-new")
    server.add_user(*ops, "~*", "+@all")

    assert rotate(command(server, ops[0], new, ops[1], login=ops), targets, "w1",
                  False).status == "success"
    name, old = fresh("app"), fresh("old")
    server.add_user(name, old, *APP_RULES)
    result = rotate(command(server, name, fresh("new"), old, login=(ops[0], new)), targets, "w1",
                    False)
    assert (result.status, result.login_index) == ("success", 0)


def test_a_batch_on_one_server_shares_one_privileged_login(redis_acl_server, targets):
    server = redis_acl_server
    users = {fresh("batch"): fresh("old") for _ in range(8)}
    for name, old in users.items():
        server.add_user(name, old, *APP_RULES)
    new = {name: fresh("new") for name in users}

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda name: rotate(command(server, name, new[name], users[name]),
                                                     targets, "w1", False), users))

    assert [r.status for r in results] == ["success"] * len(users)
    assert all(server.logs_in(name, new[name]) for name in users)
    assert len(targets.pool(RedisConnector)._clients) == 1


@pytest.mark.parametrize("secret", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_passwords_are_data(redis_acl_server, targets, secret):
    server, name, old = redis_acl_server, fresh("app"), "old " + secret
    server.add_user(name, old, *APP_RULES)

    result = rotate(command(server, name, secret, old), targets, "w1", False)

    assert (result.status, result.error) == ("success", None)
    assert server.logs_in(name, secret) and not server.logs_in(name, old)


def test_the_plaintext_is_not_in_the_server_log_nor_in_monitor(redis_acl_server, app_user,
                                                               targets, tmp_path):
    server, (name, old), new = redis_acl_server, app_user, fresh("new")
    marker = fresh("monitor-end")
    capture = tmp_path / "monitor.txt"
    with capture.open("wb") as out:
        monitor = subprocess.Popen(["redis-cli", "-h", server.address, "-p", str(server.port),
                                    "--user", ADMIN[0], "--pass", ADMIN[1], "--no-auth-warning",
                                    "MONITOR"], stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: b"OK" in capture.read_bytes())
            result = rotate(command(server, name, new, old), targets, "w1", False)
            server.admin().echo(marker)
            _wait_for(lambda: marker.encode() in capture.read_bytes())
        finally:
            monitor.terminate()
            monitor.wait(10)

    assert result.status == "success"
    watched = capture.read_text()
    assert '"AUTH"' in watched and "(redacted)" in watched   # the rotation's logins were seen
    log = server.log_path.read_text()
    for secret in (new, old):
        assert secret not in watched and secret not in log


def _wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# Failures: `failed` with a reason a person understands, and the account untouched.

def test_wrong_privileged_password_fails_and_a_second_login_secret_is_tried(redis_acl_server,
                                                                             app_user, targets):
    server, (name, old) = redis_acl_server, app_user

    result = rotate(command(server, name, fresh("new"), old, login=("admin", "wrong")), targets,
                    "w1", False)

    assert (result.status, result.error_code) == ("failed", "login_failed")
    assert "cannot log in as admin" in result.error and "wrong" not in result.error
    assert passwords(server, name) == [password_hash(old)]
    result = rotate(command(server, name, fresh("new"), old, login=("admin", "wrong", ADMIN[1])),
                    targets, "w1", False)
    assert (result.status, result.login_index) == ("success", 1)


def test_server_down_fails_unreachable(redis_acl_server, targets):
    down = SimpleNamespace(address="127.0.0.1", port=free_port())   # nothing listens

    result = rotate(command(down, "app", fresh("new"), fresh("old")), targets, "w1", False)

    assert (result.status, result.error_code) == ("failed", "unreachable")
    assert "cache-1" in result.error


def test_missing_user_fails_and_is_not_created(redis_acl_server, targets):
    server, name = redis_acl_server, fresh("ghost")

    result = rotate(command(server, name, fresh("new"), fresh("old")), targets, "w1", False)

    assert (result.status, result.error_code) == ("failed", "no_such_account")
    assert f"no ACL user {name}" in result.error
    assert server.admin().acl_getuser(name) is None


@pytest.mark.parametrize("rules, refused", [(("~*", "+get"), "acl|getuser"),
                                            (("~*", "+acl|getuser"), "acl|setuser")],
                         ids=["no acl", "getuser only"])
def test_privileged_user_without_acl_permission_fails(redis_acl_server, app_user, targets,
                                                      rules, refused):
    server, (name, old) = redis_acl_server, app_user
    weak = (fresh("weak"), fresh("weak-pw"))
    server.add_user(*weak, *rules)

    result = rotate(command(server, name, fresh("new"), old, login=weak), targets, "w1", False)

    assert (result.status, result.error_code) == ("failed", "no_permission")
    assert f"{weak[0]} lacks the permission" in result.error and refused in result.error
    assert passwords(server, name) == [password_hash(old)]


def test_a_nopass_user_is_unverified_and_keeps_nopass(redis_acl_server, targets):
    server, name = redis_acl_server, fresh("open")
    server.add_user(name, None, *APP_RULES)

    result = rotate(command(server, name, fresh("new"), fresh("old")), targets, "w1", False)

    assert (result.status, result.error_code) == ("unverified", "no_password_check")
    assert "nopass" in server.admin().acl_getuser(name)["flags"]


def test_a_disabled_user_fails_before_anything_is_changed(redis_acl_server, app_user, targets):
    server, (name, old) = redis_acl_server, app_user
    server.admin().execute_command("ACL", "SETUSER", name, "off")

    result = rotate(command(server, name, fresh("new"), old), targets, "w1", False)

    assert (result.status, result.error_code) == ("failed", "account_disabled")
    assert passwords(server, name) == [password_hash(old)]
