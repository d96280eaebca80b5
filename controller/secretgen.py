"""Secret rules of a plan, their validation, and generation with the `secrets` module."""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from shared.errors import KeyturnError

DEFAULT_SYMBOLS = "!#$%&()*+,-.:;<=?@[]_~"
MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 8, 64, 16
MAX_GIVEN_SECRET = 1024
_random = secrets.SystemRandom()


class RuleError(KeyturnError, ValueError):
    """The rules cannot produce a secret (or a given secret is unusable); says which field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PasswordRules:
    length: int = DEFAULT_LENGTH
    lowercase: bool = True
    uppercase: bool = True
    digits: bool = True
    symbols: bool = True
    exclude_symbols: str = ""

    def classes(self) -> list[str]:
        """The character classes in use, each of which the password must draw from."""
        chosen = []
        if self.lowercase:
            chosen.append(string.ascii_lowercase)
        if self.uppercase:
            chosen.append(string.ascii_uppercase)
        if self.digits:
            chosen.append(string.digits)
        if self.symbols:
            chosen.append("".join(c for c in DEFAULT_SYMBOLS if c not in self.exclude_symbols))
        return chosen

    def validate(self) -> None:
        if not MIN_LENGTH <= self.length <= MAX_LENGTH:
            raise RuleError("length", f"must be between {MIN_LENGTH} and {MAX_LENGTH}")
        stray = sorted(set(self.exclude_symbols) - set(DEFAULT_SYMBOLS))
        if stray:
            raise RuleError("exclude_symbols", f"not in the symbol set: {''.join(stray)}")
        classes = self.classes()
        if not classes:
            raise RuleError("rules", "turn on at least one of lowercase, uppercase, digits, symbols")
        if self.symbols and not classes[-1]:
            raise RuleError("exclude_symbols", "excludes every symbol while symbols are required")
        if len(classes) > self.length:
            raise RuleError("length", f"is shorter than the {len(classes)} required character classes")

    def generate(self) -> str:
        """A password with at least one character of every class in use."""
        classes = self.classes()
        alphabet = "".join(classes)
        chars = [_random.choice(cls) for cls in classes]
        chars += [_random.choice(alphabet) for _ in range(self.length - len(chars))]
        _random.shuffle(chars)
        return "".join(chars)


def validate_given_secret(secret: str) -> None:
    """A typed secret must be something chpasswd and SSH can carry: one line, no NUL."""
    if not secret:
        raise RuleError("secret", "is empty")
    if len(secret) > MAX_GIVEN_SECRET:
        raise RuleError("secret", f"is longer than {MAX_GIVEN_SECRET} characters")
    if any(c in secret for c in "\n\r\x00"):
        raise RuleError("secret", "must be one line without NUL characters")
