"""The authenticated channel between the controller and one zone.

The controller and every zone have a Curve25519 key pair. A message between them is a NaCl
`Box` (X25519 + XSalsa20-Poly1305): only the two key holders can read it, and only they can have
written it, so a RabbitMQ administrator neither reads a secret nor forges a command or a result.
The shared key is computed once per peer pair, so sealing costs microseconds per message.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from shared.errors import KeyturnError


class SealError(KeyturnError):
    """A message could not be opened: wrong keys, tampered, or not a sealed message."""


def generate_private_key() -> PrivateKey:
    return PrivateKey.generate()


def encode_public_key(key: PublicKey) -> str:
    return base64.b64encode(bytes(key)).decode()


def decode_public_key(text: str) -> PublicKey:
    """Parse a public key as printed by `encode_public_key`; ValueError says what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ValueError("public key is not base64") from None
    if len(raw) != 32:
        raise ValueError("public key must be 32 bytes (base64 of a Curve25519 key)")
    return PublicKey(raw)


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a private key readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(bytes(key)).decode() + "\n")


def read_private_key(path: Path) -> PrivateKey:
    try:
        raw = base64.b64decode(path.read_text().strip(), validate=True)
        return PrivateKey(raw)
    except FileNotFoundError:
        raise SealError(f"key file {path} not found") from None
    except (ValueError, TypeError):
        raise SealError(f"key file {path} does not hold a Curve25519 private key") from None


def load_or_create_private_key(path: Path) -> PrivateKey:
    """Read the key at `path`, creating it on first use (embedded and co-located set-ups)."""
    if not path.exists():
        try:
            write_private_key(path, generate_private_key())
        except FileExistsError:
            pass  # another process created it first
    return read_private_key(path)


class Channel:
    """Seal and open messages between our private key and one peer's public key."""

    def __init__(self, own_key: PrivateKey, peer_key: PublicKey):
        self._box = Box(own_key, peer_key)

    def seal(self, payload: bytes) -> str:
        return base64.b64encode(bytes(self._box.encrypt(payload))).decode()

    def open(self, token: str) -> bytes:
        try:
            return self._box.decrypt(base64.b64decode(token, validate=True))
        except (CryptoError, ValueError, TypeError):
            raise SealError("message cannot be opened with this zone's keys") from None
