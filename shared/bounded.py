"""Bounded values for everything that crosses a trust boundary (the bus, a request): every
number has a range and every string a length limit and no NUL, so a value that does not fit is
refused when it is parsed, before it reaches a database or a host."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, PlainSerializer, SecretStr, StringConstraints

# Whole-string patterns: `\A...\Z`, so `.match` never lets a trailing newline through (`$` would).
ZONE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
# POSIX-portable user names (plus the `$` of machine accounts); no `:` or newline can reach chpasswd.
USERNAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")
ERROR_CODE = re.compile(r"\A[a-z][a-z0-9_]{0,63}\Z")

MAX_ID = 2**63 - 1                       # ids fit a signed 64-bit column
MAX_SECRET = 16 * 1024                   # an RSA-4096 private key in PEM is ~3.3 KiB
EPOCH_MIN, EPOCH_MAX = 946_684_800.0, 7_258_118_400.0   # 2000-01-01 .. 2200-01-01 (UTC)


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    return text


def Text(max_length: int, *, line: bool = False):
    """A bounded string without NUL; `line`: without any control character either."""
    pattern = r"\A[^\x00-\x1f\x7f]*\Z" if line else None
    return Annotated[str, StringConstraints(max_length=max_length, pattern=pattern),
                     AfterValidator(_no_nul)]


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Attempt = Annotated[int, Field(ge=1, le=1000)]
Epoch = Annotated[float, Field(ge=EPOCH_MIN, le=EPOCH_MAX, allow_inf_nan=False)]
ZoneName = Annotated[str, Field(pattern=ZONE_NAME.pattern)]
Username = Annotated[str, Field(pattern=USERNAME.pattern)]
ErrorCode = Annotated[str, Field(pattern=ERROR_CODE.pattern)]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=MAX_SECRET), AfterValidator(
    lambda value: SecretStr(_no_nul(value.get_secret_value()))),
    PlainSerializer(lambda value: value.get_secret_value(), when_used="json")]

# python-re: the patterns above use `\A`/`\Z`, which pydantic's default (Rust) engine lacks.
STRICT = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")
