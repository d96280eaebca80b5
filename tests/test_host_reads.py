"""Reads from managed hosts are bounded, on real sshd hosts: a command's output is cut at
`OUTPUT_LIMIT` and its channel closed; an authorized_keys file that is not a regular file of sane
size is refused before it is read; a read that blocks anyway is killed on the host. The worker's
memory stays small, and nothing is left running on the host (its own process list)."""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from tests.test_worker_keys import OPS, authorized, key_command, new_key, public, reset
from tests.test_worker_rotate import ROOT_PW
from worker import authorized_keys, ssh
from worker.platforms import ChangeFailed
from worker.platforms.linux import LinuxDriver
from worker.rotate import rotate
from worker.ssh import SshError

KEYS = "/home/alice/.ssh/authorized_keys"
MEMORY_SLACK = 64 * 1024   # KiB the test process may grow by: well under what it reads unbounded


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-0"}, sudo_user=OPS)
    host.set_password("root", ROOT_PW)
    yield host
    host.close()


@pytest.fixture
def root(host):
    """A root connection to the host, as the worker opens it."""
    asset = key_command(host, "alice", new_key()).asset
    with ssh.connect(asset, timeout=5) as connection:
        assert connection.login("root", ROOT_PW)
        yield connection


def peak_memory() -> int:
    """The test process's peak resident size so far, in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def running(host, user: str | None = None) -> list[str]:
    """Command lines of the processes on the host (in its mount namespace: the PIDs are the
    machine's), those of `user` only if given, once any that are ending have ended."""
    namespace = host.run(["readlink", "/proc/self/ns/mnt"]).stdout.decode().strip()
    uid = int(host.run(["id", "-u", user]).stdout) if user else None
    deadline = time.monotonic() + 5
    while True:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.readlink(proc / "ns" / "mnt") == namespace and uid in (None, proc.stat().st_uid):
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:   # it ended meanwhile
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def as_alice(host, *argv: str) -> None:
    host.run(["runuser", "-u", "alice", "--", *argv])


@pytest.mark.parametrize("ready", [None, b"keyturn-ready\n"], ids=["output", "before the ready line"])
def test_endless_output_is_cut_at_the_limit(host, root, ready):
    before, started = peak_memory(), time.monotonic()
    with pytest.raises(SshError) as caught:
        root.run(["cat", "/dev/zero"], timeout=10, ready=ready)
    assert caught.value.code == "output_too_large"
    assert f"more than {ssh.OUTPUT_LIMIT} bytes" in str(caught.value)
    assert time.monotonic() - started < 3                 # stopped at the limit, not the deadline
    assert peak_memory() - before < MEMORY_SLACK
    assert not [line for line in running(host) if "/dev/zero" in line]   # the channel closed
    assert root.run(["true"], timeout=5).status == 0      # the connection is still usable


def test_output_up_to_the_limit_is_read_whole(root):
    done = root.run(["head", "-c", str(ssh.OUTPUT_LIMIT), "/dev/zero"], timeout=10, binary=True)
    assert (done.status, len(done.stdout)) == (0, ssh.OUTPUT_LIMIT)


@pytest.mark.parametrize("plant,code", [
    (["ln", "-s", "/dev/zero", KEYS], "unsafe_file"),
    (["mkfifo", KEYS], "unsafe_file"),
    (["truncate", "-s", "50M", KEYS], "file_too_large"),
], ids=["link to /dev/zero", "FIFO", "50 MB file"])
def test_authorized_keys_that_cannot_be_read_safely_is_refused(host, targets, plant, code):
    reset(host, "alice")
    as_alice(host, "mkdir", "-m", "0700", "/home/alice/.ssh")
    as_alice(host, *plant)
    planted = host.run(["stat", "-c", "%F %s", KEYS]).stdout
    before, started = peak_memory(), time.monotonic()
    result = rotate(key_command(host, "alice", new_key(), "add"), targets, "w1", False)
    assert (result.status, result.error_code) == ("failed", code)
    assert f"{KEYS} on web-1 is" in result.error and "refused" in result.error
    assert time.monotonic() - started < 3                 # refused, not timed out
    assert peak_memory() - before < MEMORY_SLACK
    assert host.run(["stat", "-c", "%F %s", KEYS]).stdout == planted
    assert host.run(["ls", "-A", "/home/alice/.ssh"]).stdout == b"authorized_keys\n"   # no draft
    assert running(host, "alice") == []


def test_a_file_of_the_limit_is_still_read(host, targets):
    reset(host, "alice")
    as_alice(host, "mkdir", "-m", "0700", "/home/alice/.ssh")
    comment = b"#" * (authorized_keys.SIZE_LIMIT - 1) + b"\n"
    host.run(["runuser", "-u", "alice", "--", "tee", KEYS], input=comment)
    key = new_key()
    result = rotate(key_command(host, "alice", key, "add"), targets, "w1", False)
    assert result.status == "success", result.error
    assert authorized(host, "alice") == [comment.decode().strip(), f"{public(key)} keyturn-managed"]


def test_a_read_that_blocks_anyway_is_killed_on_the_host(host, root):
    """A FIFO swapped in between the type check and the read: the host ends the read at the
    command's timeout, and the channel's own (longer) deadline is never reached."""
    reset(host, "alice")
    as_alice(host, "mkdir", "-m", "0700", "/home/alice/.ssh")
    as_alice(host, "touch", KEYS)
    driver = LinuxDriver()

    def run_as_alice(argv, stdin=b"", **options):
        done = root.run(driver.as_user("alice", argv), stdin, timeout=20, **options)
        if argv[:2] == ["test", "-f"]:
            as_alice(host, "sh", "-c", f"rm {KEYS} && mkfifo {KEYS}")
        return done

    started = time.monotonic()
    with pytest.raises(ChangeFailed) as caught:
        driver.read_keys(run_as_alice, KEYS, key_command(host, "alice", new_key(), timeout=1))
    assert f"cannot read {KEYS} on web-1" in str(caught.value)
    assert time.monotonic() - started < 5
    assert running(host, "alice") == []
