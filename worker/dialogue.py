"""Running an SSH dialogue (`shared.dialogues`) on a device's interactive shell.

paramiko's `invoke_shell` (through `worker.ssh`), not netmiko: the operator's own regular
expressions say what each prompt is, so netmiko's per-vendor prompt guessing would buy little
for a large dependency, and it makes its own SSH connections (host keys from known_hosts files,
optional session logs of everything echoed) where keyturn pins keys in memory and must never
keep what a device echoes unmasked. The channel handling here is small: bounded reads, a
deadline per `expect`, terminal escapes stripped before matching.

Everything the device prints is masked (every secret of the command replaced by `***`) before
it reaches a log line or an error, and is kept only as a bounded window, so a device that
prints without end costs neither memory nor more than the step's timeout.
"""
from __future__ import annotations

import codecs
import logging
import re
import time
from typing import Callable, Iterable

import paramiko

from shared.dialogues import Dialogue, Step, substitute
from worker.errors import TargetError, scrub

logger = logging.getLogger(__name__)
WINDOW = 16 * 1024          # characters of the latest output an `expect` searches
SHOWN = 200                 # characters of the device's last line an error quotes
CHUNK = 32768
# CSI and OSC sequences, lone ESC pairs, and carriage returns: what terminals add to text.
_TERMINAL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
                       r"|\x1b[@-Z\\^_]|\r")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Conversation:
    """One dialogue on one shell channel. `before_change` runs right before the change step is
    sent (the protocol's expiry check; a proof has none); from then on every failure says
    `command_sent`."""

    def __init__(self, channel: paramiko.Channel, where: str, secrets: Iterable[str],
                 before_change: Callable[[], None] | None = None):
        self.channel = channel
        self.where = where
        self.secrets = [s for s in secrets if s]
        self.before_change = before_change
        self.change_sent = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._seen = ""                # output since the last match, terminal codes stripped

    def run(self, dialogue: Dialogue, values: dict[str, str]) -> None:
        for step in dialogue.steps:
            if step.send is not None:
                self._send(step, substitute(step.send, values))
            if step.expect is not None:
                self._expect(step, dialogue.fail)

    def _send(self, step: Step, text: str) -> None:
        if step.changes:
            self.before_change()
            self.change_sent = True
        logger.debug("%s: line %s: sending %r", self.where, step.line, self.masked(text))
        try:
            self.channel.sendall((text + "\n").encode())
        except (TimeoutError, paramiko.SSHException, EOFError, OSError):
            raise self._error("connection_lost", step.line,
                              "the session ended while sending") from None

    def _expect(self, step: Step, fail: tuple[re.Pattern, ...]) -> None:
        deadline = time.monotonic() + step.timeout
        while True:
            for pattern in fail:
                refused = pattern.search(self._seen)
                if refused:
                    raise self._error("device_refused", step.expect_line, "the device answered "
                                      f"{self.shown(self._line_at(refused.start()))}")
            found = step.expect.search(self._seen)
            if found:
                logger.debug("%s: line %s: matched %r", self.where, step.line,
                             self.masked(found[0])[-SHOWN:])
                self._seen = self._seen[found.end():]
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(step)
            self._read(step, remaining)

    def _read(self, step: Step, seconds: float) -> None:
        self.channel.settimeout(seconds)
        try:
            chunk = self.channel.recv(CHUNK)
        except TimeoutError:
            raise self._timeout(step) from None
        except (paramiko.SSHException, EOFError, OSError):
            chunk = b""
        if not chunk:
            raise self._error("connection_lost", step.expect_line,
                              "the device closed the session; its "
                              f"last line was {self.shown(self._last_line())}")
        self._seen = _TERMINAL.sub("", self._seen + self._decoder.decode(chunk))[-WINDOW:]

    def _timeout(self, step: Step) -> TargetError:
        return self._error("timeout", step.expect_line,
                           f"nothing matched `{step.expect.pattern}` within {step.timeout:g} s; "
                           f"the device's last line was {self.shown(self._last_line())}")

    def _error(self, code: str, line: int, what: str) -> TargetError:
        return TargetError(code, f"{self.where}: dialogue line {line}: {what}",
                           command_sent=self.change_sent)

    def _last_line(self) -> str:
        lines = self._seen.rstrip("\n").rsplit("\n", 1)
        return lines[-1]

    def _line_at(self, index: int) -> str:
        start = self._seen.rfind("\n", 0, index) + 1
        end = self._seen.find("\n", index)
        return self._seen[start:end if end >= 0 else None]

    def masked(self, text: str) -> str:
        return scrub(text, self.secrets)

    def shown(self, text: str) -> str:
        """A line of device output as an error may quote it: masked, printable, bounded."""
        text = _UNPRINTABLE.sub("?", self.masked(text)).strip()
        return repr(text if len(text) <= SHOWN else "…" + text[-SHOWN:])
