"""The new content of an authorized_keys file, computed here rather than by a shell on the host.

Every key keyturn writes carries the comment `keyturn-managed`, so `set_managed` can later
replace exactly those and leave the keys people put there alone. Lines this module cannot read
(comments, blank lines, odd entries) are kept as they are by `add` and `set_managed`.
"""
from __future__ import annotations

import re

MARK = "keyturn-managed"
SIZE_LIMIT = 512 * 1024   # bytes; some 700 RSA-4096 keys. sshd sets no limit, a worker must
TOKEN = re.compile(r'(?:[^\s"]|"(?:[^"\\]|\\.)*")+')     # options may hold quoted spaces
KEY_TYPE = re.compile(r"^(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[\w@.-]+)"
                      r"(?:-cert-v01@openssh\.com)?$")


def updated(current: str, public_line: str, strategy: str) -> str:
    """`current` with the key of `public_line` in it, by `strategy`: `add` appends it unless
    it is there, `set` leaves it alone in the file, `set_managed` replaces keyturn's earlier keys."""
    new = _entry(public_line)[0]
    lines = current.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if strategy == "add" and any(_entry(line)[0] == new for line in lines):
        return current
    if strategy == "set":
        lines = []
    elif strategy == "set_managed":
        lines = [line for line in lines if not _entry(line)[1]]
    lines = [line for line in lines if _entry(line)[0] != new]
    return "\n".join([*lines, f"{' '.join(new)} {MARK}"]) + "\n"


def _entry(line: str) -> tuple[tuple[str, str] | None, bool]:
    """The (type, base64) of a key line and whether keyturn wrote it; (None, False) otherwise."""
    if line.lstrip().startswith("#"):
        return None, False
    tokens = TOKEN.findall(line)
    for index, token in enumerate(tokens[:-1]):
        if KEY_TYPE.match(token):
            return (token, tokens[index + 1]), MARK in tokens[index + 2:]
    return None, False
