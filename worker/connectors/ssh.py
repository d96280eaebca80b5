"""UNIX, Linux and AIX accounts over SSH: the privileged login (pooled per host) changes the
password or the authorized keys through the platform's driver (`worker.platforms`), and a new
SSH session as the account proves a secret. Host keys are pinned: a changed key is refused
before any secret is sent, and the key seen is reported for pinning on first use."""
from __future__ import annotations

from worker import ssh
from worker.connectors.base import Connector
from worker.platforms import DRIVERS, Root
from worker.sessions import SessionPool
from worker.ssh import SshError


class SshLogins(Connector):
    """What every connector that reaches its target by SSH shares: fresh logins as proofs, and
    the host key seen (pinned on first use)."""

    def __init__(self, command, targets):
        super().__init__(command, targets)
        self.asset = command.asset

    def logs_in(self, username: str, secret: str) -> bool:
        """A fresh SSH session. While the host's wrong-secret check is not known, the same
        transport first tries a random secret (one connection, not two: a login costs the host
        a process and a key exchange); if the host let that in, a new transport decides."""
        c = self.command
        with ssh.connect(self.asset, c.timeout) as connection:
            self.learn(connection.host_key)
            if self.known_refusal() is None:
                refused = not connection.login(username, self.wrong_secret(), c.secret_type)
                self.remember_refusal(refused)
                if not refused:
                    return ssh.login_works(self.asset, username, secret, c.timeout,
                                           secret_type=c.secret_type).works
            return connection.login(username, secret, c.secret_type)

    def learn(self, host_key: str) -> None:
        """Report the key seen, and hold later connections of this command to it (first use)."""
        self.host_key = host_key
        if self.asset.host_key is None:
            self.asset = self.asset.model_copy(update={"host_key": host_key})


class SshConnector(SshLogins):
    def __init__(self, command, targets):
        super().__init__(command, targets)
        self.driver = DRIVERS[command.asset.platform]

    @classmethod
    def new_pool(cls) -> SessionPool:
        return SessionPool()

    def check(self) -> None:
        self.driver.check(self.command)

    def change(self) -> None:
        """Log in (pooled) and change; a pooled session found dead before anything was sent is
        replaced once by a fresh login."""
        c = self.command
        logins = [secret.get_secret_value() for secret in c.login_secrets]
        for attempt in (1, 2):
            session, self.login_index = self.pool.session(self.asset, c.login_username, logins,
                                                          c.timeout, c.login_secret_type)
            self.learn(session.host_key)
            self.change_started = True
            try:
                self.driver.change(Root(session, c, logins[self.login_index]), c)
            except SshError as exc:
                self.pool.discard(session)
                if exc.command_sent or exc.code != "connection_lost" or attempt == 2:
                    raise
                self.change_started = False
                continue
            if c.username == c.login_username and c.secret_type == c.login_secret_type:
                self.pool.retire(session)   # keyed by a secret that no longer works
            return
