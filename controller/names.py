"""The rules for names an operator types, in one place for the CLI, the console, the API and CSV
import: they become file names (zone keys), queue names (`rotate.<zone>`), command arguments on
hosts (user names) and spreadsheet cells, so each is a full match of a bounded pattern. A value
that is not a string (a JSON null or number) is refused, never turned into text. Errors quote at
most the start of a bad value."""
from __future__ import annotations

import ipaddress
import re

from shared.errors import FieldError, KeyturnError, Said
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


class BadName(FieldError, ValueError):
    """A name breaks its rule; `field` says which one (a ValueError, so that a pydantic
    validator may raise it)."""


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
        raise BadName(field, "must be text, not %(type)s", type=shown(value))
    return value


def full_match(field: str, pattern: re.Pattern, value: object, rule: Said) -> str:
    if not pattern.fullmatch(text(field, value)):
        raise BadName(field, "%(value)s is not valid: %(rule)s", value=shown(value), rule=rule)
    return value


def zone_name(value: object) -> str:
    return full_match("zone", ZONE_NAME, value, Said(
                      "1-63 lowercase ASCII letters, digits, - and _, starting with a letter or "
                      "digit"))


def username(value: object, platform_name: str = DEFAULT_PLATFORM) -> str:
    """An account name as the asset's platform takes it (a PostgreSQL role name is not a
    POSIX user name)."""
    kind = platforms.platform(platform_name)
    return full_match("username", kind.account_name, value,
                      Said("%(platform)s takes %(rule)s", platform=kind.title,
                           rule=Said(kind.account_rule)))


def asset_name(value: object) -> str:
    return full_match("name", ASSET_NAME, value, Said(
                      "1-128 ASCII letters, digits, . _ -, starting with a letter or digit"))


def plan_name(value: object) -> str:
    if text("name", value) != value.strip():
        raise BadName("name", "must not begin or end with spaces")
    return full_match("name", PLAN_NAME, value,
                      Said("1-128 characters of any script on one line"))


def node_path(value: object) -> str:
    """`/prod/web` (leading and trailing slashes optional), each segment an asset-like name."""
    parts = [part for part in text("node", value).split("/") if part]
    if not parts:
        raise BadName("node", "%(value)s: use a path like /prod/web", value=shown(value))
    for part in parts:
        if not NODE_SEGMENT.fullmatch(part):
            raise BadName("node", "segment %(segment)s is not valid: 1-128 ASCII letters, "
                                  "digits, . _ -, starting with a letter or digit",
                          segment=shown(part))
    path = "/" + "/".join(parts)
    if len(path) > NODE_PATH_MAX:
        raise BadName("node", "path is longer than %(max_length)s characters",
                      max_length=NODE_PATH_MAX)
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
        raise BadName("address", "%(value)s is neither an IP address nor a host name",
                      value=shown(value))
    return given


def port(value: object) -> int:
    """1-65535, from a number or from ASCII digits (a form or CSV field)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and PORT.fullmatch(value):
        number = int(value)
    else:
        raise BadName("port", "%(value)s: a number from 1 to 65535", value=shown(value))
    if not 0 < number < 65536:
        raise BadName("port", "%(value)s: a number from 1 to 65535", value=number)
    return number


def platform(value: object) -> str:
    if text("platform", value) not in PLATFORMS:
        raise BadName("platform", "%(value)s: one of %(platforms)s", value=shown(value),
                      platforms=", ".join(PLATFORMS))
    return value
