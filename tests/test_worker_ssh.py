"""worker.ssh against real sshd test hosts: host-key pinning before any password, clear error
codes, and the exec helper's stdin, output and hard deadline."""
from __future__ import annotations

import subprocess
import time

import pytest

from shared.messages import AssetTarget
from worker import ssh
from worker.ssh import SshError

ROOT_PASSWORD = "root-pw-ssh"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-pw"})
    host.set_password("root", ROOT_PASSWORD)
    yield host
    host.close()


def target(host, **fields) -> AssetTarget:
    values = {"name": "web-1", "address": host.address, "port": host.port, "platform": "linux",
              "host_key": host.host_public_key} | fields
    return AssetTarget(**values)


def password_lines(host) -> list[str]:
    """sshd's password log lines, once it has logged what earlier tests did (it writes a
    moment after it answers)."""
    lines = None
    while lines != (lines := [line for line in host.log_path.read_text().splitlines()
                              if "password for" in line]):
        time.sleep(0.3)
    return lines


def test_pinned_key_logs_in_and_reports_the_key(host):
    with ssh.connect(target(host), timeout=5) as connection:
        assert connection.host_key == host.host_public_key
        assert not connection.login("alice", "not-it")
        assert connection.login("alice", "alice-pw")
    assert ssh.login_works(target(host), "alice", "alice-pw", 5) == (True, host.host_public_key)


def test_changed_host_key_is_refused_before_any_password(host):
    before = password_lines(host)
    with pytest.raises(SshError) as caught:
        ssh.login_works(target(host, host_key=OTHER_KEY), "alice", "alice-pw", 5)
    assert caught.value.code == "host_key_mismatch"
    assert "web-1" in str(caught.value) and "SHA256:" in str(caught.value)
    assert password_lines(host) == before      # sshd saw no password attempt at all


def test_unpinned_key_needs_first_use_trust(host):
    before = password_lines(host)
    with pytest.raises(SshError) as caught:
        ssh.connect(target(host, host_key=None), timeout=5)
    assert caught.value.code == "host_key_unknown"
    assert password_lines(host) == before
    check = ssh.login_works(target(host, host_key=None, trust_first_use=True), "alice",
                               "alice-pw", 5)
    assert check == (True, host.host_public_key)


def test_exec_feeds_stdin_and_collects_output_and_status(host):
    data = "it's \"quoted\" $HOME `x` {{ y }} \\ ü 密码\n".encode()
    with ssh.connect(target(host), timeout=5) as connection:
        assert connection.login("root", ROOT_PASSWORD)
        done = connection.run(["sh", "-c", "cat; echo to-stderr >&2; exit 3"], data, timeout=5)
        assert (done.status, done.stdout.encode(), done.stderr) == (3, data, "to-stderr\n")
        quoted = connection.run(["printf", "%s|", "a b", "$HOME", "'"], timeout=5)
        assert quoted.stdout == "a b|$HOME|'|"           # argv survives the remote shell
        echoed = connection.run(["sh", "-c", "cat >&2; exit 1"], b"user:s3cret-value\n",
                                timeout=5, secrets=["s3cret-value"])
        assert echoed.stderr == "user:***\n"


def test_exec_has_a_hard_deadline(host):
    with ssh.connect(target(host), timeout=5) as connection:
        assert connection.login("root", ROOT_PASSWORD)
        started = time.monotonic()
        with pytest.raises(SshError) as caught:
            connection.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - started < 3
        assert (caught.value.code, caught.value.command_sent) == ("timeout", True)
        assert connection.run(["true"], timeout=5).status == 0   # the transport is still usable


def test_stopped_host_is_unreachable(ssh_farm):
    host, = ssh_farm.start_hosts(1)
    try:
        host.stop()
        with pytest.raises(SshError) as caught:
            ssh.connect(target(host), timeout=5)
        assert caught.value.code == "unreachable" and "refused" in str(caught.value)
    finally:
        host.close()


def test_paused_host_times_out(ssh_farm):
    host, = ssh_farm.start_hosts(1)
    try:
        host.pause()
        started = time.monotonic()
        with pytest.raises(SshError) as caught:
            ssh.connect(target(host), timeout=1)
        assert caught.value.code == "timeout"
        assert time.monotonic() - started < 3
    finally:
        host.resume()
        host.close()


def test_unresolvable_address_is_unreachable(host):
    with pytest.raises(SshError) as caught:
        ssh.connect(target(host, address="no-such-host.invalid"), timeout=5)
    assert caught.value.code == "unreachable"


def test_fingerprint_matches_ssh_keygen(host, tmp_path):
    key_file = tmp_path / "key.pub"
    key_file.write_text(host.host_public_key + "\n")
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(key_file)], capture_output=True,
                            text=True, check=True).stdout.split()[1]
    assert ssh.fingerprint(host.host_public_key) == listed


def test_input_waits_for_the_ready_line(host):
    """The preamble is read first; the input is only sent once the command says it is ready."""
    script = ('read -r pw; echo "got $pw" >&2; sleep 0.5; '
              'if read -t 0; then echo early >&2; fi; echo keyturn-ready; cat')
    with ssh.connect(target(host), timeout=5) as connection:
        assert connection.login("root", ROOT_PASSWORD)
        done = connection.run(["bash", "-c", script], b"the input\n", timeout=5,
                              preamble=b"first-line\n", ready=b"keyturn-ready\n")
        assert done == (0, "the input\n", "got first-line\n", True)
        refused = connection.run(["bash", "-c", "read -r pw; echo refused >&2; exit 1"],
                                 b"the input\n", timeout=5, preamble=b"first-line\n",
                                 ready=b"keyturn-ready\n")
        assert refused == (1, "", "refused\n", False)
        raw = connection.run(["printf", "a\\377b"], timeout=5, binary=True)
        assert raw.stdout == b"a\xffb"
