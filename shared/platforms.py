"""The platform registry: every kind of target keyturn rotates, declared once.

A platform names the worker connector that serves it (a dotted path, imported only by workers),
its default port, the secret types it supports, the model of its own parameters, whether its
assets have SSH host keys, the account names secure mode protects by default, and the rule for
account names. The CLI's choices, the console's forms, the API's validation, the message schema
and the worker's connector table all read `PLATFORMS`; a new platform is one `register` call
here, one connector module and its tests (as peewee's `schemes` and `register_database`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Callable, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from shared import dialogues
from shared.bounded import STRICT, USERNAME, Secret, Text
from shared.device_presets import PRESETS, preset_lines
from shared.errors import KeyturnError


class SecretType(StrEnum):
    PASSWORD = "password"
    SSH_KEY = "ssh_key"


class RecordStatus(StrEnum):
    """A record's life: pending → dispatched → success | failed | unverified (DESIGN.md); a
    record an operator's cancel found not yet dispatched ends `cancelled` (nothing was sent)."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    SUCCESS = "success"
    FAILED = "failed"
    UNVERIFIED = "unverified"
    CANCELLED = "cancelled"


class PlatformParams(BaseModel):
    """Per-asset and per-plan parameters of one platform (never a secret in the clear: a secret
    a connector needs travels sealed, as `Secret`)."""

    model_config = STRICT


class UnixParams(PlatformParams):
    """UNIX, AIX and Linux over SSH (the seed product's, plus how to become root). Secrets never
    live here; `become_secret` travels sealed."""

    become: Literal["auto", "sudo", "su", "none"] = "auto"   # auto: root logs in as root, else sudo
    become_secret: Secret | None = None      # su: root's password (from the asset's root account)
    create_user: bool = False                # create the account when it does not exist
    shell: Text(255, line=True) | None = None   # default /bin/bash (/usr/bin/ksh on AIX)
    home: Text(1024, line=True) | None = None   # default /home/<user>
    group: Text(64, line=True) | None = None
    groups: list[Text(64, line=True)] = Field(default=[], max_length=64)
    uid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    modify_sudo: bool = False                # install a sudoers line for the account
    sudo_commands: list[Text(1024, line=True)] = Field(default=["/bin/whoami"], max_length=64)
    key_strategy: Literal["add", "set", "set_managed"] = "set_managed"   # ssh_key secrets


TLS = Literal["disable", "prefer", "require", "verify-full"]


class PostgresParams(PlatformParams):
    database: Text(63, line=True) = "postgres"     # where the privileged role connects
    tls: TLS = "prefer"
    tls_ca: Text(4096, line=True) | None = None    # verify-full: CA file (None: the system CAs)


class MysqlParams(PlatformParams):
    account_host: Text(255, line=True) = "%"       # the host part of 'user'@'host'
    all_hosts: bool = False                        # change every 'user'@<any host> account
    tls: TLS = "prefer"
    tls_ca: Text(4096, line=True) | None = None    # verify-full: CA file (None: the system CAs)


class RedisParams(PlatformParams):
    """Nothing yet: an ACL user is the whole account (TLS to Redis is a later step)."""


# LDAP names (RFC 4514 DNs, RFC 4515 filters) are checked for shape here; the worker escapes
# every account name it puts into one (never joined raw), and ldap3 parses them again.
_DN_VALUE = r'(?:\\[0-9A-Fa-f]{2}|\\[ "#+,;<=>\\]|[^,+"\\<>;=\x00-\x1f\x7f])+'
_RDN = rf'(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+) ?= ?{_DN_VALUE}'
_DN_BODY = rf"{_RDN}(?: ?\+ ?{_RDN})*(?: ?, ?{_RDN}(?: ?\+ ?{_RDN})*)*"
LDAP_DN = re.compile(rf"\A{_DN_BODY}\Z")
PLACEHOLDER = "{username}"


def _dn(value: str) -> str:
    if not LDAP_DN.match(value):
        raise PydanticCustomError("dn", "not a DN like ou=people,dc=example,dc=org")
    return value


def _dn_template(value: str) -> str:
    if value.count(PLACEHOLDER) != 1 or not LDAP_DN.match(value.replace(PLACEHOLDER, "x")):
        raise PydanticCustomError("dn", "not a DN with one {username}, like "
                                        "uid={username},ou=people,dc=example,dc=org")
    return value


def _filter_template(value: str) -> str:
    depth = 0
    for char in value:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if (value.count(PLACEHOLDER) != 1 or depth != 0 or not value.startswith("(")
            or not value.endswith(")")):
        raise PydanticCustomError("filter", "not an LDAP filter with one {username} in "
                                            "balanced parentheses, like (uid={username})")
    return value


DN = Annotated[Text(1024, line=True), AfterValidator(_dn)]


class DirectoryParams(PlatformParams):
    """What OpenLDAP and Active Directory share: always TLS (LDAPS, or StartTLS on the plain
    port) with the server's certificate verified, so no password crosses in the clear."""

    transport: Literal["ldaps", "starttls"] = "ldaps"
    tls_ca: Text(4096, line=True) | None = None    # CA file (None: the system CAs)
    base_dn: DN | None = None                      # where accounts are searched


class LdapParams(DirectoryParams):
    """An account name that is a DN names that entry; any other name is put, escaped, into
    `user_dn` when given, else into `user_filter`, searched under `base_dn`."""

    user_dn: Annotated[Text(1024, line=True), AfterValidator(_dn_template)] | None = None
    user_filter: Annotated[Text(1024, line=True), AfterValidator(_filter_template)] = \
        "(uid={username})"


class AdParams(DirectoryParams):
    """Accounts are found by sAMAccountName (userPrincipalName for a name with @) under
    `base_dn`, by default the domain's own naming context."""


def _checked(proof: bool):
    def check(lines: list[str]) -> list[str]:
        """A dialogue that can run (none at all: the preset's, or a proof by SSH login)."""
        try:
            if lines:
                dialogues.parse(lines, proof=proof)
        except dialogues.DialogueError as exc:
            raise PydanticCustomError("dialogue", str(exc)) from None
        return lines
    return check


DialogueLines = Annotated[list[str], BeforeValidator(dialogues.lines_of),
                          AfterValidator(_checked(proof=False))]
ProofLines = Annotated[list[str], BeforeValidator(dialogues.lines_of),
                       AfterValidator(_checked(proof=True))]


class DeviceParams(PlatformParams):
    """Network devices and appliances by SSH dialogue (`shared.dialogues`): the `dialogue`
    lines if given, else the `preset`'s; `proof`, if given, checks a secret where no SSH login
    as the account can. `enable_secret` travels sealed: the current secret of the asset's
    `enable` account."""

    preset: Literal[tuple(PRESETS)] | None = None
    dialogue: DialogueLines = Field([], description=(
        "one instruction a line: send TEXT, change TEXT (the line that changes the secret), "
        "expect REGEX, fail REGEX, timeout SECONDS, # comment; placeholders {username} "
        "{new_secret} {old_secret} {login_secret} {enable_secret}; blank: the preset's"))
    proof: ProofLines = Field([], description=(
        "blank: a fresh SSH login as the account proves its new secret; else a dialogue run "
        "after a fresh privileged login, typing {secret} (the secret tried), with a fail line "
        "for a wrong one and no change line"))
    enable_secret: Secret | None = None

    def dialogue_lines(self) -> list[str]:
        return self.dialogue or (preset_lines(self.preset) if self.preset else [])


@dataclass(frozen=True)
class Borrowed:
    """A param the controller fills, sealed, with the current secret of another account of the
    asset (root's for `su`, the `enable` account's), when `wanted` says the params need it."""

    param: str
    username: str
    wanted: Callable[[dict], bool] = lambda values: True


@dataclass(frozen=True)
class Platform:
    name: str
    title: str                                     # what the console shows
    connector: str                                 # "module:Class" of the worker's connector
    default_port: int
    secret_types: tuple[SecretType, ...]
    params: type[PlatformParams]
    host_keys: bool                                # SSH host keys are pinned for its assets
    protected_usernames: frozenset[str] = field(default_factory=frozenset)
    account_name: re.Pattern = USERNAME            # full-match rule for its account names
    account_rule: str = ("a POSIX user name: an ASCII letter or _, then ASCII letters, digits, "
                         "_ . -")
    borrowed: tuple[Borrowed, ...] = ()            # params holding other accounts' secrets
    typed_secrets: bool = False                    # typed on a CLI line: no control characters

    def parse_params(self, values: dict | None) -> PlatformParams:
        """This platform's params from `values`, ignoring keys that belong to other platforms
        (one plan may cover several); ValidationError names a bad one."""
        known = {key: value for key, value in (values or {}).items()
                 if key in self.params.model_fields}
        return self.params.model_validate(known)


PLATFORMS: dict[str, Platform] = {}
DEFAULT_PLATFORM = "linux"          # what an asset is when nobody says


def register(platform: Platform) -> Platform:
    if platform.name in PLATFORMS:
        raise ValueError(f"platform {platform.name} is registered twice")
    PLATFORMS[platform.name] = platform
    return platform


def platform(name: object) -> Platform:
    """The registered platform called `name`; KeyturnError lists the known ones."""
    found = PLATFORMS.get(name) if isinstance(name, str) else None
    if found is None:
        raise KeyturnError(f"unknown platform {str(name)[:40]!r}: use one of {', '.join(PLATFORMS)}")
    return found


def borrowed_params() -> set[str]:
    """Params only the controller fills, from accounts (never set on an asset or plan)."""
    return {b.param for p in PLATFORMS.values() for b in p.borrowed}


def param_names() -> set[str]:
    """Every parameter some platform knows (what a plan that spans platforms may set)."""
    return {name for p in PLATFORMS.values() for name in p.params.model_fields}


UNIX_PROTECTED = frozenset({"root", "administrator"})
for _name, _title in (("linux", "Linux"), ("unix", "UNIX"), ("aix", "AIX")):
    register(Platform(_name, _title, "worker.connectors.ssh:SshConnector", 22,
                      (SecretType.PASSWORD, SecretType.SSH_KEY), UnixParams, host_keys=True,
                      protected_usernames=UNIX_PROTECTED,
                      borrowed=(Borrowed("become_secret", "root",
                                         lambda values: values.get("become") == "su"),)))
register(Platform("postgresql", "PostgreSQL", "worker.connectors.postgresql:PostgresConnector", 5432,
                  (SecretType.PASSWORD,), PostgresParams, host_keys=False,
                  protected_usernames=frozenset({"postgres"}),      # and every superuser (worker)
                  account_name=re.compile(r"\A[A-Za-z_][A-Za-z0-9_$.-]{0,62}\Z"),
                  account_rule="a role name: an ASCII letter or _, then up to 62 ASCII letters, digits, _ $ . -"))
register(Platform("mysql", "MySQL / MariaDB", "worker.connectors.mysql:MysqlConnector", 3306,
                  (SecretType.PASSWORD,), MysqlParams, host_keys=False,
                  protected_usernames=frozenset({"root", "mysql", "mariadb.sys", "mysql.sys",
                                                 "mysql.session", "mysql.infoschema"}),
                  account_name=re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_$.-]{0,79}\Z"),
                  account_rule="a user name: up to 80 ASCII letters, digits, _ $ . -"))
register(Platform("redis", "Redis (ACL users)", "worker.connectors.redis:RedisConnector", 6379,
                  (SecretType.PASSWORD,), RedisParams, host_keys=False,
                  protected_usernames=frozenset({"default"}),
                  account_name=re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}\Z"),
                  account_rule="an ACL user name: up to 64 ASCII letters, digits, _ . : -"))
register(Platform("device", "Network device (SSH dialogue)",
                  "worker.connectors.device:DeviceConnector", 22, (SecretType.PASSWORD,),
                  DeviceParams, host_keys=True,
                  protected_usernames=frozenset({"enable", "admin", "root", "administrator"}),
                  borrowed=(Borrowed("enable_secret", "enable"),), typed_secrets=True))
register(Platform("ldap", "OpenLDAP", "worker.connectors.ldap:OpenLdapConnector", 636,
                  (SecretType.PASSWORD,), LdapParams, host_keys=False,
                  protected_usernames=frozenset({"admin", "manager"}),   # and the bind DN
                  account_name=re.compile(rf"\A(?=[^\x00-\x1f\x7f]{{1,64}}\Z)"
                                          rf"(?:[A-Za-z0-9_][A-Za-z0-9_.@-]*|{_DN_BODY})\Z"),
                  account_rule="a DN, or a name (ASCII letters, digits, _ . @ -) found by user_dn or "
                               "user_filter; up to 64 characters"))
register(Platform("ad", "Active Directory", "worker.connectors.ad:ActiveDirectoryConnector", 636,
                  (SecretType.PASSWORD,), AdParams, host_keys=False,
                  # and Domain, Enterprise and Schema Admins and Administrators (worker)
                  protected_usernames=frozenset({"administrator", "krbtgt"}),
                  account_name=re.compile(r"\A(?=.{1,64}\Z)[\w][\w.'-]*(?:@[A-Za-z0-9-]+"
                                          r"(?:\.[A-Za-z0-9-]+)*)?\Z"),
                  account_rule="a sAMAccountName (letters of any script, digits, _ . ' -) or a "
                               "userPrincipalName (name@domain); up to 64 characters"))
