"""The worker's half of each zone channel: the zone private key and the controller public key."""
from __future__ import annotations

from nacl.public import PublicKey

from shared.errors import KeyturnError
from shared.settings import Settings
from shared.zonecrypto import Channel, decode_public_key, read_private_key


def load_channels(settings: Settings, zones: list[str]) -> dict[str, Channel]:
    """One sealed channel per zone; a missing or bad key stops start-up with one clear line."""
    controller = controller_public_key(settings)
    channels = {}
    for zone in zones:
        path = settings.zone_key_path(zone)
        if not path.is_file():
            raise KeyturnError(f"no private key for zone {zone} at {path}: make one with "
                               f"`keyturn zone keygen {zone}` and register its public key")
        channels[zone] = Channel(read_private_key(path), controller)
    return channels


def controller_public_key(settings: Settings) -> PublicKey:
    text, source = settings.controller_public_key, "KEYTURN_CONTROLLER_PUBLIC_KEY"
    if not text:
        path = settings.data_dir / "controller.pub"
        if not path.is_file():
            raise KeyturnError(f"no controller public key: set KEYTURN_CONTROLLER_PUBLIC_KEY or "
                               f"put it in {path} (`keyturn zone add` prints it)")
        text, source = path.read_text(), str(path)
    try:
        return decode_public_key(text)
    except ValueError as exc:
        raise KeyturnError(f"{source}: {exc}") from None
