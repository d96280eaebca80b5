"""SSH-key secrets: an OpenSSH-format private key (ed25519, RSA or ECDSA, no passphrase: the
controller stores it encrypted and seals it on the bus instead), opened for logins and turned
into the public key line that goes into authorized_keys.

Errors never quote the key or the library's message about it, only what kind of problem it is.
"""
from __future__ import annotations

import io

import paramiko
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (Encoding, PublicFormat,
                                                          load_ssh_private_key)

from shared.errors import KeyturnError

KEY_CLASSES = ((ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
               (rsa.RSAPrivateKey, paramiko.RSAKey),
               (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey))


class BadKey(KeyturnError):
    """The text is not an unencrypted OpenSSH private key of a supported type."""


def private_key(text: str) -> paramiko.PKey:
    """The key as paramiko signs with it."""
    key_class = _load(text)[1]
    try:
        return key_class.from_private_key(io.StringIO(text.strip() + "\n"))
    except (paramiko.SSHException, ValueError):
        raise BadKey("the private key cannot be read") from None


def public_line(text: str) -> str:
    """`type base64` of the key's public half, as it appears in authorized_keys."""
    key = _load(text)[0].public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def _load(text: str):
    """The cryptography key and the paramiko class for its type."""
    try:
        key = load_ssh_private_key(text.strip().encode() + b"\n", password=None)
    except (ValueError, TypeError, UnicodeError):
        raise BadKey("the secret is not an unencrypted OpenSSH private key") from None
    except Exception:   # e.g. UnsupportedAlgorithm, whose message may describe the key
        raise BadKey("the private key type is not supported") from None
    for crypto_class, paramiko_class in KEY_CLASSES:
        if isinstance(key, crypto_class):
            return key, paramiko_class
    raise BadKey("use an ed25519, RSA or ECDSA private key")


def random_private_key() -> str:
    """A fresh Ed25519 key that no host knows (a connector's wrong-secret check)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
