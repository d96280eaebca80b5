"""Small builders for test inventories, through the same functions the CLI uses, and a look at
the commands dispatch sealed for them."""
from __future__ import annotations

import json

from controller import inventory
from shared import zonecrypto
from shared.broker import rotate_queue
from shared.messages import RotateCommand, open_envelope, parse_envelope


def build_fleet(ctl, zone="dmz", assets=("web-1",), users=("alice", "bob"), node="/prod/web",
                privileged=("root", "rootpw"), address="127.0.0.1"):
    """A zone with assets, each with a privileged login account and the given users."""
    inventory.add_zone(ctl, zone, None, True)
    for name in assets:
        inventory.add_asset(name, address, 22, "linux", zone, node, None)
        inventory.set_account(ctl, name, privileged[0], privileged[1], privileged=True)
        for user in users:
            inventory.set_account(ctl, name, user, f"old-{user}-{name}", privileged=False)


def sent_commands(ctl, zone: str = "dmz") -> list[RotateCommand]:
    """Open every command waiting on a zone's in-process queue, as its worker would (taking
    them off the queue)."""
    channel = zonecrypto.Channel(zonecrypto.read_private_key(ctl.settings.zone_key_path(zone)),
                                 ctl.private_key.public_key)
    queue = ctl.broker.queues[rotate_queue(zone)]
    commands = []
    while not queue.empty():
        envelope = json.loads(queue.get_nowait().decode())["args"][0]
        commands.append(open_envelope(parse_envelope(envelope), channel))
    return commands
