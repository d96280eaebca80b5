"""Secrets at rest: AES-256-GCM under a master key, with a key id so keys can be rotated.

The master key comes from `KEYTURN_SECRET_KEY` (base64; several, comma-separated, newest first,
to rotate) or from the key file `keyturn init` writes with mode 0600. Ciphertext layout:
version byte | 4-byte key id | 12-byte nonce | AES-GCM ciphertext and tag.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import KeyturnError

FORMAT = b"\x01"


class VaultError(KeyturnError):
    """A secret cannot be decrypted: wrong master key or damaged data."""


class Vault:
    def __init__(self, keys: list[bytes]):
        if not keys or any(len(key) != 32 for key in keys):
            raise VaultError("master keys must be 32 bytes each")
        self._ciphers = {self._key_id(key): AESGCM(key) for key in keys}
        self._current_id = self._key_id(keys[0])

    @staticmethod
    def _key_id(key: bytes) -> bytes:
        return hashlib.sha256(key).digest()[:4]

    def encrypt(self, secret: str | None) -> bytes | None:
        if secret is None:
            return None
        nonce = os.urandom(12)
        sealed = self._ciphers[self._current_id].encrypt(nonce, secret.encode(), None)
        return FORMAT + self._current_id + nonce + sealed

    def decrypt(self, token: bytes | memoryview | None) -> str | None:
        if token is None:
            return None
        token = bytes(token)
        cipher = self._ciphers.get(token[1:5])
        if token[:1] != FORMAT or cipher is None:
            raise VaultError("secret was encrypted with an unknown master key")
        try:
            return cipher.decrypt(token[5:17], token[17:], None).decode()
        except InvalidTag:
            raise VaultError("secret does not decrypt: damaged data or wrong master key") from None

    def needs_rekey(self, token: bytes | memoryview | None) -> bool:
        return token is not None and bytes(token)[1:5] != self._current_id


def new_key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def parse_keys(text: str) -> list[bytes]:
    try:
        keys = [base64.b64decode(part.strip(), validate=True) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VaultError("master key is not base64") from None
    if not keys or any(len(key) != 32 for key in keys):
        raise VaultError("master key must be base64 of 32 bytes")
    return keys


def create_key_file(path: Path) -> bool:
    """Write a fresh master key with mode 0600 unless one exists; True if it was created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(new_key_text() + "\n")
    return True


def load_vault(secret_key: str | None, key_file: Path) -> Vault:
    """The vault from the configured key, else from the key file."""
    if secret_key:
        return Vault(parse_keys(secret_key))
    try:
        return Vault(parse_keys(key_file.read_text()))
    except FileNotFoundError:
        raise VaultError(f"no master key: set KEYTURN_SECRET_KEY or run `keyturn init` "
                         f"to create {key_file}") from None
