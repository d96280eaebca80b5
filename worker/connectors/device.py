"""Network devices and appliances (`device` platform): the privileged account logs in by SSH
(host key pinned as for UNIX hosts), the operator's dialogue (`shared.dialogues`, run by
`worker.dialogue`) changes the secret on the device's CLI, and a fresh SSH login as the account
proves it, or the operator's proof dialogue on a fresh privileged login where no SSH login as
the account can (an enable secret).

Not pooled: a device CLI is a stateful terminal and many allow one shell per connection, so each
command logs in on its own; a privileged login refused a moment ago is not tried again so soon
(`DeviceLogins`), so a batch of accounts never locks that account out.

Secrets reach the device only typed on that terminal, never in a shell line of ours; one holding
a newline or other control character is refused before anything is sent (a CLI would take it as
Enter or an interrupt).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

from shared import dialogues
from shared.dialogues import PLACEHOLDERS
from shared.platforms import platform
from worker.connectors.pooling import FailureMemory, Fingerprints
from worker.connectors.ssh import SshLogins
from worker.dialogue import Conversation
from worker.errors import TargetError
from worker.sessions import LOCKOUT_RISKS, log_in

LABELS = {"new_secret": "new password", "old_secret": "current password",
          "login_secret": "privileged account's password", "enable_secret": "enable secret"}


class DeviceLogins:
    """What a worker keeps for devices between commands: the privileged logins that were refused
    or slow to fail, keyed by the place and salted fingerprints of the secrets tried."""

    def __init__(self):
        self._prints = Fingerprints()
        self._failures = FailureMemory(LOCKOUT_RISKS)

    def log_in(self, asset, username: str, secrets: list[str], secret_type: str, timeout: float):
        key = (asset.address, asset.port, username, asset.host_key, secret_type,
               *map(self._prints.of, secrets))
        return self._failures.log_in(key, lambda: log_in(asset, username, secrets, secret_type,
                                                         timeout))

    def prune(self) -> None:
        self._failures.prune()

    def close(self) -> None:
        """Nothing is held open."""


class DeviceConnector(SshLogins):
    # A device may keep the old password working for sessions open already; a fresh login
    # with the old one is not claimed to fail.
    old_secret_refused = False

    @classmethod
    def new_pool(cls) -> DeviceLogins:
        return DeviceLogins()

    def check(self) -> None:
        """A dialogue to run, every secret it types present and typeable; nothing sent yet."""
        c = self.command
        borrowed = {b.username for b in platform(c.asset.platform).borrowed}
        proof = self.proof
        if proof is None and c.username in borrowed:
            raise TargetError("unsupported", f"{self.where}: {c.username} holds the enable "
                                             f"secret, which no SSH login can prove: give a "
                                             f"`proof` dialogue to rotate it; nothing was sent")
        lines = c.params.dialogue_lines()
        if not lines:
            raise TargetError("no_dialogue", f"{self.where}: no dialogue: set the `preset` or "
                                             f"`dialogue` param of the asset or its plan; "
                                             f"nothing was sent")
        self.dialogue = self.parsed(lines)
        for name in PLACEHOLDERS:
            if name == "username" or not (self.dialogue.uses(name)
                                          or proof is not None and proof.uses(name)):
                continue
            candidates = self.candidates(name)
            if not candidates:
                whose = ("the asset has no `enable` account" if name == "enable_secret"
                         else "the controller does not hold it")
                raise TargetError("no_secret", f"{self.where}: the dialogue types the "
                                               f"{LABELS[name]}, but {whose}; nothing was sent")
            if not all(dialogues.typeable(value) for value in candidates):
                raise TargetError("bad_secret", f"{self.where}: the {LABELS[name]} holds a "
                                                f"newline or another control character, which "
                                                f"a device CLI cannot take; nothing was sent")

    @functools.cached_property
    def proof(self) -> dialogues.Dialogue | None:
        """The proof dialogue, if the params give one (parsed once per command)."""
        lines = self.command.params.proof
        return self.parsed(lines, proof=True) if lines else None

    def parsed(self, lines: list[str], *, proof: bool = False) -> dialogues.Dialogue:
        try:
            return dialogues.parse(lines, proof=proof)
        except dialogues.DialogueError as exc:
            which = "proof dialogue" if proof else "dialogue"
            raise TargetError("bad_dialogue", f"{self.where}: the {which} {exc}; nothing was "
                                              f"sent") from None

    def candidates(self, name: str) -> list[str]:
        """The values `{name}` may take (the login secret: each one the controller offers)."""
        c = self.command
        found = {"new_secret": [c.new_secret], "old_secret": [c.old_secret],
                 "login_secret": c.login_secrets, "enable_secret": [c.params.enable_secret]}[name]
        return [secret.get_secret_value() for secret in found if secret is not None]

    def change(self) -> None:
        """Log in as the privileged account, run the dialogue on a shell, log out (closing the
        connection ends whatever the dialogue left running: a `passwd` cut off before its
        second prompt changes nothing)."""
        self.converse(self.dialogue, {name: found[0] for name in ("new_secret", "old_secret")
                                      if (found := self.candidates(name))},
                      self.before_dialogue_change)

    def logs_in(self, username: str, secret: str) -> bool:
        """A fresh SSH login as the account, or the proof dialogue: every `expect` matched is
        yes, a `fail` line no; anything else (a timeout, a lost session) cannot tell."""
        proof = self.proof
        if proof is None:
            return super().logs_in(username, secret)
        if not dialogues.typeable(secret):
            raise TargetError("bad_secret", f"{self.where}: a secret to check holds a control "
                                            f"character, which the proof cannot type")
        try:
            self.converse(proof, {"secret": secret, "username": username}, extra=[secret])
        except TargetError as exc:
            if exc.code == "device_refused":
                return False
            raise
        return True

    def converse(self, dialogue: dialogues.Dialogue, values: dict[str, str],
                 before_change: Callable[[], None] | None = None,
                 extra: Iterable[str] = ()) -> None:
        """Run `dialogue` on a shell of a fresh privileged login; `values` beside the login
        and enable secrets; `extra` secrets to mask too."""
        c = self.command
        logins = self.candidates("login_secret")
        connection, self.login_index = self.pool.log_in(self.asset, c.login_username, logins,
                                                        c.login_secret_type, c.timeout)
        with connection:
            self.learn(connection.host_key)
            known = {"username": c.username, "login_secret": logins[self.login_index]}
            if enable := self.candidates("enable_secret"):
                known["enable_secret"] = enable[0]
            Conversation(connection.shell(c.timeout), self.where, [*self.secrets(), *extra],
                         before_change).run(dialogue, known | values)

    def before_dialogue_change(self) -> None:
        """The protocol's last expiry check, for as long as the rest of the dialogue may take."""
        rest = self.dialogue.steps[self.dialogue.change_index:]
        self.before_change(max(self.command.timeout, sum(s.timeout for s in rest if s.expect)))

    def secrets(self) -> list[str]:
        return [*super().secrets(), *self.candidates("enable_secret")]
