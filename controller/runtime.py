"""What a controller process holds once it starts: settings, database, vault, keys and bus."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import dramatiq

from controller.db import open_database
from controller.models import Zone
from controller.vault import Vault, load_vault
from shared import zonecrypto
from shared.broker import make_broker
from shared.errors import KeyturnError
from shared.settings import Settings

ZONE_KEY_TTL = 5.0


@dataclass
class Controller:
    settings: Settings
    vault: Vault
    _channels: dict = field(default_factory=dict)
    _zone_keys: dict = field(default_factory=dict)

    @cached_property
    def broker(self) -> dramatiq.Broker:
        return make_broker(self.settings.broker_url, self.settings.broker_tls,
                           quorum=self.settings.broker_queue_type == "quorum")

    @cached_property
    def private_key(self):
        path = self.settings.controller_key_file
        if not path.exists():
            raise KeyturnError(f"no controller key at {path}: run `keyturn init`")
        return zonecrypto.read_private_key(path)

    def channel(self, zone_name: str, public_key: str | None) -> zonecrypto.Channel:
        """The sealed channel to a zone, cached per zone public key."""
        if not public_key:
            raise KeyturnError(f"zone {zone_name} has no public key: register one with "
                               f"`keyturn zone add {zone_name} --public-key ...`")
        cached = self._channels.get(public_key)
        if cached is None:
            cached = zonecrypto.Channel(self.private_key, zonecrypto.decode_public_key(public_key))
            self._channels[public_key] = cached
        return cached

    def channel_for_zone_name(self, name: str) -> zonecrypto.Channel:
        """The channel of a zone by name; the key is looked up at most every few seconds, since
        every result on the bus needs it."""
        cached = self._zone_keys.get(name)
        if cached is None or cached[1] < time.monotonic():
            zone = Zone.get_or_none(Zone.name == name)
            if zone is None:
                raise KeyturnError(f"unknown zone {name}")
            cached = self._zone_keys[name] = (zone.public_key, time.monotonic() + ZONE_KEY_TTL)
        return self.channel(name, cached[0])


def make_data_dir(settings: Settings) -> None:
    """The data directory, owner-only (0700) whatever the umask, also when it exists already:
    it holds the database, the master key and the private keys."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)


def start_controller(settings: Settings) -> Controller:
    open_database(settings.effective_database_url)
    return Controller(settings=settings,
                      vault=load_vault(_secret_key_text(settings), settings.master_key_file))


def _secret_key_text(settings: Settings) -> str | None:
    return settings.secret_key.get_secret_value() if settings.secret_key else None
