"""worker.rotate on real sshd hosts with the real chpasswd: each outcome of the rotation protocol,
checked on the host itself (logins with the new and old passwords, /etc/shadow, sshd's log)."""
from __future__ import annotations

import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.messages import AssetTarget, RotateCommand
from worker.platforms import DRIVERS
from worker.platforms.linux import LinuxDriver
from worker.rotate import rotate
from worker.connectors import Targets
from worker.connectors.ssh import SshConnector

ROOT_PW = "root-pw-rotate"
OPS = ("ops", "ops-pw-rotate")                                  # NOPASSWD sudoer
SUDOER = ("sudoer", """s'udo "pw" $HOME {{ x }} \\ ü 密码""")    # sudo asks its own password
LIMITED = ("limited", "limited-pw")                             # may sudo chpasswd only
PLAIN = ("plain", "plain-pw")                                   # may not sudo
USERS = {"alice": "alice-0", "bob": "bob-0", "carol": "carol-0"}
LOGINS = {"root": ("root", ROOT_PW), "nopasswd sudo": OPS, "password sudo": SUDOER,
          "chpasswd-only sudo": LIMITED}
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
HOSTILE = ["""'"$x {{ a }} \\ ü ñ 密码""",
           """it's "quoted" $HOME `x` {{ y }} \\ ; | & ü ñ 密码""",
           "  spaces around and inside  ",
           "-dash:colon:#hash\\\\double-backslash",
           "x" * 200]


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users=USERS, sudo_user=OPS)
    host.set_password("root", ROOT_PW)
    host.add_user(*SUDOER, sudo="password")
    host.add_user(*PLAIN)
    host.add_user(*LIMITED)
    host.run(["sh", "-c", 'umask 0337 && cat > "$1"', "sh", "/etc/sudoers.d/limited"],
             input=b"limited ALL=(root) NOPASSWD: /usr/sbin/chpasswd\n")
    yield host
    host.close()


def command(host, username: str, new_secret: str | None = None, *, login=("root", ROOT_PW),
            asset: dict | None = None, **fields) -> RotateCommand:
    target = {"name": "web-1", "address": host.address, "port": host.port, "platform": "linux",
              "host_key": host.host_public_key} | (asset or {})
    return RotateCommand(record_id=7, zone="dmz", asset=AssetTarget(**target),
                         login_username=login[0], login_secrets=list(login[1:]), username=username,
                         new_secret=new_secret,
                         **{"timeout": 5, "attempt": 1, "not_after": time.time() + 600} | fields)


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def shadows(host) -> dict[str, str]:
    return {user: host.shadow_line(user) for user in USERS}


def sshd_log(host) -> str:
    return host.log_path.read_text()


@pytest.mark.parametrize("login", LOGINS, ids=list(LOGINS))
def test_change_is_made_and_proven_and_others_keep_theirs(host, targets, login):
    old, new = fresh("old"), fresh("new")
    host.set_password("alice", old)
    before = shadows(host)

    result = rotate(command(host, "alice", new, login=LOGINS[login]), targets, "w1", False)

    assert (result.status, result.error_code, result.error) == ("success", None, None)
    assert (result.login_index, result.host_key, result.worker_id) == (0, host.host_public_key, "w1")
    assert result.started_at <= result.finished_at
    assert host.password_works("alice", new) and not host.password_works("alice", old)
    after = shadows(host)
    assert after["alice"] != before["alice"]
    assert {u: after[u] for u in ("bob", "carol")} == {u: before[u] for u in ("bob", "carol")}


def test_a_host_that_lets_any_password_in_is_never_a_success(ssh_farm, targets):
    """PAM `permit`: the new password "works", and so does any other: unverified, not success."""
    permissive, = ssh_farm.start_hosts(1, users={"dana": "dana-old"})
    try:
        permissive.set_password("root", ROOT_PW)
        permissive.run(["sed", "-i", "s/pam_unix\\.so.*/pam_permit.so/", "/etc/pam.d/common-auth"])
        assert permissive.password_works("dana", "anything at all")
        result = rotate(command(permissive, "dana", fresh()), targets, "w1", False)
        assert (result.status, result.error_code) == ("unverified", "no_password_check")
        assert "does not check passwords" in result.error
    finally:
        permissive.close()


def test_the_wrong_password_check_is_made_once_per_host_and_reported(host, targets):
    time.sleep(0.3)                        # sshd logs the end of earlier tests' connections late
    log_before = sshd_log(host)
    results = [rotate(command(host, user, fresh()), targets, "w1", False) for user in ("alice", "bob")]
    assert [(r.status, r.refusal_seen) for r in results] == [("success", True), ("success", False)]
    time.sleep(0.2)                                             # sshd logs a moment after it answers
    assert sshd_log(host)[len(log_before):].count("Failed password") == 1


def test_a_refusal_the_controller_knows_is_not_checked_again(host):
    """A worker that has just started (nothing in its own memory) trusts the command's word
    that this host refused a wrong password lately: no refused login on the host."""
    time.sleep(0.3)
    log_before = sshd_log(host)
    fresh_worker = Targets()
    try:
        result = rotate(command(host, "carol", new := fresh(), refusal_known=True), fresh_worker,
                        "w1", False)
    finally:
        fresh_worker.close()
    assert (result.status, result.refusal_seen) == ("success", False)
    assert host.password_works("carol", new)
    time.sleep(0.2)
    assert "Failed password" not in sshd_log(host)[len(log_before):]


@pytest.mark.parametrize("login", ["root", "password sudo"])
@pytest.mark.parametrize("password", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_passwords_are_set_exactly(host, targets, login, password):
    marker = f"/tmp/keyturn-pwned-{uuid.uuid4().hex}"
    new = password + f"$(touch {marker})"
    result = rotate(command(host, "bob", new, login=LOGINS[login]), targets, "w1", False)
    assert result.status == "success", result.error
    assert host.password_works("bob", new)
    assert not host.password_works("bob", password)
    assert not os.path.exists(marker)


def test_the_first_login_secret_that_works_is_reported(host, targets):
    result = rotate(command(host, "carol", fresh(), login=("ops", "stale-pw", OPS[1])), targets,
                    "w1", False)
    assert (result.status, result.login_index) == ("success", 1)


def test_wrong_privileged_password_fails_and_changes_nothing(host, targets):
    before = shadows(host)
    result = rotate(command(host, "alice", fresh(), login=("root", "not-root-pw")), targets, "w1", False)
    assert (result.status, result.error_code, result.login_index) == ("failed", "login_failed", None)
    assert "web-1" in result.error and "root" in result.error
    assert shadows(host) == before


def test_missing_user_is_named(host, targets):
    result = rotate(command(host, "nobody9", fresh(), login=OPS), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "user_missing")
    assert result.error == "user nobody9 does not exist on web-1"


def test_login_without_sudo_rights_fails_before_the_change(host, targets):
    before = shadows(host)
    result = rotate(command(host, "alice", fresh(), login=PLAIN), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "privilege_failed")
    assert "plain may not use sudo on web-1" in result.error
    assert shadows(host) == before


def test_changed_host_key_fails_before_any_password_is_sent(host, targets):
    before, log_before = shadows(host), sshd_log(host)
    result = rotate(command(host, "alice", fresh(), asset={"host_key": OTHER_KEY}), targets, "w1", False)
    assert (result.status, result.error_code, result.host_key) == ("failed", "host_key_mismatch", None)
    assert "no password was sent" in result.error
    assert "password for" not in sshd_log(host)[len(log_before):]
    assert shadows(host) == before


def test_unpinned_host_key_needs_first_use_trust(host, targets):
    log_before = sshd_log(host)
    refused = rotate(command(host, "alice", fresh(), asset={"host_key": None}), targets, "w1", False)
    assert (refused.status, refused.error_code, refused.host_key) == ("failed", "host_key_unknown", None)
    assert "password for" not in sshd_log(host)[len(log_before):]
    learned = rotate(command(host, "alice", fresh(), asset={"host_key": None, "trust_first_use": True}),
                     targets, "w1", False)
    assert (learned.status, learned.host_key) == ("success", host.host_public_key)


def test_stopped_host_is_unreachable(ssh_farm, targets):
    host, = ssh_farm.start_hosts(1)
    try:
        host.stop()
        result = rotate(command(host, "alice", fresh()), targets, "w1", False)
        assert (result.status, result.error_code, result.host_key) == ("failed", "unreachable", None)
        assert "web-1" in result.error
    finally:
        host.close()


@pytest.mark.parametrize("redelivered,attempt,status", [
    (False, 1, "failed"), (True, 1, "unverified"), (False, 2, "unverified")])
def test_a_repeat_that_cannot_reach_its_host_is_unverified(ssh_farm, targets, redelivered,
                                                           attempt, status):
    """A command seen before (redelivered, or dispatched again) may have made its change on an
    earlier delivery: a failure before it could look is not proof that nothing changed."""
    host, = ssh_farm.start_hosts(1)
    try:
        host.stop()
        result = rotate(command(host, "alice", fresh(), attempt=attempt), targets, "w1",
                        redelivered)
        assert (result.status, result.error_code) == (status, "unreachable")
    finally:
        host.close()


@pytest.mark.parametrize("redelivered", [False, True])
def test_an_expired_command_changes_nothing_and_sends_nothing(host, targets, redelivered):
    """A replayed or long-delayed copy is refused before any connection to the host."""
    time.sleep(0.3)                        # sshd logs the end of earlier tests' connections late
    before, log_before = shadows(host), sshd_log(host)
    expired = command(host, "carol", fresh(), not_after=time.time() - 1)
    result = rotate(expired, targets, "w1", redelivered)
    assert (result.status, result.error_code) == ("failed", "expired")
    assert result.expired_not_after == expired.not_after
    assert shadows(host) == before
    assert targets.pool(SshConnector)._sessions == {}             # no privileged login ...
    new_lines = sshd_log(host)[len(log_before):]
    assert "root" not in new_lines and "carol" not in new_lines   # ... and no login as carol


def test_a_command_that_expires_before_its_change_is_sent_changes_nothing(host, targets, monkeypatch):
    """The validity is checked again right before the command that sets the secret."""
    from worker.platforms import become

    before = shadows(host)
    valid = command(host, "carol", fresh(), not_after=time.time() + 30)
    original = become.Root._run

    def late(self, argv, stdin, *, keep_unknown=False, **options):
        if keep_unknown:   # the validity passes while the look-ups ran
            self.command = self.command.model_copy(update={"not_after": time.time() - 0.1})
        return original(self, argv, stdin, keep_unknown=keep_unknown, **options)

    monkeypatch.setattr(become.Root, "_run", late)
    result = rotate(valid, targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "expired")
    assert shadows(host) == before


def test_redelivered_message_whose_secret_already_works_changes_nothing(host, targets):
    new = fresh()
    host.set_password("carol", new)
    before, log_before = shadows(host), sshd_log(host)
    result = rotate(command(host, "carol", new), targets, "w1", True)
    assert (result.status, result.login_index, result.host_key) == ("success", None, host.host_public_key)
    assert shadows(host) == before                                  # not even re-hashed
    assert "password for root" not in sshd_log(host)[len(log_before):]


def test_redelivered_message_not_yet_applied_is_applied(host, targets):
    new = fresh()
    result = rotate(command(host, "carol", new), targets, "w1", True)
    assert (result.status, result.login_index) == ("success", 0)
    assert host.password_works("carol", new)


def test_verify_finds_the_working_candidate_and_changes_nothing(host, targets):
    current = fresh()
    host.set_password("bob", current)
    before = shadows(host)
    found = rotate(command(host, "bob", action="verify", candidates=["pending-x", current]),
                   targets, "w1", False)
    assert (found.status, found.working_index, found.host_key) == ("success", 1, host.host_public_key)
    missing = rotate(command(host, "bob", action="verify", candidates=["a-1", "b-2"]), targets, "w1", False)
    assert (missing.status, missing.error_code, missing.working_index) == ("failed", "no_candidate", None)
    assert shadows(host) == before


def test_a_stale_repeat_changes_nothing_when_another_secret_was_set_since(host, targets):
    """Attempt 2 of a record, arriving after a newer rotation set a third password: neither the
    message's new nor its old password logs in, so it must not overwrite the newer one."""
    newer = fresh("newer")
    host.set_password("alice", newer)
    before = shadows(host)
    stale = command(host, "alice", fresh("stale"), attempt=2, old_secret=fresh("old"))
    result = rotate(stale, targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "stale")
    assert shadows(host) == before and host.password_works("alice", newer)


def test_a_repeat_proves_the_old_secret_then_changes(host, targets):
    old, new = fresh("old"), fresh("new")
    host.set_password("alice", old)
    result = rotate(command(host, "alice", new, attempt=3, old_secret=old), targets, "w1", False)
    assert result.status == "success"
    assert host.password_works("alice", new) and not host.password_works("alice", old)


def test_a_secret_that_cannot_be_set_is_refused_before_any_login(host, targets):
    log_before = sshd_log(host)
    key = rotate(command(host, "alice", fresh(), secret_type="ssh_key"), targets, "w1", False)
    assert (key.status, key.error_code) == ("failed", "unsupported_secret")
    assert "not an unencrypted OpenSSH private key" in key.error
    broken = rotate(command(host, "alice", "two\nlines"), targets, "w1", True)
    assert (broken.status, broken.error_code) == ("failed", "unsupported_secret")
    assert sshd_log(host) == log_before


@pytest.fixture(scope="module")
def strict_host(ssh_farm):
    """A host whose PAM remembers old passwords, makes chpasswd hang for `slow` and denies SSH
    logins to `nologin` (its password can still be changed)."""
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-0", "slow": "slow-0", "nologin": "nl-0"})
    host.set_password("root", ROOT_PW)
    host.run(["sed", "-i", r"0,/^password/s//password requisite pam_pwhistory.so remember=5 "
              r"enforce_for_root\npassword [success=1 default=ignore] pam_succeed_if.so quiet "
              r"user != slow\npassword required pam_exec.so \/bin\/sleep 4\n&/",
              "/etc/pam.d/common-password"])
    host.run(["sed", "-i", "1i auth requisite pam_succeed_if.so quiet user != nologin",
              "/etc/pam.d/sshd"])
    yield host
    host.close()


def test_password_policy_rejection_is_explained(strict_host, targets):
    first, second = fresh(), fresh()
    for password in (first, second):
        assert rotate(command(strict_host, "alice", password), targets, "w1", False).status == "success"
    result = rotate(command(strict_host, "alice", first), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "policy_rejected")
    assert "password policy on web-1 rejected the new password for alice" in result.error
    assert "already used" in result.error
    assert strict_host.password_works("alice", second)


def test_change_without_an_outcome_is_unverified(strict_host, targets):
    started = time.monotonic()
    result = rotate(command(strict_host, "slow", fresh(), timeout=1.5), targets, "w1", False)
    assert (result.status, result.error_code) == ("unverified", "timeout")
    assert "`chpasswd` did not finish" in result.error and "may have changed" in result.error
    assert time.monotonic() - started < 6


def test_change_that_cannot_be_proven_is_unverified(strict_host, targets):
    before = strict_host.shadow_line("nologin")
    result = rotate(command(strict_host, "nologin", fresh()), targets, "w1", False)
    assert (result.status, result.error_code) == ("unverified", "verify_failed")
    assert "cannot log in with the new password" in result.error
    assert strict_host.shadow_line("nologin") != before             # changed, as reported


def test_no_secret_in_results_or_logs(host, targets, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = {name: f"{name}-SECRET-{uuid.uuid4().hex[:8]}" for name in
               ("new1", "new2", "new3", "new4", "new5", "wrong", "candidate")}
    results = [
        rotate(command(host, "alice", secrets["new1"], login=SUDOER), targets, "w1", False),
        rotate(command(host, "alice", secrets["new2"], login=("root", secrets["wrong"])), targets, "w1", False),
        rotate(command(host, "nobody9", secrets["new3"], login=SUDOER), targets, "w1", False),
        rotate(command(host, "alice", secrets["new4"], login=(PLAIN[0], PLAIN[1])), targets, "w1", False),
        rotate(command(host, "alice", secrets["new5"], asset={"host_key": OTHER_KEY}), targets, "w1", False),
        rotate(command(host, "alice", action="verify", candidates=[secrets["candidate"]]), targets, "w1", False),
    ]
    assert [r.status for r in results] == ["success"] + ["failed"] * 5
    everything = caplog.text + "".join(r.model_dump_json() for r in results)
    assert "record 7" in caplog.text
    for secret in [*secrets.values(), SUDOER[1], ROOT_PW, PLAIN[1]]:
        assert secret not in everything


def test_a_batch_of_accounts_shares_one_privileged_login_per_host(ssh_farm):
    users = {f"user{n:02d}": f"old-{n}" for n in range(20)}
    hosts = ssh_farm.start_hosts(3, users=users, sudo_user=OPS)
    targets = Targets()
    try:
        commands = [command(h, user, fresh(), login=OPS) for h in hosts for user in users]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as threads:
            results = list(threads.map(lambda c: rotate(c, targets, "w1", False), commands))
        elapsed = time.monotonic() - started
        assert [r.status for r in results] == ["success"] * len(commands)
        time.sleep(0.2)                       # sshd logs a moment after it answers
        for h in hosts:
            assert sshd_log(h).count("Accepted password for ops ") == 1
        for c in commands[:: len(users) // 2]:
            h = next(h for h in hosts if h.address == c.asset.address)
            assert h.password_works(c.username, c.new_secret.get_secret_value())
        print(f"\n{len(commands)} accounts on {len(hosts)} hosts with 8 threads: {elapsed:.2f} s, "
              f"{elapsed / len(commands) * 1000:.0f} ms per account; per rotation "
              f"{sum(r.finished_at - r.started_at for r in results) / len(results) * 1000:.0f} ms")
    finally:
        targets.close()
        for h in hosts:
            h.close()


def test_a_bug_still_ends_in_a_result_without_the_secret(host, targets, caplog, monkeypatch):
    class Broken(LinuxDriver):
        def change(self, root, command):
            raise RuntimeError(f"bug while setting {command.new_secret.get_secret_value()}")

    monkeypatch.setitem(DRIVERS, "linux", Broken())
    new = fresh("leaky")
    result = rotate(command(host, "alice", new), targets, "w1", False)
    assert (result.status, result.error_code) == ("unverified", "internal_error")
    assert "RuntimeError" in result.error and new not in result.error
    assert "bug while setting ***" in caplog.text and new not in caplog.text
