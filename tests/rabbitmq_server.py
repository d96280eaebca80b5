"""A RabbitMQ node of the tests' own (never the machine's node, whose users stay untouched): its
own node name, ports, data and log directories and Erlang cookie in a temporary directory, a
plain AMQP listener and a TLS one (certificates of a test CA, client certificates required) on
loopback, no plugins. It shares epmd with the machine's node, and is stopped and removed at the
end of the session, even when it fails."""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.certs import ServerCertificate, make_certificates, make_client_certificate
from tests.processes import KEYTURN, free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_SECONDS = 90
ADMIN = ("keyturn-admin", "admin-pw-rabbit")


class RabbitNode:
    """One running node; `ctl(...)` is rabbitmqctl against it, `url(...)` an AMQP URL."""

    def __init__(self, directory: Path, name: str | None = None, cookie: str | None = None):
        """`name` and `cookie` (the Erlang cookie nodes of one cluster share) default to fresh."""
        self.directory = directory
        self.name = name or f"keyturn-test-{os.getpid()}@localhost"
        self.port = free_port()
        self.tls_port = free_port()
        self.certificates: ServerCertificate = make_certificates(directory)
        self.client_cert, self.client_key = make_client_certificate(directory, "keyturn-client")
        home = directory / "home"
        home.mkdir()
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie or secrets.token_hex(20))
        cookie_file.chmod(0o400)
        config = directory / "rabbitmq.conf"
        config.write_text("\n".join([
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
            f"ssl_options.cacertfile = {self.certificates.ca}",
            f"ssl_options.certfile = {self.certificates.cert}",
            f"ssl_options.keyfile = {self.certificates.key}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
            "loopback_users = none",
            "log.file.level = info",
            "", ]))
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq-env.conf").write_text("")    # not the machine's /etc one
        self.log_dir = directory / "log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_", "KEYTURN_"))}
        self.env.update(
            HOME=str(home), RABBITMQ_NODENAME=self.name, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CONFIG_FILE=str(config), RABBITMQ_CONF_ENV_FILE=str(directory / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(directory / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(directory / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(directory / "mnesia"), RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(directory / "rabbit.pid"), ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}")
        self._output = open(directory / "server.out", "wb")
        self.process = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=self._output,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        """Wait for the node, then make the admin account and remove `guest`."""
        self.wait_started()
        self.ctl("add_user", *ADMIN)
        self.ctl("set_user_tags", ADMIN[0], "administrator")
        self.ctl("delete_user", "guest")

    def wait_started(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            if self.ctl_result("await_startup", "--timeout", "5").returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test RabbitMQ node did not start; see {self.directory}/server.out")

    def ctl_result(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.rabbitmqctl, "-q", *args],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def ctl(self, *args: str) -> str:
        done = self.ctl_result(*args)
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    @property
    def rabbitmqctl(self) -> list[str]:
        """rabbitmqctl for this node (with `env`, which holds its Erlang cookie)."""
        return [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name]

    def apply_account(self, vhost: str, *role: str, password: str | None = None) -> tuple[str, str]:
        """One of keyturn's least-privilege accounts, made as an operator would: `keyturn
        broker-account ROLE [NAME] --apply` (rabbitmqctl with this node's cookie in `env`), with
        `password` (else a fresh one) on its standard input; returns (user, password)."""
        password = password or secrets.token_urlsafe(18)
        command = shlex.join(self.rabbitmqctl)
        done = subprocess.run([*KEYTURN, "broker-account", *role, "--apply", "--password-stdin",
                               "--vhost", vhost, "--rabbitmqctl", command], input=password + "\n",
                              env=self.env | {"PYTHONPATH": str(Path(__file__).parents[1])},
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"broker-account {role} failed: {done.stderr}")
        return done.stderr.split(":", 1)[0], password

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, ADMIN[0], ".*", ".*", ".*")

    def url(self, vhost: str, user: tuple[str, str] = ADMIN, *, tls: bool = False) -> str:
        scheme, port = ("amqps", self.tls_port) if tls else ("amqp", self.port)
        return (f"{scheme}://{quote(user[0], safe='')}:{quote(user[1], safe='')}@127.0.0.1:"
                f"{port}/{quote(vhost, safe='')}")

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.log_dir.glob("*.log"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.ctl_result("stop")
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()


@dataclass
class BusAccounts:
    """A virtual host of the tests' node with keyturn's least-privilege accounts."""
    node: RabbitNode
    vhost: str
    accounts: dict[str, tuple[str, str]]     # role -> (user, password)

    def url(self, role: str, *, tls: bool = False) -> str:
        return self.node.url(self.vhost, self.accounts[role], tls=tls)


@pytest.fixture(scope="session")
def bus_accounts(rabbit_node):
    """The accounts `keyturn broker-account --apply` makes, on a virtual host of their own: the
    controller's, zones a's, t's and w's workers', the integration tickets'. Their passwords
    never reach RabbitMQ's log."""
    vhost = f"kt_{secrets.token_hex(6)}"
    rabbit_node.add_vhost(vhost)
    roles = {"controller": ["controller"], "a": ["zone", "a"], "t": ["zone", "t"],
             "w": ["zone", "w"], "tickets": ["integration", "tickets"]}
    accounts = {role: rabbit_node.apply_account(vhost, *args) for role, args in roles.items()}
    yield BusAccounts(rabbit_node, vhost, accounts)
    assert not any(password in rabbit_node.log_text() for _, password in accounts.values())


@pytest.fixture(scope="session")
def rabbit_node():
    """The tests' own RabbitMQ node (plain and TLS listeners), for the whole session."""
    directory = Path(tempfile.mkdtemp(prefix="keyturn-rabbit-"))
    node = RabbitNode(directory)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()
        shutil.rmtree(directory, ignore_errors=True)
