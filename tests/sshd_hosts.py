"""Real OpenSSH test hosts, each with its own user database.

Every host is a long-lived *holder* process in a private mount namespace that
sees its own copy-on-write /etc, /var and /usr/local (overlays over the machine's) and
private tmpfs /run, /home and /root; the machine's users and files are never
touched.  sshd is started inside that namespace with nsenter, so it can be
stopped, paused and restarted while the users, passwords and home directories
survive.  Each host listens on its own 127.77.x.y:22; or, on a farm given a
``tests.wan.Wan``, in its own network namespace too, tens of milliseconds away
from the Wan's client namespace (benchmarks of latency-bound fleets).

The holder ends, and first kills every process in its namespace, when the pipe
on its stdin closes: on close(), and also when the test process dies in any
way, so no sshd outlives a crashed run.  Needs root, unshare and nsenter; the
base directory must not live under /var, /run, /home or /root.

Load into a test session with ``pytest_plugins = ["tests.sshd_hosts"]`` and use
the ``ssh_farm`` fixture.  For demos and benchmarks, outside pytest, the same
hosts run until Ctrl-C (see ``main``)::

    python -m tests.sshd_hosts up --hosts 3 --users alice,bob --json hosts.json
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import secrets
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from tests.processes import claim_address
from tests.wan import Wan, in_netns

try:
    import pytest
except ImportError:        # run as a command where only keyturn's own packages are installed
    pytest = None

SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 10.0
SUDO_RULES = {"nopasswd": "ALL=(ALL) NOPASSWD: ALL", "password": "ALL=(ALL) ALL"}

# Runs as `sh -c HOLDER_SCRIPT holder SCRATCH` inside a fresh private mount namespace.
HOLDER_SCRIPT = r"""
set -e
scratch=$1
mount -t tmpfs -o mode=0700 tmpfs "$scratch"
for d in etc var usr/local; do
  mkdir -p "$scratch/$d" "$scratch/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d,workdir=$scratch/$d.work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0755 /run/sshd
mount -t tmpfs -o mode=0755 tmpfs /home
mount -t tmpfs -o mode=0700 tmpfs /root
# Only in this host's /etc overlay: no 2-4 s penalty per wrong password, and
# sessions also work where writing /proc/self/loginuid is not permitted.
sed -i 's/^\(auth.*pam_unix\.so.*\)$/\1 nodelay/' /etc/pam.d/common-auth
sed -i 's/^session\s\+required\s\+pam_loginuid\.so/session optional pam_loginuid.so/' /etc/pam.d/sshd
echo ready
read -r _ || true
set +e
while :; do
  killed=0
  for p in /proc/[0-9]*; do
    if [ "$p" != /proc/$$ ] && [ "$p/ns/mnt" -ef /proc/$$/ns/mnt ]; then
      kill -9 "${p#/proc/}" 2>/dev/null && killed=1
    fi
  done
  [ $killed = 0 ] && break
done
"""


_HASHES: dict[str, str] = {}
_HASHES_LOCK = threading.Lock()


def _crypt_hashes(passwords: list[str]) -> dict[str, str]:
    """sha512-crypt hashes of `passwords` (openssl), each computed once for every host."""
    with _HASHES_LOCK:
        new = [p for p in dict.fromkeys(passwords) if p not in _HASHES]
        if new:
            done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], check=True,
                                  capture_output=True, timeout=60 + len(new),
                                  input="".join(f"{p}\n" for p in new).encode())
            _HASHES.update(zip(new, done.stdout.decode().split()))
        return {p: _HASHES[p] for p in passwords}


class SshHost:
    """One sshd test host with its own users, served on address:22."""

    port = 22

    def __init__(self, name: str, directory: Path, wan: Wan | None = None):
        """Create the namespace and host key and start sshd; cleans up after itself on failure.
        With a `wan`, the host gets its own network namespace behind it."""
        self.name = name
        self.directory = directory
        self.wan = wan
        self.log_path = directory / "sshd.log"
        self._key_path = directory / "ssh_host_ed25519_key"
        self._config_path = directory / "sshd_config"
        self._holder: subprocess.Popen | None = None
        self._sshd: subprocess.Popen | None = None
        if wan is None:
            self.address, self._address_lock = claim_address("127.77", (22,))
        else:        # the address exists only in this host's and the Wan's namespaces
            self.address, self._address_lock = wan.new_address(), None
        try:
            scratch = directory / "namespace"
            scratch.mkdir(parents=True)
            with open(self.log_path, "ab") as log:
                self._holder = subprocess.Popen(
                    ["unshare", "--mount", *(["--net"] if wan else []), "--propagation",
                     "private", "sh", "-c", HOLDER_SCRIPT, "holder", str(scratch)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                )
            if self._holder.stdout.readline() != b"ready\n":
                raise RuntimeError(f"{name}: namespace setup failed:\n{self._log_tail()}")
            self._holder.stdout.close()
            if wan is not None:
                wan.attach(self.address, self._netns)
            self._generate_host_key()
            self._config_path.write_text(
                f"ListenAddress {self.address}:{self.port}\n"
                f"HostKey {self._key_path}\n"
                "PidFile none\n"
                "UsePAM yes\n"
                "PasswordAuthentication yes\n"
                "KbdInteractiveAuthentication no\n"
                "PubkeyAuthentication yes\n"
                "PermitRootLogin yes\n"
                "UseDNS no\n"
                "MaxStartups 200:30:400\n"
                "MaxSessions 100\n"
                "LogLevel INFO\n"
                "Subsystem sftp internal-sftp\n"
            )
            self.start()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        """Name and address, so failing tests say which host."""
        return f"<SshHost {self.name} {self.address}:{self.port}>"

    def add_user(self, username: str, password: str, *, sudo: str | None = None,
                 shell: str = "/bin/bash") -> None:
        """Create a user with a home dir; sudo is None, "nopasswd" or "password" (asks own password)."""
        rule = SUDO_RULES[sudo] if sudo else None
        self.run(["useradd", "--create-home", "--shell", shell, username])
        self.set_password(username, password)
        if rule:
            path = f"/etc/sudoers.d/keyturn-{username.replace('.', '_')}"
            self.run(["sh", "-c", 'umask 0337 && cat > "$1"', "sh", path],
                     input=f"{username} {rule}\n".encode())

    def add_users(self, passwords: dict[str, str], first_uid: int = 20000) -> None:
        """Create many plain users, for benchmarks with thousands of accounts: their lines
        appended to this host's own passwd, group and shadow files at once (useradd takes a
        tenth of a second each on a busy machine), no home directories (a password login needs
        none), first passwords hashed by openssl's sha512-crypt (what a rotation sets is
        hashed as the host does)."""
        hashes = _crypt_hashes(list(passwords.values()))
        files = {"passwd": "", "group": "", "shadow": ""}
        for uid, (name, password) in enumerate(passwords.items(), start=first_uid):
            files["passwd"] += f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n"
            files["group"] += f"{name}:x:{uid}:\n"
            files["shadow"] += f"{name}:{hashes[password]}:20000:0:99999:7:::\n"
        for name, lines in files.items():
            self.run(["sh", "-c", f"cat >> /etc/{name}"], input=lines.encode())

    def set_password(self, username: str, password: str) -> None:
        """Set a password the way an admin would: chpasswd, password on stdin."""
        self.run(["chpasswd"], input=f"{username}:{password}\n".encode())

    def password_works(self, username: str, password: str) -> bool:
        """Whether a real SSH password login succeeds; False when the host refuses it, raises on
        other errors. An answer that does not come in time (a slow PAM check on a busy machine)
        is such an error, not a refusal."""
        client = paramiko.SSHClient()
        key_type, key_data = self.host_public_key.split()
        client.get_host_keys().add(self.address, key_type,
                                   paramiko.Ed25519Key(data=base64.b64decode(key_data)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        connect = functools.partial(client.connect, self.address, self.port, username, password,
                                    timeout=10, banner_timeout=30, auth_timeout=30,
                                    allow_agent=False, look_for_keys=False)
        try:
            if self.wan is None:
                connect()
            else:                  # from where the hosts' clients are, over the slow link
                in_netns(self.wan.client_netns, connect)
            return True
        except paramiko.AuthenticationException as exc:
            if str(exc) == "Authentication timeout.":
                raise TimeoutError(f"{username}@{self.name}: no answer to the login in time") from exc
            return False
        finally:
            client.close()

    def run(self, argv: list[str], input: bytes | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command as root inside the host (its /etc, users, homes); output captured."""
        return subprocess.run(self._nsenter(argv), input=input, capture_output=True,
                              check=check, timeout=timeout)

    def shadow_line(self, username: str) -> str:
        """The user's line in the host's /etc/shadow, to check what a rotation wrote."""
        return self.run(["getent", "shadow", username]).stdout.decode().strip()

    def stop(self) -> None:
        """Kill sshd so connections are refused; users and open sessions survive."""
        if self._sshd is not None:
            self._sshd.kill()
            self._sshd.wait()
            self._sshd = None

    def start(self) -> None:
        """Start sshd inside the namespace and wait until it sends its banner."""
        with open(self.log_path, "ab") as log:
            self._sshd = subprocess.Popen(
                self._nsenter([SSHD, "-D", "-e", "-f", str(self._config_path)]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._serves_banner():
            if self._sshd.poll() is not None:
                raise RuntimeError(f"{self.name}: sshd exited with {self._sshd.returncode}:\n"
                                   f"{self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no SSH banner on {self.address}:{self.port} "
                                   f"after {READY_TIMEOUT}s:\n{self._log_tail()}")
            time.sleep(0.01)

    def pause(self) -> None:
        """SIGSTOP sshd: new connections are accepted by the kernel but hang (timeout tests)."""
        self._running_sshd().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT sshd: hanging connections proceed."""
        self._running_sshd().send_signal(signal.SIGCONT)

    def new_host_key(self) -> None:
        """Replace the host key (as after a reinstall) and restart sshd if it was running."""
        was_running = self._sshd is not None
        self.stop()
        self._key_path.unlink()
        self._key_path.with_suffix(".pub").unlink()
        self._generate_host_key()
        if was_running:
            self.start()

    def close(self) -> None:
        """Stop sshd, kill everything in the namespace, remove the directory; idempotent."""
        self.stop()
        if self._holder is not None:
            self._holder.stdin.close()
            try:
                self._holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()
            self._holder = None
        if self._address_lock is not None:
            os.close(self._address_lock)
            self._address_lock = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _generate_host_key(self) -> None:
        """Write a fresh ed25519 host key and remember its public line."""
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "",
                        "-f", str(self._key_path)], check=True, capture_output=True)
        key_type, key_data = self._key_path.with_suffix(".pub").read_text().split()[:2]
        self.host_public_key = f"{key_type} {key_data}"

    @property
    def _netns(self) -> str:
        return f"/proc/{self._holder.pid}/ns/net"

    def _nsenter(self, argv: list[str]) -> list[str]:
        """argv prefixed to run inside the holder's mount (and network) namespace."""
        net = [f"--net={self._netns}"] if self.wan is not None else []
        return ["nsenter", f"--mount=/proc/{self._holder.pid}/ns/mnt", *net, "--", *argv]

    def _running_sshd(self) -> subprocess.Popen:
        """The sshd process, or a clear error if it is stopped."""
        if self._sshd is None:
            raise RuntimeError(f"{self.name}: sshd is not running")
        return self._sshd

    def _serves_banner(self) -> bool:
        """Whether a TCP connect to address:22 gets the SSH-2.0 banner (from inside the host's
        own network namespace, if it has one)."""
        def probe() -> bool:
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as conn:
                    return conn.recv(64).startswith(b"SSH-2.0")
            except OSError:
                return False
        return probe() if self.wan is None else in_netns(self._netns, probe)

    def _log_tail(self, lines: int = 20) -> str:
        """Last lines of the host's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SshHostFarm:
    """Starts SshHosts under one directory and guarantees they all get torn down."""

    def __init__(self, base_dir: str | os.PathLike, wan: Wan | None = None):
        """Hosts get directories under base_dir (and their own network namespaces behind `wan`,
        if given: its owner closes it after the farm); cleanup is also registered with atexit."""
        self.base_dir = Path(base_dir)
        self.wan = wan
        self.hosts: list[SshHost] = []
        self._lock = threading.Lock()
        self._started = 0
        atexit.register(self.close)

    def start_hosts(self, count: int, users: dict[str, str] | None = None,
                    sudo_user: tuple[str, str] | None = None) -> list[SshHost]:
        """Start count hosts in parallel, each with users (name -> password) and a NOPASSWD sudoer."""
        with ThreadPoolExecutor(max_workers=min(count, 16)) as pool:
            futures = [pool.submit(self._start_host, users or {}, sudo_user)
                       for _ in range(count)]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Tear down every host this farm started, even half-started ones; idempotent."""
        with self._lock:
            hosts, self.hosts = self.hosts, []
        for host in hosts:
            host.close()

    def _start_host(self, users: dict[str, str], sudo_user: tuple[str, str] | None) -> SshHost:
        """Start one host, register it for teardown, then add its users."""
        with self._lock:
            self._started += 1
            name = f"host{self._started}"
        host = SshHost(name, self.base_dir / name, self.wan)
        with self._lock:
            self.hosts.append(host)
        if len(users) > 20:
            host.add_users(users)
        else:
            for username, password in users.items():
                host.add_user(username, password)
        if sudo_user:
            host.add_user(*sudo_user, sudo="nopasswd")
        return host


if pytest is not None:
    @pytest.fixture(scope="session")
    def ssh_farm(tmp_path_factory):
        """A session-wide SshHostFarm; closed at session end even when tests fail."""
        farm = SshHostFarm(tmp_path_factory.mktemp("sshd-hosts"))
        try:
            yield farm
        finally:
            farm.close()


def cpu_seconds(hosts: list[SshHost]) -> float:
    """CPU time used so far by everything in `hosts` (sshd, its sessions and the commands they
    ran, ended ones included: a reaped child's time is in its parent's), so a benchmark can
    compare the work two clients cause on the hosts."""
    namespaces = {os.stat(f"/proc/{h._holder.pid}/ns/mnt").st_ino for h in hosts if h._holder}
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"{entry.path}/ns/mnt").st_ino not in namespaces:
                continue
            with open(f"{entry.path}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:   # ended meanwhile
            continue
        ticks += sum(int(field) for field in fields[11:15])   # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def describe(host: SshHost, passwords: dict[str, str]) -> dict:
    """What a demo or a benchmark needs of a host: where it is, its key, its logins."""
    return {"name": host.name, "address": host.address, "port": host.port,
            "host_key": host.host_public_key, "users": passwords}


def main(argv: list[str] | None = None) -> int:
    """`up`: start hosts with the given users (random passwords unless --password), print them
    (and write them as JSON), and keep them until Ctrl-C or SIGTERM, then tear them down."""
    parser = argparse.ArgumentParser(prog="python -m tests.sshd_hosts",
                                     description="Real sshd test hosts on 127.77.x.y:22 (root).")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start hosts and keep them until Ctrl-C")
    up.add_argument("--hosts", type=int, default=1, help="how many (default 1, at most 200)")
    up.add_argument("--users", default="", help="comma-separated user names on every host "
                                                "(root: its password is set)")
    up.add_argument("--password", help="every user's password (default: a random one each)")
    up.add_argument("--sudo-user", metavar="NAME", help="also a NOPASSWD sudoer of this name")
    up.add_argument("--json", type=Path, help="write the hosts and their logins to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= 200:
        parser.error("--hosts: from 1 to 200")
    users = [name for name in args.users.split(",") if name]
    if args.sudo_user:
        users.append(args.sudo_user)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    farm = SshHostFarm(tempfile.mkdtemp(prefix="keyturn-sshd-"))
    try:
        described = []
        for host in farm.start_hosts(args.hosts):
            passwords = {name: args.password or secrets.token_urlsafe(12) for name in users}
            for name, password in passwords.items():
                if name == "root":                  # there already: the asset's privileged login
                    host.set_password(name, password)
                else:
                    host.add_user(name, password,
                                  sudo="nopasswd" if name == args.sudo_user else None)
            described.append(describe(host, passwords))
        for host in described:
            logins = ", ".join(f"{name}:{password}" for name, password in host["users"].items())
            print(f"{host['name']} {host['address']}:{host['port']} {host['host_key']} {logins}")
        if args.json:
            args.json.write_text(json.dumps(described, indent=2) + "\n")
        print(f"{len(described)} hosts up; stop with Ctrl-C", flush=True)
        stop.wait()
    finally:
        farm.close()
        shutil.rmtree(farm.base_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
