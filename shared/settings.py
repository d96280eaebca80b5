"""Settings from `KEYTURN_*` environment variables and an optional TOML file.

Both sides load the same settings class; each reads only what it needs. A bad value stops
start-up with one line that names the setting (`SettingsError`), never a traceback.
"""
from __future__ import annotations

import os
from datetime import tzinfo
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from shared.errors import KeyturnError
from shared.problems import plain

ENV_PREFIX = "KEYTURN_"


MIN_COMMAND_WINDOW = 5    # seconds a rotate command is valid at least
COMMAND_MARGIN = 2        # for a host to finish a change whose channel closed at the limit


class SettingsError(KeyturnError):
    """A setting is missing or malformed; the message names it."""


class BrokerTls(NamedTuple):
    """What an `amqps://` connection trusts and presents: the CA that signed RabbitMQ's
    certificate (None: the system's CAs), and a client certificate and key if RabbitMQ asks."""
    ca: Path | None
    cert: Path | None
    key: Path | None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".keyturn")
    database_url: str | None = None
    broker_url: str | None = None      # several cluster nodes: URLs separated by ";"
    broker_queue_type: str = Field(default="quorum", pattern="^(quorum|classic)$")
    broker_ca: Path | None = None      # amqps://: the CA file that signed RabbitMQ's certificate
    broker_cert: Path | None = None    # amqps://: a client certificate (PEM), with broker_key
    broker_key: Path | None = None
    secure_mode: bool = True
    secret_key: SecretStr | None = None
    zone_key_file: Path | None = None
    controller_public_key: str | None = None
    worker_threads: int = Field(default=8, ge=1, le=256)   # most commands in flight (far zones: 64-128)
    ssh_timeout: float = Field(default=15.0, gt=0, le=600)
    rotation_deadline: int = Field(default=600, ge=10)
    clock_skew: int = Field(default=30, ge=0, le=600)   # how far worker clocks may be off ours
    max_dispatch_attempts: int = Field(default=3, ge=1, le=20)
    trust_first_use: bool = True
    step_up_window: int = Field(default=300, ge=0)
    web_secure_cookies: bool = True      # false only for plain HTTP off loopback
    web_trusted_proxies: int = Field(default=0, ge=0, le=10)   # X-Forwarded-For hops to believe
    heartbeat_interval: float = Field(default=10.0, gt=0)
    worker_progress: bool = True   # send "started" progress messages (off: for an older controller)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="text", pattern="^(text|json)$")   # json: one object a line
    # The console's /metrics: refused unless a token or an allow-list of networks is set.
    metrics_token: SecretStr | None = None
    metrics_allow: str = ""    # client networks (CIDR, comma-separated) scraping without it
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_security: str = Field(default="none", pattern="^(none|starttls|tls)$")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "keyturn@localhost"
    event_source: str = Field(default="/keyturn", min_length=1, max_length=255,
                              pattern=r"^[\x21-\x7e]+$")   # CloudEvents `source`, a URI-reference
    request_max_validity: int = Field(default=300, ge=10, le=86400)   # a signed request's life
    webhook_allow_private: bool = False   # true lets webhooks reach loopback/private addresses
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_retry_seconds: float = Field(default=30.0, gt=0, le=86400)   # first retry; doubles
    # IANA zone of crontab lines and maintenance windows; empty: the controller machine's own.
    timezone: str = Field(default="", max_length=64)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        """Environment beats the config file; the file is named by KEYTURN_CONFIG."""
        sources = [init_settings, env_settings]
        config_file = os.environ.get(ENV_PREFIX + "CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise SettingsError(f"KEYTURN_CONFIG: no such file {config_file}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url

    @field_validator("clock_skew")
    @classmethod
    def _skew_leaves_a_window(cls, skew: int, info) -> int:
        """A command is valid until its deadline less the skew (`planning.command_expiry`)."""
        deadline = info.data.get("rotation_deadline")
        if deadline is not None and skew > deadline - MIN_COMMAND_WINDOW - COMMAND_MARGIN:
            raise ValueError(f"must leave commands at least {MIN_COMMAND_WINDOW} s of validity: "
                             f"at most KEYTURN_ROTATION_DEADLINE - "
                             f"{MIN_COMMAND_WINDOW + COMMAND_MARGIN}")
        return skew

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, url: str | None) -> str | None:
        """One URL, or one per cluster node separated by `;`, all amqp:// or all amqps:// (the
        TLS settings apply to every node)."""
        if not url:
            return None
        urls = [part.strip() for part in url.split(";")]
        if not all(part.startswith(("amqp://", "amqps://")) for part in urls):
            raise ValueError("must start with amqp:// or amqps:// (several: separated by ;)")
        if len({part.split(":", 1)[0] for part in urls}) > 1:
            raise ValueError("mixes amqp:// and amqps:// URLs")
        return ";".join(urls)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("must be an IANA time zone name, e.g. Europe/Paris or UTC") from None
        return name

    @property
    def tz(self) -> tzinfo:
        """The zone crontab lines and maintenance windows are read in."""
        if self.timezone:
            return ZoneInfo(self.timezone)
        from tzlocal import get_localzone

        return get_localzone()

    @field_validator("metrics_token")
    @classmethod
    def _long_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return token

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, text: str) -> str:
        parse_networks(text)
        return text

    @property
    def metrics_networks(self) -> list[IPv4Network | IPv6Network]:
        return parse_networks(self.metrics_allow)

    @model_validator(mode="after")
    def _tls_only_with_amqps(self) -> "Settings":
        """TLS files without an amqps:// URL would be ignored: refuse rather than seem secure."""
        for name in ("broker_ca", "broker_cert", "broker_key"):
            path = getattr(self, name)
            if path is None:
                continue
            if not (self.broker_url or "").startswith("amqps://"):
                raise SettingsError(f"{ENV_PREFIX}{name.upper()}: needs an amqps:// "
                                    f"KEYTURN_BROKER_URL")
            if not path.is_file():
                raise SettingsError(f"{ENV_PREFIX}{name.upper()}: no such file {path}")
        if (self.broker_cert is None) != (self.broker_key is None):
            raise SettingsError("KEYTURN_BROKER_KEY: KEYTURN_BROKER_CERT and KEYTURN_BROKER_KEY "
                                "go together")
        return self

    @property
    def broker_tls(self) -> BrokerTls | None:
        if not (self.broker_url or "").startswith("amqps://"):
            return None
        return BrokerTls(self.broker_ca, self.broker_cert, self.broker_key)

    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'keyturn.db'}"

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def embedded(self) -> bool:
        """No broker configured: one process runs everything over an in-process broker."""
        return self.broker_url is None

    @property
    def controller_key_file(self) -> Path:
        return self.data_dir / "controller.key"

    def zone_key_path(self, zone: str) -> Path:
        return self.zone_key_file or self.data_dir / "zones" / f"{zone}.key"


def parse_networks(text: str) -> list[IPv4Network | IPv6Network]:
    """`10.0.0.0/8, 192.0.2.7`: networks, an address alone being a network of one."""
    networks = []
    for part in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an address or network (CIDR)") from None
    return networks


def load_settings(**overrides) -> Settings:
    """Load settings, turning pydantic's report into one line naming the first bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
        raise SettingsError(f"{name}: {plain(error)}") from None
