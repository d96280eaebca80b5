"""SSH-key secrets on a real sshd host: the public line lands in authorized_keys by the plan's
strategy with the right owner and modes, is proven by a key login (checked here with the
OpenSSH client), leaves the password alone, and follows the repeat rule. Also a privileged login
with a key, and the authorized_keys merge on its own."""
from __future__ import annotations

import logging
import subprocess
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.test_worker_rotate import ROOT_PW, command, fresh
from worker import authorized_keys, sshkeys
from worker.rotate import rotate

OPS = ("ops", "ops-pw-keys")                     # NOPASSWD sudoer
SUDOER = ("sudoer", "sudoer 'pw' $x {{ y }}")    # sudo asks its own password
PLAIN = ("plain", "plain-pw-keys")               # no sudo; knows root's password (su)
USERS = {"alice": "alice-0", "bob": "bob-0", "carol": "carol-0", "dave": "dave-0"}
LOGINS = {"root": {"login": ("root", ROOT_PW)},
          "nopasswd sudo": {"login": OPS},
          "password sudo": {"login": SUDOER},
          "su": {"login": PLAIN, "params": {"become": "su", "become_secret": ROOT_PW}}}
FOREIGN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users=USERS, sudo_user=OPS)
    host.set_password("root", ROOT_PW)
    host.add_user(*SUDOER, sudo="password")
    host.add_user(*PLAIN)
    yield host
    host.close()


@cache
def rsa_key() -> str:
    return _openssh(rsa.generate_private_key(public_exponent=65537, key_size=4096))


def new_key(kind: str = "ed25519") -> str:
    if kind == "rsa":
        return rsa_key()
    if kind == "ecdsa":
        return _openssh(ec.generate_private_key(ec.SECP256R1()))
    return _openssh(ed25519.Ed25519PrivateKey.generate())


def _openssh(key) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()


def key_command(host, user: str, key: str, strategy: str | None = None, *, via: str = "root",
                **fields):
    login = LOGINS[via]
    params = login.get("params", {}) | ({"key_strategy": strategy} if strategy else {})
    return command(host, user, key, login=login["login"], secret_type="ssh_key",
                   params=params | fields.pop("params", {}), **fields)


def key_works(host, user: str, key: str, tmp_path) -> bool:
    """A login with the OpenSSH client (not the worker's code), host key pinned."""
    key_file, known = tmp_path / f"id-{fresh()}", tmp_path / "known_hosts"
    key_file.write_text(key)
    key_file.chmod(0o600)
    known.write_text(f"{host.address} {host.host_public_key}\n")
    done = subprocess.run(["ssh", "-i", str(key_file), "-o", "BatchMode=yes",
                           "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
                           "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                           "-o", "ConnectTimeout=10", f"{user}@{host.address}", "true"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def authorized(host, user: str) -> list[str]:
    done = host.run(["cat", f"/home/{user}/.ssh/authorized_keys"], check=False)
    return done.stdout.decode().splitlines()


def modes(host, path: str) -> str:
    return host.run(["stat", "-c", "%a %U %G %F", path]).stdout.decode().strip()


def public(key: str) -> str:
    return sshkeys.public_line(key)


def reset(host, user: str) -> None:
    host.run(["rm", "-rf", f"/home/{user}/.ssh"])


@pytest.mark.parametrize("via", LOGINS)
def test_missing_ssh_folder_is_made_and_the_key_proven(host, targets, via, tmp_path):
    reset(host, "alice")
    shadow = host.shadow_line("alice")
    key = new_key()
    result = rotate(key_command(host, "alice", key, via=via), targets, "w1", False)
    assert (result.status, result.error) == ("success", None)
    assert authorized(host, "alice") == [f"{public(key)} keyturn-managed"]
    assert modes(host, "/home/alice/.ssh") == "700 alice alice directory"
    assert modes(host, "/home/alice/.ssh/authorized_keys") == "600 alice alice regular file"
    assert key_works(host, "alice", key, tmp_path)
    assert host.shadow_line("alice") == shadow and host.password_works("alice", USERS["alice"])
    assert host.run(["ls", "-A", "/home/alice/.ssh"]).stdout.decode().split() == ["authorized_keys"]


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_each_key_type_is_installed_and_proven(host, targets, kind, tmp_path):
    key = new_key(kind)
    result = rotate(key_command(host, "bob", key, "set"), targets, "w1", False)
    assert result.status == "success", result.error
    assert authorized(host, "bob") == [f"{public(key)} keyturn-managed"]
    assert key_works(host, "bob", key, tmp_path)


def seed(host, user: str, lines: list[str]) -> None:
    """authorized_keys as a person left it: their own keys, a comment, an old keyturn key."""
    reset(host, user)
    host.run(["runuser", "-u", user, "--", "mkdir", "-m", "0700", f"/home/{user}/.ssh"])
    host.run(["runuser", "-u", user, "--", "tee", f"/home/{user}/.ssh/authorized_keys"],
             input="".join(f"{line}\n" for line in lines).encode())


def test_strategies_keep_what_they_should(host, targets, tmp_path):
    old = new_key()
    mine = ["# carol's laptop", f'from="10.0.0.1",command="echo a b" {FOREIGN} carol@laptop']
    results = {}
    for strategy in ("add", "set_managed", "set"):
        seed(host, "carol", [*mine, f"{public(old)} keyturn-managed"])
        key = new_key()
        results[strategy] = rotate(key_command(host, "carol", key, strategy), targets, "w1", False)
        assert results[strategy].status == "success", results[strategy].error
        assert key_works(host, "carol", key, tmp_path)
        kept = authorized(host, "carol")
        expected = {"add": [*mine, f"{public(old)} keyturn-managed", f"{public(key)} keyturn-managed"],
                    "set_managed": [*mine, f"{public(key)} keyturn-managed"],
                    "set": [f"{public(key)} keyturn-managed"]}[strategy]
        assert kept == expected, strategy
        assert key_works(host, "carol", old, tmp_path) == (strategy == "add")
        assert modes(host, "/home/carol/.ssh/authorized_keys") == "600 carol carol regular file"


def test_add_does_not_duplicate_a_key_already_there(host, targets):
    key = new_key()
    seed(host, "carol", [f"{public(key)} put-there-by-hand"])
    result = rotate(key_command(host, "carol", key, "add"), targets, "w1", False)
    assert result.status == "success"
    assert authorized(host, "carol") == [f"{public(key)} put-there-by-hand"]


def test_the_default_strategy_replaces_only_managed_keys(host, targets):
    seed(host, "carol", [FOREIGN])
    first, second = new_key(), new_key()
    for key in (first, second):
        assert rotate(key_command(host, "carol", key), targets, "w1", False).status == "success"
    assert authorized(host, "carol") == [FOREIGN, f"{public(second)} keyturn-managed"]


def test_a_planted_symlink_is_not_followed_as_root(host, targets, tmp_path):
    """The account links its authorized_keys to root's: the new file replaces the link, written
    with the account's rights, and root's file is untouched."""
    host.run(["sh", "-c", "mkdir -p -m 0700 /root/.ssh && echo root-only > /root/.ssh/authorized_keys"])
    reset(host, "dave")
    host.run(["runuser", "-u", "dave", "--", "mkdir", "-m", "0700", "/home/dave/.ssh"])
    host.run(["runuser", "-u", "dave", "--", "ln", "-s", "/root/.ssh/authorized_keys",
              "/home/dave/.ssh/authorized_keys"])
    key = new_key()
    result = rotate(key_command(host, "dave", key, "add"), targets, "w1", False)
    assert result.status == "success", result.error
    assert host.run(["cat", "/root/.ssh/authorized_keys"]).stdout == b"root-only\n"
    assert authorized(host, "dave") == [f"{public(key)} keyturn-managed"]   # root's line not copied
    assert modes(host, "/home/dave/.ssh/authorized_keys") == "600 dave dave regular file"
    assert key_works(host, "dave", key, tmp_path)


def test_repeats_follow_the_rule_with_keys(host, targets):
    old, new, newer = new_key(), new_key(), new_key()
    assert rotate(key_command(host, "bob", old, "set"), targets, "w1", False).status == "success"
    repeat = rotate(key_command(host, "bob", new, "set", attempt=2, old_secret=old), targets, "w1", False)
    assert repeat.status == "success"
    before = authorized(host, "bob")
    again = rotate(key_command(host, "bob", new, "set", attempt=3, old_secret=old), targets, "w1", True)
    assert (again.status, again.login_index) == ("success", None)   # new key works: nothing sent
    assert authorized(host, "bob") == before
    assert rotate(key_command(host, "bob", newer, "set"), targets, "w1", False).status == "success"
    stale = rotate(key_command(host, "bob", new, "set", attempt=2, old_secret=old), targets, "w1", False)
    assert (stale.status, stale.error_code) == ("failed", "stale")
    assert authorized(host, "bob") == [f"{public(newer)} keyturn-managed"]


def test_verify_tries_key_candidates(host, targets):
    current = new_key()
    assert rotate(key_command(host, "bob", current, "set"), targets, "w1", False).status == "success"
    found = rotate(command(host, "bob", action="verify", secret_type="ssh_key",
                           candidates=[new_key(), current]), targets, "w1", False)
    assert (found.status, found.working_index) == ("success", 1)


def test_a_privileged_login_with_a_key(host, targets):
    """ops logs in with a key (installed by a first rotation), then rotates bob's password."""
    ops_key = new_key()
    assert rotate(key_command(host, "ops", ops_key, "add"), targets, "w1", False).status == "success"
    new = fresh()
    result = rotate(command(host, "bob", new, login=("ops", new_key(), ops_key),
                            login_secret_type="ssh_key"), targets, "w1", False)
    assert (result.status, result.login_index) == ("success", 1)
    assert host.password_works("bob", new)
    assert "Accepted publickey for ops" in host.log_path.read_text()


def test_a_key_login_cannot_feed_sudo_a_password(host, targets):
    sudoer_key = new_key()
    assert rotate(key_command(host, "sudoer", sudoer_key, "add"), targets, "w1", False).status == "success"
    result = rotate(command(host, "bob", fresh(), login=("sudoer", sudoer_key),
                            login_secret_type="ssh_key"), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", "privilege_failed")
    assert "logs in with an SSH key" in result.error


def test_no_key_in_results_or_logs(host, targets, caplog):
    caplog.set_level(logging.DEBUG)
    keys = [new_key() for _ in range(4)]
    results = [rotate(key_command(host, "alice", keys[0], via="password sudo"), targets, "w1", False),
               rotate(key_command(host, "alice", keys[1], via="su"), targets, "w1", False),
               rotate(key_command(host, "nobody9", keys[2]), targets, "w1", False),
               rotate(command(host, "alice", action="verify", secret_type="ssh_key",
                              candidates=[keys[3]]), targets, "w1", False)]
    assert [r.status for r in results] == ["success", "success", "failed", "failed"]
    everything = caplog.text + "".join(r.model_dump_json() for r in results)
    for secret in [*keys, SUDOER[1], ROOT_PW]:
        for line in secret.splitlines()[1:-1]:   # no piece of a key's body either
            assert line not in everything
        assert secret not in everything


def test_the_merge_on_its_own():
    mine = f'command="a b",from="x" {FOREIGN} me'
    text = f"# note\n{mine}\n\nssh-rsa AAAAold keyturn-managed\n"
    line = "ssh-ed25519 AAAAnew"
    assert authorized_keys.updated(text, line, "set_managed") == \
        f"# note\n{mine}\n\nssh-ed25519 AAAAnew keyturn-managed\n"
    assert authorized_keys.updated(text, line, "set") == "ssh-ed25519 AAAAnew keyturn-managed\n"
    assert authorized_keys.updated(text, line, "add") == text + "ssh-ed25519 AAAAnew keyturn-managed\n"
    assert authorized_keys.updated(text, FOREIGN, "add") == text
    assert authorized_keys.updated("", line, "add") == "ssh-ed25519 AAAAnew keyturn-managed\n"
    assert authorized_keys.updated("no newline at end", line, "add") == \
        "no newline at end\nssh-ed25519 AAAAnew keyturn-managed\n"
