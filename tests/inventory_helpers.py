"""Small builders for test inventories, through the same functions the CLI uses."""
from __future__ import annotations

from controller import inventory


def build_fleet(ctl, zone="dmz", assets=("web-1",), users=("alice", "bob"), node="/prod/web",
                privileged=("root", "rootpw"), address="127.0.0.1"):
    """A zone with assets, each with a privileged login account and the given users."""
    inventory.add_zone(ctl, zone, None, True)
    for name in assets:
        inventory.add_asset(name, address, 22, "linux", zone, node, None)
        inventory.set_account(ctl, name, privileged[0], privileged[1], privileged=True)
        for user in users:
            inventory.set_account(ctl, name, user, f"old-{user}-{name}", privileged=False)
