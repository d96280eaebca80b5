"""The `device` platform's SSH dialogues on a real sshd test host: a sudoer runs `sudo passwd`
interactively (the Linux preset), `su` stands in for a device's enable mode (the enable secret),
and each way a dialogue can go wrong ends `failed` or `unverified` as the protocol says, with no
secret in any log line, error, or the host's sshd log."""
from __future__ import annotations

import logging
import time
import uuid

import pytest

from shared.messages import AssetTarget, RotateCommand
from worker.rotate import rotate

OPS = ("ops", "ops-pw-device")                         # NOPASSWD sudoer
ROOT_PW = "root-pw-device"                             # the "enable" secret: root's, for su
PLAIN = ("plain", "plain-pw-device")                   # may not sudo
USERS = {"alice": "alice-0", "bob": "bob-0"}
HOSTILE = ("""{{ x }} {username} {new_secret} %s %% $(touch /root/pwned) `touch /root/pwned2` """
           """"dq" 'sq' \\ \\1 \\n ü 密码 ? ; | & > <""")
SU_DIALOGUE = ["timeout 5", "expect [$#] ?$", "send su -", "expect (?i)password: ?$",
               "send {enable_secret}", "expect # ?$", "send passwd {username}",
               "expect (?i)new password: ?$", "change {new_secret}",
               "expect (?i)retype new password: ?$", "send {new_secret}",
               "expect (?i)updated successfully"]


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users=USERS, sudo_user=OPS)
    host.set_password("root", ROOT_PW)
    host.add_user(*PLAIN)
    yield host
    host.close()


def command(host, username: str, new_secret: str, *, login=OPS, params=None,
            **fields) -> RotateCommand:
    asset = AssetTarget(name="switch-1", address=host.address, port=host.port, platform="device",
                        host_key=host.host_public_key)
    return RotateCommand(record_id=12, zone="dmz", asset=asset, login_username=login[0],
                         login_secrets=[login[1]], username=username, new_secret=new_secret,
                         params={"preset": "linux-passwd"} if params is None else params,
                         **{"timeout": 5, "attempt": 1, "not_after": time.time() + 600} | fields)


def fresh(name: str = "pw") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def with_old(host, username: str) -> str:
    old = fresh("old")
    host.set_password(username, old)
    return old


def no_secret_anywhere(host, caplog, result, *secrets: str) -> None:
    time.sleep(0.2)                                        # sshd logs a moment after it answers
    seen = "\n".join([caplog.text, str(result.error), host.log_path.read_text()])
    for secret in secrets:
        assert secret not in seen


def test_a_sudoer_changes_a_password_with_sudo_passwd(host, targets, caplog):
    caplog.set_level(logging.DEBUG)
    old, new = with_old(host, "alice"), fresh("new")
    bob_before = host.shadow_line("bob")

    result = rotate(command(host, "alice", new, old_secret=old), targets, "w1", False)

    assert (result.status, result.error_code, result.error) == ("success", None, None)
    assert (result.host_key, result.login_index) == (host.host_public_key, 0)
    assert host.password_works("alice", new) and not host.password_works("alice", old)
    assert host.shadow_line("bob") == bob_before
    assert "sending 'sudo passwd alice'" in caplog.text and "sending '***'" in caplog.text
    no_secret_anywhere(host, caplog, result, new, old, OPS[1])


def test_a_password_full_of_shell_and_template_characters_is_typed_as_it_is(host, targets,
                                                                            caplog):
    caplog.set_level(logging.DEBUG)
    old = with_old(host, "alice")

    result = rotate(command(host, "alice", HOSTILE, old_secret=old), targets, "w1", False)

    assert (result.status, result.error) == ("success", None)
    assert host.password_works("alice", HOSTILE) and not host.password_works("alice", old)
    for ran in ("/root/pwned", "/root/pwned2"):
        assert host.run(["test", "-e", ran], check=False).returncode == 1
    no_secret_anywhere(host, caplog, result, HOSTILE)


def test_the_enable_secret_opens_privileged_mode(host, targets, caplog):
    """`su -` with root's password plays a device's `enable`: the secret is the command's
    sealed `enable_secret`, typed at the real prompt by a login that may not sudo."""
    caplog.set_level(logging.DEBUG)
    old, new = with_old(host, "bob"), fresh("new")

    result = rotate(command(host, "bob", new, old_secret=old, login=PLAIN,
                            params={"dialogue": SU_DIALOGUE, "enable_secret": ROOT_PW}),
                    targets, "w1", False)

    assert (result.status, result.error) == ("success", None)
    assert host.password_works("bob", new)
    no_secret_anywhere(host, caplog, result, new, old, ROOT_PW, PLAIN[1])


def test_an_unknown_account_is_refused_by_the_device_in_its_words(host, targets):
    result = rotate(command(host, "nosuchuser", fresh()), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "device_refused")
    assert "does not exist" in result.error and "line " in result.error


def test_an_unexpected_prompt_fails_before_the_change_and_names_it(host, targets):
    old = with_old(host, "alice")
    dialogue = ["timeout 1.5", "expect [$#] ?$", "send read -p 'Hostname? ' x",
                "expect (?i)new password: ?$", "change {new_secret}", "expect whatever"]

    result = rotate(command(host, "alice", fresh(), params={"dialogue": dialogue}),
                    targets, "w1", False)

    assert (result.status, result.error_code) == ("failed", "timeout")
    assert "dialogue line 4" in result.error and "'Hostname?'" in result.error
    assert host.password_works("alice", old)


def test_a_timeout_before_the_change_step_fails(host, targets):
    old = with_old(host, "alice")
    dialogue = ["timeout 1", "expect never printed", "change {new_secret}", "expect x"]
    result = rotate(command(host, "alice", fresh(), params={"dialogue": dialogue}),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "timeout")
    assert host.password_works("alice", old)


def test_a_timeout_after_the_change_step_is_unverified(host, targets):
    """`passwd` got the new password once and never the second time: the session closes, it
    changes nothing, and the protocol cannot know that: unverified (the new one does not log in)."""
    old, new = with_old(host, "alice"), fresh("new")
    lines = ["timeout 1.5", "expect [$#] ?$", "send sudo passwd {username}",
             "expect (?i)new password: ?$", "change {new_secret}", "expect a prompt never shown"]

    result = rotate(command(host, "alice", new, params={"dialogue": lines}), targets, "w1", False)

    assert (result.status, result.error_code) == ("unverified", "timeout")
    assert "may have changed" in result.error and new not in result.error
    assert host.password_works("alice", old) and not host.password_works("alice", new)


def test_what_the_device_echoes_is_masked_in_errors(host, targets, caplog):
    caplog.set_level(logging.DEBUG)
    old = with_old(host, "alice")
    lines = ["timeout 1", "expect [$#] ?$", "send printf 'said:%s' '{old_secret}'",
             "expect never printed", "change {new_secret}", "expect x"]

    result = rotate(command(host, "alice", fresh(), old_secret=old, params={"dialogue": lines}),
                    targets, "w1", False)

    assert (result.status, result.error_code) == ("failed", "timeout")
    assert "said:***" in result.error
    assert "sending \"printf 'said:%s' '***'\"" in caplog.text
    no_secret_anywhere(host, caplog, result, old)


@pytest.mark.parametrize("secret", ["tab\there", "bell\x07", "del\x7f"])
def test_a_secret_a_cli_cannot_take_is_refused_before_anything_is_sent(host, targets, secret):
    time.sleep(0.2)
    log_before = host.log_path.read_text()
    result = rotate(command(host, "alice", secret), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "bad_secret")
    assert "nothing was sent" in result.error and secret not in result.error
    time.sleep(0.2)
    assert "Accepted" not in host.log_path.read_text()[len(log_before):]


def test_a_dialogue_without_its_enable_secret_is_refused(host, targets):
    result = rotate(command(host, "bob", fresh(), login=PLAIN, params={"dialogue": SU_DIALOGUE}),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "no_secret")
    assert "enable" in result.error


def test_no_dialogue_at_all_is_refused(host, targets):
    result = rotate(command(host, "bob", fresh(), params={}), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "no_dialogue")


def test_a_change_that_could_outlast_the_command_is_not_started(host, targets):
    """The change step checks the time left against the rest of the dialogue (60 s of
    `write memory` here), not only the command's timeout."""
    old = with_old(host, "alice")
    lines = ["timeout 2", "expect [$#] ?$", "send sudo passwd {username}",
             "expect (?i)new password: ?$", "timeout 60", "change {new_secret}", "expect x"]
    result = rotate(command(host, "alice", fresh(), params={"dialogue": lines},
                            not_after=time.time() + 30), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "expired")
    assert host.password_works("alice", old)


def test_a_device_that_prints_without_end_costs_only_the_steps_timeout(host, targets):
    lines = ["timeout 1.5", "expect [$#] ?$", "send yes 'endless output'", "expect never printed",
             "change {new_secret}", "expect x"]
    started = time.monotonic()
    result = rotate(command(host, "alice", fresh(), params={"dialogue": lines}), targets, "w1",
                    False)
    assert (result.status, result.error_code) == ("failed", "timeout")
    assert time.monotonic() - started < 10 and len(result.error) < 500


def test_a_redelivered_command_whose_change_was_made_types_nothing_again(host, targets):
    new = fresh("new")
    done = command(host, "alice", new, old_secret=with_old(host, "alice"))
    assert rotate(done, targets, "w1", False).status == "success"
    shadow = host.shadow_line("alice")
    again = rotate(done, targets, "w1", True)
    assert (again.status, again.error) == ("success", None)
    assert host.shadow_line("alice") == shadow and host.password_works("alice", new)


def test_the_enable_account_is_not_rotated_without_a_proof_dialogue(host, targets):
    result = rotate(command(host, "enable", fresh()), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "unsupported")
    assert "proof" in result.error


def su_proof(user: str = "{username}") -> list[str]:
    """`su` to the account with the secret tried: the shell's arithmetic, not the echo of the
    typed line, prints proof-ok-42."""
    return [f"send su - {user} -c 'echo proof-ok-$((6*7))'", "expect (?i)password: ?$",
            "send {secret}", "expect proof-ok-42", "fail (?i)authentication failure"]


def test_a_proof_dialogue_proves_the_new_secret_without_a_login_as_the_account(host, targets,
                                                                            caplog):
    caplog.set_level(logging.DEBUG)
    old, new = with_old(host, "alice"), fresh("new")
    time.sleep(0.3)
    log_before = host.log_path.read_text()

    result = rotate(command(host, "alice", new, old_secret=old,
                            params={"preset": "linux-passwd", "proof": su_proof()}),
                    targets, "w1", False)

    assert (result.status, result.error, result.refusal_seen) == ("success", None, True)
    time.sleep(0.3)
    assert "for alice" not in host.log_path.read_text()[len(log_before):]   # no SSH login as her
    assert host.password_works("alice", new)
    no_secret_anywhere(host, caplog, result, new, old)


def test_the_enable_secret_rotates_when_a_proof_dialogue_checks_it(host, targets, caplog):
    """Root's password plays the enable secret: the login that may not sudo types the current
    one to `su`, sets the new one with `passwd`, and the proof types it to `su` again."""
    caplog.set_level(logging.DEBUG)
    new = fresh("enable")
    change = ["timeout 5", "expect [$#] ?$", "send su -", "expect (?i)password: ?$",
              "send {enable_secret}", "expect # ?$", "send passwd",
              "expect (?i)new password: ?$", "change {new_secret}",
              "expect (?i)retype new password: ?$", "send {new_secret}",
              "expect (?i)updated successfully"]
    try:
        result = rotate(command(host, "enable", new, old_secret=ROOT_PW, login=PLAIN,
                                params={"dialogue": change, "proof": su_proof(""),
                                        "enable_secret": ROOT_PW}), targets, "w1", False)
        assert (result.status, result.error) == ("success", None)
        assert host.password_works("root", new) and not host.password_works("root", ROOT_PW)
        no_secret_anywhere(host, caplog, result, new, ROOT_PW)
    finally:
        host.set_password("root", ROOT_PW)


def test_a_proof_that_cannot_tell_leaves_the_change_unverified(host, targets):
    proof = ["send su - {username} -c true", "expect (?i)password: ?$", "send {secret}",
             "timeout 1", "expect never printed", "fail (?i)authentication failure"]
    result = rotate(command(host, "alice", fresh(), params={"preset": "linux-passwd",
                                                            "proof": proof}),
                    targets, "w1", False)
    assert (result.status, result.error_code) == ("unverified", "timeout")
    assert "the proof failed" in result.error


def test_a_refused_privileged_login_is_not_tried_again_for_the_next_account(host, targets):
    """A batch of accounts on a device whose privileged password is wrong costs the device one
    refused login, not one per account (which could lock the account out)."""
    time.sleep(0.3)
    log_before = host.log_path.read_text()
    wrong = ("ops", "not-the-ops-password")
    results = [rotate(command(host, user, fresh(), login=wrong), targets, "w1", False)
               for user in ("alice", "bob")]
    assert [(r.status, r.error_code) for r in results] == [("failed", "login_failed")] * 2
    assert "a moment ago" in results[1].error
    time.sleep(0.3)
    assert host.log_path.read_text()[len(log_before):].count("Failed password for ops") == 1
