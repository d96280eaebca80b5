"""Secret rules of a plan, their validation, and generation with the `secrets` module."""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from functools import cached_property, lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          load_pem_private_key, load_ssh_private_key)

from shared.errors import FieldError, KeyturnError

DEFAULT_SYMBOLS = "!#$%&()*+,-.:;<=?@[]_~"
MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 8, 64, 16
MAX_GIVEN_SECRET = 1024


class RuleError(FieldError, ValueError):
    """The rules cannot produce a secret (or a given secret is unusable); says which field."""


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
            raise RuleError("length", "must be between %(min)s and %(max)s", min=MIN_LENGTH,
                            max=MAX_LENGTH)
        stray = sorted(set(self.exclude_symbols) - set(DEFAULT_SYMBOLS))
        if stray:
            raise RuleError("exclude_symbols", "not in the symbol set: %(symbols)s",
                            symbols="".join(stray))
        classes = self.classes()
        if not classes:
            raise RuleError("rules", "turn on at least one of lowercase, uppercase, digits, symbols")
        if self.symbols and not classes[-1]:
            raise RuleError("exclude_symbols", "excludes every symbol while symbols are required")
        if len(classes) > self.length:
            raise RuleError("length", "is shorter than the %(count)s required character classes",
                            count=len(classes))

    def generate(self) -> str:
        return self.generate_many(1)[0]

    def generate_many(self, count: int) -> list[str]:
        """`count` passwords, each drawn uniformly from all those that satisfy the rules: draw
        from the whole alphabet and draw again when a class is missing (rare at the usual
        lengths). The random bytes for all of them come from a few system calls."""
        passwords: list[str] = []
        while len(passwords) < count:
            chars = uniform_choices(self._alphabet, (count - len(passwords)) * self.length)
            kinds = chars.translate(self._class_of)          # each character's class, as a digit
            for start in range(0, len(chars), self.length):
                drawn = kinds[start:start + self.length]
                if all(kind in drawn for kind in self._class_names):
                    passwords.append(chars[start:start + self.length])
        return passwords[:count]

    @cached_property
    def _alphabet(self) -> str:
        return "".join(self.classes())

    @cached_property
    def _class_names(self) -> list[str]:
        return [str(index) for index in range(len(self.classes()))]

    @cached_property
    def _class_of(self) -> dict[int, str]:
        return str.maketrans({char: str(index) for index, chars in enumerate(self.classes())
                              for char in chars})


def uniform_choices(alphabet: str, count: int) -> str:
    """`count` characters drawn uniformly from an ASCII `alphabet`: the same distribution as
    `secrets.choice`, by rejection sampling over `secrets.token_bytes`, mapped in C by
    `bytes.translate` (bytes at or above the largest multiple of the alphabet's size are dropped,
    since they would bias the modulo)."""
    table, rejected = _byte_map(alphabet)
    chosen = b""
    while len(chosen) < count:
        chosen += secrets.token_bytes(2 * count).translate(table, rejected)
    return chosen[:count].decode()


@lru_cache(maxsize=16)
def _byte_map(alphabet: str) -> tuple[bytes, bytes]:
    limit = 256 - 256 % len(alphabet)
    table = bytes(ord(alphabet[b % len(alphabet)]) for b in range(256))
    return table, bytes(range(limit, 256))


def validate_given_secret(secret: str) -> None:
    """A typed secret must be something chpasswd and SSH can carry: one line, no NUL."""
    if not secret:
        raise RuleError("secret", "is empty")
    if len(secret) > MAX_GIVEN_SECRET:
        raise RuleError("secret", "is longer than %(max_length)s characters",
                        max_length=MAX_GIVEN_SECRET)
    if any(c in secret for c in "\n\r\x00"):
        raise RuleError("secret", "must be one line without NUL characters")


KEY_TYPES = ("ed25519", "rsa")


def generate_ssh_key(key_type: str = "ed25519") -> str:
    """A new private key in OpenSSH format (ed25519, or RSA 4096)."""
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()


def normalise_private_key(text: str, passphrase: str | None) -> str:
    """Check a given private key (opening it with its passphrase) and return it in OpenSSH
    format without a passphrase: it is encrypted at rest and sealed on the bus instead."""
    data = text.strip().encode() + b"\n"
    password = passphrase.encode() if passphrase else None
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = load_ssh_private_key(data, password)
        else:
            key = load_pem_private_key(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise RuleError("secret", "is not a private key that opens with this passphrase") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise RuleError("secret", "use an ed25519, RSA or ECDSA private key")
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
