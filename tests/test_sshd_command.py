"""The sshd test hosts as a command for demos and benchmarks: `python -m tests.sshd_hosts up`
starts real hosts that log users in with the passwords it prints, and tears them down on
Ctrl-C."""
from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import paramiko

from tests.processes import wait_until

ROOT = Path(__file__).resolve().parents[1]


def logs_in(host: dict, username: str, password: str) -> bool:
    client = paramiko.SSHClient()
    key_type, key_data = host["host_key"].split()
    client.get_host_keys().add(host["address"], key_type, paramiko.PKey.from_type_string(
        key_type, base64.b64decode(key_data)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host["address"], host["port"], username, password, timeout=5,
                       banner_timeout=5, auth_timeout=5, allow_agent=False, look_for_keys=False)
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def answers(host: dict) -> bool:
    try:
        with socket.create_connection((host["address"], host["port"]), timeout=1) as conn:
            return conn.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def test_up_serves_hosts_until_ctrl_c(tmp_path):
    listing = tmp_path / "hosts.json"
    command = subprocess.Popen(
        [sys.executable, "-m", "tests.sshd_hosts", "up", "--hosts", "2", "--users", "root,alice",
         "--json", str(listing)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_until(listing.exists, 60, what="the hosts' listing")
        hosts = json.loads(listing.read_text())
        assert len(hosts) == 2 and len({h["address"] for h in hosts}) == 2
        for host in hosts:
            assert host["address"].startswith("127.77.")
            assert logs_in(host, "alice", host["users"]["alice"])
            assert logs_in(host, "root", host["users"]["root"])
            assert not logs_in(host, "alice", "not-" + host["users"]["alice"])
        assert hosts[0]["users"]["alice"] != hosts[1]["users"]["alice"]     # random, per host
    finally:
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    assert "2 hosts up; stop with Ctrl-C" in out and "Traceback" not in err
    assert not any(answers(host) for host in hosts)


def test_the_command_needs_no_pytest():
    blocked = ("import sys; sys.modules['pytest'] = None; sys.argv = ['sshd_hosts', '--help']; "
               "import runpy; runpy.run_module('tests.sshd_hosts', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "up" in done.stdout, done.stderr
