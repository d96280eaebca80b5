"""The rules for names an operator types, in one place for the CLI, the console, the API and CSV
import: they become file names (zone keys), queue names (`rotate.<zone>`), command arguments on
hosts (user names) and spreadsheet cells, so each is a full match of a bounded pattern. A value
that is not a string (a JSON null or number) is refused, never turned into text. Errors quote at
most the start of a bad value."""
from __future__ import annotations

import ipaddress
import re

from shared.errors import KeyturnError
from shared import platforms
from shared.bounded import ZONE_NAME
from shared.platforms import DEFAULT_PLATFORM, PLATFORMS

ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NODE_SEGMENT = ASSET_NAME
NODE_PATH_MAX = 512                     # the node column
HOSTNAME_MAX = 253
HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
PORT = re.compile(r"[0-9]{1,5}")        # ASCII digits only: int() would also take "²" or "١٢٣"
PLAN_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")   # one line: it goes into mail subjects
SHOWN = 40


class BadName(KeyturnError, ValueError):
    """A name breaks its rule; `field` says which one (a ValueError, so that a pydantic
    validator may raise it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def shown(value: object) -> str:
    """A bad value as an error may quote it: as typed when short and printable, else its
    start with control characters escaped (a type name for what is not text)."""
    if not isinstance(value, str):
        return type(value).__name__
    if value and len(value) <= SHOWN and value.isprintable():
        return value
    return repr(value[:SHOWN]) + ("…" if len(value) > SHOWN else "")


def text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadName(field, f"must be text, not {shown(value)}")
    return value


def full_match(field: str, pattern: re.Pattern, value: object, rule: str) -> str:
    if not pattern.fullmatch(text(field, value)):
        raise BadName(field, f"{shown(value)} is not valid: {rule}")
    return value


def zone_name(value: object) -> str:
    return full_match("zone", ZONE_NAME, value,
                      "1-63 lowercase ASCII letters, digits, - and _, starting with a letter or "
                      "digit")


def username(value: object, platform_name: str = DEFAULT_PLATFORM) -> str:
    """An account name as the asset's platform takes it (a PostgreSQL role name is not a
    POSIX user name)."""
    kind = platforms.platform(platform_name)
    return full_match("username", kind.account_name, value,
                      f"{kind.title} takes {kind.account_rule}")


def asset_name(value: object) -> str:
    return full_match("name", ASSET_NAME, value,
                      "1-128 ASCII letters, digits, . _ -, starting with a letter or digit")


def plan_name(value: object) -> str:
    if text("name", value) != value.strip():
        raise BadName("name", "must not begin or end with spaces")
    return full_match("name", PLAN_NAME, value, "1-128 characters of any script on one line")


def node_path(value: object) -> str:
    """`/prod/web` (leading and trailing slashes optional), each segment an asset-like name."""
    parts = [part for part in text("node", value).split("/") if part]
    if not parts:
        raise BadName("node", f"{shown(value)}: use a path like /prod/web")
    for part in parts:
        if not NODE_SEGMENT.fullmatch(part):
            raise BadName("node", f"segment {shown(part)} is not valid: 1-128 ASCII letters, "
                                     "digits, . _ -, starting with a letter or digit")
    path = "/" + "/".join(parts)
    if len(path) > NODE_PATH_MAX:
        raise BadName("node", f"path is longer than {NODE_PATH_MAX} characters")
    return path


def address(value: object) -> str:
    """An IPv4/IPv6 address (normalised) or an RFC 1123 host name."""
    given = text("address", value)
    try:
        return str(ipaddress.ip_address(given))
    except ValueError:
        pass
    labels = given.split(".")
    if (len(given) > HOSTNAME_MAX or not all(HOST_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        raise BadName("address", f"{shown(value)} is neither an IP address nor a host name")
    return given


def port(value: object) -> int:
    """1-65535, from a number or from ASCII digits (a form or CSV field)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and PORT.fullmatch(value):
        number = int(value)
    else:
        raise BadName("port", f"{shown(value)}: a number from 1 to 65535")
    if not 0 < number < 65536:
        raise BadName("port", f"{number}: a number from 1 to 65535")
    return number


def platform(value: object) -> str:
    if text("platform", value) not in PLATFORMS:
        raise BadName("platform", f"{shown(value)}: one of {', '.join(PLATFORMS)}")
    return value
