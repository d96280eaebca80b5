"""Self-tests of the sshd test-host fixture (tests/sshd_hosts.py)."""

import base64
import os
import socket
import time
from pathlib import Path

import paramiko
import pytest

from tests.sshd_hosts import SshHost, SshHostFarm  # noqa: E402



def _connect(host: SshHost, username: str, password: str) -> paramiko.SSHClient:
    """An SSH session to host, verifying the host key the fixture reports."""
    client = paramiko.SSHClient()
    key_type, key_data = host.host_public_key.split()
    client.get_host_keys().add(host.address, key_type,
                               paramiko.Ed25519Key(data=base64.b64decode(key_data)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, host.port, username, password, timeout=5,
                   allow_agent=False, look_for_keys=False)
    return client


def _exec(client: paramiko.SSHClient, command: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run command over SSH; exit status, stdout, stderr."""
    chan_in, chan_out, chan_err = client.exec_command(command, timeout=20)
    chan_in.write(stdin)
    chan_in.channel.shutdown_write()
    out, err = chan_out.read().decode(), chan_err.read().decode()
    return chan_out.channel.recv_exit_status(), out, err


def _served_key(host: SshHost) -> str:
    """The host key sshd actually presents, as an OpenSSH public line."""
    with socket.create_connection((host.address, host.port), timeout=5) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=5)
            key = transport.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"
        finally:
            transport.close()


def _processes_in(namespace: str) -> list[int]:
    """Pids of live processes in the given mount namespace ("mnt:[inode]")."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def two_hosts(ssh_farm):
    """Two hosts that both have alice with the same password."""
    return ssh_farm.start_hosts(2, users={"alice": "alice-old"},
                                sudo_user=("ops", "ops-pw"))


def test_password_change_stays_on_its_host(two_hosts):
    one, two = two_hosts
    assert one.address != two.address and one.address.startswith("127.77.")
    before = two.shadow_line("alice")

    one.set_password("alice", "alice-new")

    assert one.password_works("alice", "alice-new")
    assert not one.password_works("alice", "alice-old")
    assert two.password_works("alice", "alice-old")
    assert not two.password_works("alice", "alice-new")
    assert two.shadow_line("alice") == before != one.shadow_line("alice")
    assert not any(line.startswith("alice:") for line in Path("/etc/shadow").read_text().splitlines())
    assert not any(line.startswith("alice:") for line in Path("/etc/passwd").read_text().splitlines())
    assert not Path("/home/alice").exists()
    one.set_password("alice", "alice-old")


def test_user_can_exec_and_sudo(two_hosts):
    host = two_hosts[0]
    with _connect(host, "alice", "alice-old") as alice:
        assert _exec(alice, "id -un; pwd") == (0, "alice\n/home/alice\n", "")
        assert _exec(alice, "sudo -n true")[0] != 0
    with _connect(host, "ops", "ops-pw") as ops:
        assert _exec(ops, "sudo -n true")[0] == 0
        assert _exec(ops, "sudo -n id -u")[1] == "0\n"

    host.add_user("pat", "pat-pw", sudo="password")
    with _connect(host, "pat", "pat-pw") as pat:
        assert _exec(pat, "sudo -n true")[0] != 0
        assert _exec(pat, "sudo -S -p '' id -u", stdin=b"pat-pw\n")[:2] == (0, "0\n")
        assert _exec(pat, "sudo -k; sudo -S -p '' true", stdin=b"wrong\n")[0] != 0


def test_stop_refuses_and_start_keeps_users(two_hosts):
    host = two_hosts[1]
    shadow = host.shadow_line("alice")
    host.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.address, host.port), timeout=2).close()
    host.start()
    assert host.shadow_line("alice") == shadow
    assert host.password_works("alice", "alice-old")
    with _connect(host, "alice", "alice-old") as alice:
        assert _exec(alice, "test -d /home/alice && echo home")[1] == "home\n"


def test_pause_hangs_connections_until_resume(two_hosts):
    host = two_hosts[1]
    host.pause()
    try:
        sock = socket.create_connection((host.address, host.port), timeout=0.5)
        with pytest.raises(socket.timeout):
            sock.recv(64)
    finally:
        host.resume()
    sock.settimeout(5)
    assert sock.recv(64).startswith(b"SSH-2.0")
    sock.close()
    assert host.password_works("alice", "alice-old")


def test_new_host_key_is_served(two_hosts):
    host = two_hosts[0]
    old = host.host_public_key
    assert _served_key(host) == old
    host.new_host_key()
    assert host.host_public_key != old
    assert host.host_public_key.startswith("ssh-ed25519 AAAA")
    assert _served_key(host) == host.host_public_key
    assert host.password_works("alice", "alice-old")


def test_twenty_hosts_start_and_are_torn_down(tmp_path):
    farm = SshHostFarm(tmp_path)
    try:
        started = time.monotonic()
        hosts = farm.start_hosts(20, users={"alice": "pw"})
        elapsed = time.monotonic() - started
        print(f"\nstarted 20 sshd hosts in {elapsed:.2f}s")
        assert len({host.address for host in hosts}) == 20
        namespaces = {host.run(["readlink", "/proc/self/ns/mnt"]).stdout.decode().strip()
                      for host in hosts}
        assert len(namespaces) == 20
        assert all(_processes_in(namespace) for namespace in namespaces)
        session = _connect(hosts[0], "alice", "pw")
        session.exec_command("sleep 300")  # a live session must be torn down too
        directories = [host.directory for host in hosts]
    finally:
        started = time.monotonic()
        farm.close()
        print(f"closed them in {time.monotonic() - started:.2f}s")
    session.close()
    for namespace in namespaces:
        assert _processes_in(namespace) == []
    for host in hosts:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host.address, host.port), timeout=2).close()
    assert not any(directory.exists() for directory in directories)
    farm.close()
