"""SSH dialogues for network devices: what the operator writes, checked where it is saved.

A dialogue is written one instruction a line (a `device` asset's or plan's `dialogue` param, a
list of these lines; presets are in `shared.device_presets`):

    send TEXT        type TEXT and Enter on the device's CLI
    change TEXT      the same, and this is the step that changes the secret: a failure before
                     it leaves the secret as it was (`failed`), from it on it may have changed
                     (`unverified`, unless a login with the new secret proves it)
    expect REGEX     wait until the device prints something REGEX matches (Python `re.search`
                     over what it printed since the last match)
    fail REGEX       anywhere in the dialogue: the device refused if it ever prints a match
    timeout SECONDS  how long each following `expect` waits (default 10)
    # ...            a comment; blank lines are ignored too

TEXT and REGEX are the rest of the line after one space, stripped. In TEXT, `{username}`,
`{new_secret}`, `{old_secret}`, `{login_secret}` and `{enable_secret}` are replaced by their
values in one pass (`substitute`), and nothing else is interpreted: `{{`, `%`, `$(...)`,
quotes and backslashes are typed as they are. No template engine ever sees a secret.

A *proof* dialogue (the `proof` param) checks a secret instead of changing one, where no SSH
login as the account can (an enable secret, a user the device lets in only on its console): it
types `{secret}`, the secret being tried, has no `change` step, and needs a `fail` line, which
is how the device says that secret is wrong; every `expect` matched means it is right.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PLACEHOLDERS = ("username", "new_secret", "old_secret", "login_secret", "enable_secret")
PROOF_PLACEHOLDERS = ("username", "secret", "login_secret", "enable_secret")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(dict.fromkeys(PLACEHOLDERS + PROOF_PLACEHOLDERS))
                          + r")\}")
_LOOKS_LIKE_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_LINES = 200
MAX_LINE = 1024
MAX_PATTERN = 512
MAX_TIMEOUT = 600.0
DEFAULT_TIMEOUT = 10.0


class DialogueError(ValueError):
    """A dialogue line that cannot be used; the message names the line."""


@dataclass(frozen=True)
class Step:
    """Send `send` (None: nothing), then wait up to `timeout` seconds for `expect` (None: go on)."""

    send: str | None
    expect: re.Pattern | None
    timeout: float
    changes: bool = False
    line: int = 0                      # its lines in the operator's text, for messages
    expect_line: int = 0


@dataclass(frozen=True)
class Dialogue:
    steps: tuple[Step, ...]
    fail: tuple[re.Pattern, ...] = field(default=())

    @property
    def change_index(self) -> int:
        return next(index for index, step in enumerate(self.steps) if step.changes)

    def uses(self, name: str) -> bool:
        """Whether some step sends the placeholder `{name}`."""
        return any(step.send and "{" + name + "}" in step.send for step in self.steps)


def lines_of(value: object) -> object:
    """A dialogue given as one text (a CLI `--param`, an API string) as its lines; blank lines
    and surrounding spaces dropped, so what is stored is what a form shows."""
    if isinstance(value, str):
        value = value.splitlines()
    if isinstance(value, (list, tuple)):
        return [line.strip() if isinstance(line, str) else line for line in value
                if not (isinstance(line, str) and not line.strip())]
    return value


def parse(lines: list[str], *, proof: bool = False) -> Dialogue:
    """The dialogue of `lines` (a proof dialogue with `proof`); DialogueError names the first
    line that cannot be used."""
    if len(lines) > MAX_LINES:
        raise DialogueError(f"has {len(lines)} lines; at most {MAX_LINES}")
    steps: list[Step] = []
    fail: list[re.Pattern] = []
    timeout = DEFAULT_TIMEOUT
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if len(text) > MAX_LINE or _CONTROL.search(text):
            raise DialogueError(f"line {number}: longer than {MAX_LINE} characters or holds a "
                                f"control character")
        word, _, argument = text.partition(" ")
        argument = argument.strip()
        if word in ("send", "change"):
            if proof and word == "change":
                raise DialogueError(f"line {number}: a proof changes nothing: use send")
            _check_placeholders(number, argument, PROOF_PLACEHOLDERS if proof else PLACEHOLDERS)
            steps.append(Step(argument, None, timeout, word == "change", number))
        elif word == "expect":
            pattern = _pattern(number, argument)
            if steps and steps[-1].expect is None:
                last = steps[-1]
                steps[-1] = Step(last.send, pattern, timeout, last.changes, last.line, number)
            else:
                steps.append(Step(None, pattern, timeout, False, number, number))
        elif word == "fail":
            fail.append(_pattern(number, argument))
        elif word == "timeout":
            timeout = _seconds(number, argument)
        else:
            raise DialogueError(f"line {number}: starts with {word[:20]!r}; use send, change, "
                                f"expect, fail or timeout")
    dialogue = Dialogue(tuple(steps), tuple(fail))
    if proof:
        _check_proof(dialogue)
    else:
        _check_change_step(dialogue)
    return dialogue


def _pattern(number: int, text: str) -> re.Pattern:
    if not text:
        raise DialogueError(f"line {number}: give a regular expression")
    if len(text) > MAX_PATTERN:
        raise DialogueError(f"line {number}: the regular expression is longer than "
                            f"{MAX_PATTERN} characters")
    try:
        return re.compile(text)
    except re.error as exc:
        raise DialogueError(f"line {number}: not a regular expression ({exc})") from None


def _seconds(number: int, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= MAX_TIMEOUT:
        raise DialogueError(f"line {number}: timeout takes seconds, more than 0 and at most "
                            f"{MAX_TIMEOUT:g}")
    return seconds


def _check_placeholders(number: int, text: str, known: tuple[str, ...]) -> None:
    """A misspelt placeholder would be typed as it is, e.g. set `{new_secert}` as the secret."""
    for name in _LOOKS_LIKE_PLACEHOLDER.findall(text):
        if name not in known:
            raise DialogueError(f"line {number}: unknown placeholder {{{name}}}; use "
                                f"{', '.join('{' + p + '}' for p in known)}")


def _check_proof(dialogue: Dialogue) -> None:
    """A proof must type the secret tried, and be able to say no: else a wrong secret would
    only run out of time, which proves nothing either way."""
    if not dialogue.uses("secret"):
        raise DialogueError("never sends {secret}, the secret it checks")
    if not dialogue.fail:
        raise DialogueError("needs a fail line: what the device prints when the secret is wrong")


def _check_change_step(dialogue: Dialogue) -> None:
    """Exactly one `change` step, no later than the first step that types the new secret: else
    a failure after the secret was typed could be reported `failed` while it took effect."""
    changes = [step for step in dialogue.steps if step.changes]
    if len(changes) != 1:
        raise DialogueError(f"has {len(changes)} change steps; mark exactly one (the line "
                            f"that sends what changes the secret) with `change` instead of `send`")
    first_new = next((step for step in dialogue.steps
                      if step.send and "{new_secret}" in step.send), None)
    if first_new is None:
        raise DialogueError("never sends {new_secret}")
    if first_new.line < changes[0].line:
        raise DialogueError(f"line {first_new.line} sends {{new_secret}} before the change step "
                            f"(line {changes[0].line})")


def substitute(text: str, values: dict[str, str]) -> str:
    """`text` with each placeholder replaced by its value, in one pass: a value that itself
    holds `{username}` or a backslash is typed exactly as it is, never substituted again."""
    return _PLACEHOLDER.sub(lambda found: values[found[1]], text)


def typeable(secret: str) -> bool:
    """Whether a secret can be typed on one CLI line: no newline, tab or other control
    character (a device would take them as Enter, completion, or an interrupt)."""
    return not _CONTROL.search(secret)
