"""Real `redis-server` instances for the tests, each on its own free loopback port in its own
temporary directory (never the machine's shared instance): one keeps its users in an ACL file
(`ACL SAVE`), one in its config file (`CONFIG REWRITE`). Both check passwords (`user default
off`, an `admin` user with a password), log to a file, and are stopped and removed at the end
of the session, even when it fails."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from tests.processes import free_port
from tests.server_process import server_in_temp_dir, stop_process, wait_until_answering

ADMIN = ("admin", "admin-pw-redis")
START_SECONDS = 10



class RedisServer:
    """One running redis-server; `admin()` is a client as its admin user."""

    def __init__(self, directory: Path, *, config_file: bool):
        self.directory = directory
        self.address = "127.0.0.1"
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.acl_path = None if config_file else directory / "users.acl"
        self.config_path = directory / "redis.conf" if config_file else None
        settings = {"port": str(self.port), "bind": self.address, "save": '""',
                    "appendonly": "no", "dir": str(directory), "logfile": str(self.log_path),
                    "loglevel": "verbose"}
        users = f"user default off\nuser {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n"
        if config_file:
            lines = "".join(f"{name} {value}\n" for name, value in settings.items())
            self.config_path.write_text(lines + users)
            argv = ["redis-server", str(self.config_path)]
        else:
            self.acl_path.write_text(users)
            argv = ["redis-server", *(arg for name, value in settings.items()
                                      for arg in (f"--{name}", value.strip('"'))),
                    "--aclfile", str(self.acl_path)]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    def wait_ready(self) -> None:
        wait_until_answering(self.process, lambda: self.admin().ping(), redis.ConnectionError,
                             START_SECONDS, lambda: f"redis-server exited; see {self.log_path}",
                             pause=0.05)

    def admin(self) -> redis.Redis:
        return redis.Redis(host=self.address, port=self.port, username=ADMIN[0],
                           password=ADMIN[1], decode_responses=True, socket_timeout=5)

    def add_user(self, name: str, password: str | None, *rules: str) -> None:
        """Create (or reset) an ACL user with `password` (None: nopass) and `rules`."""
        secret = ">" + password if password is not None else "nopass"
        self.admin().execute_command("ACL", "SETUSER", name, "reset", "on", secret, *rules)

    def logs_in(self, name: str, password: str) -> bool:
        """Whether AUTH as `name` succeeds (on connect: no command, so no permission needed)."""
        connection = redis.Connection(host=self.address, port=self.port, username=name,
                                      password=password, socket_timeout=5)
        try:
            connection.connect()
            return True
        except redis.AuthenticationError:
            return False
        finally:
            connection.disconnect()

    def stop(self) -> None:
        stop_process(self.process)


def _server(config_file: bool):
    def start(directory: Path) -> RedisServer:
        server = RedisServer(directory, config_file=config_file)
        server.wait_ready()
        return server
    with server_in_temp_dir("kt-redis-", start) as server:
        yield server


@pytest.fixture(scope="session")
def redis_acl_server():
    """A redis-server whose users live in an ACL file."""
    yield from _server(config_file=False)


@pytest.fixture(scope="session")
def redis_config_server():
    """A redis-server with a config file and no ACL file."""
    yield from _server(config_file=True)
