"""A zone of real sshd hosts for the runs of the fault, two-daemon and cluster tests: `hosts`
hosts `h0`… with `users` accounts `u00`… each (password `old-NN`), a NOPASSWD sudoer `ops` as
the privileged account, and a plan `all` over every user."""
from __future__ import annotations

from contextlib import contextmanager

from controller import inventory
from controller.plans import parse_spec, save_plan


@contextmanager
def linux_fleet(ctl, ssh_farm, zone: str, hosts: int, users: int):
    """Yields {asset name: SshHost}; the hosts are closed afterwards."""
    passwords = {f"u{j:02d}": f"old-{j:02d}" for j in range(users)}
    started = ssh_farm.start_hosts(hosts, users=passwords, sudo_user=("ops", "ops-pw"))
    try:
        inventory.add_zone(ctl, zone, None, trust_first_use=True)
        for index, host in enumerate(started):
            inventory.add_asset(f"h{index}", host.address, 22, "linux", zone, f"/{zone}", None)
            inventory.set_account(ctl, f"h{index}", "ops", "ops-pw", True)
            for user, password in passwords.items():
                inventory.set_account(ctl, f"h{index}", user, password, False)
        save_plan(parse_spec({"name": "all", "usernames": list(passwords), "nodes": [f"/{zone}"]}),
                  ctl.vault)
        yield {f"h{index}": host for index, host in enumerate(started)}
    finally:
        for host in started:
            host.close()
