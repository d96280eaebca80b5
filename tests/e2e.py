"""Fixtures for end-to-end tests: a fleet of sshd hosts in two zones registered with the
controller, and the daemon plus one worker per zone as real processes on RabbitMQ."""
from __future__ import annotations

import pytest

from controller import inventory
from controller.models import Account, Asset
from controller.plans import parse_spec, save_plan
from tests.processes import ProcessGroup, keyturn_env

USERS = {"alice": "alice-old-1", "bob": "bob-old-1", "carol": "carol-old-1"}
ZONES = {"east": 0, "west": 2}   # zone -> index of its first host; each zone has two hosts


@pytest.fixture
def zone_fleet(ctl, ssh_farm):
    """Four hosts in two zones: east logs in as root, west as a NOPASSWD sudoer."""
    hosts = ssh_farm.start_hosts(4, users=USERS, sudo_user=("ops", "ops-pw-1"))
    for zone, first in ZONES.items():
        inventory.add_zone(ctl, zone, None, trust_first_use=True)
        for index in (first, first + 1):
            host = hosts[index]
            pinned = host.host_public_key if zone == "east" else None
            inventory.add_asset(f"{zone}-{index}", host.address, 22, "linux", zone, f"/dc/{zone}",
                                pinned)
            if zone == "east":
                host.set_password("root", f"root-pw-{index}")
                inventory.set_account(ctl, f"{zone}-{index}", "root", f"root-pw-{index}", True)
            else:
                inventory.set_account(ctl, f"{zone}-{index}", "ops", "ops-pw-1", True)
            for user, password in USERS.items():
                inventory.set_account(ctl, f"{zone}-{index}", user, password, False)
    yield {f"{zone}-{index}": hosts[index] for zone, first in ZONES.items()
           for index in (first, first + 1)}
    for host in hosts:
        host.close()


@pytest.fixture
def cluster(ctl, rabbitmq_url, tmp_path):
    """The daemon and one worker per zone, as real processes on RabbitMQ."""
    group = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url), tmp_path)
    group.daemon = group.start("daemon", "daemon")
    group.workers = {zone: group.start(f"worker-{zone}", "worker", "--zone", zone) for zone in ZONES}
    yield group
    group.close()
    for process in group.processes:
        assert "Traceback" not in process.log_text(), process.name


def save(ctl, name, usernames, **fields):
    spec = {"name": name, "usernames": usernames, "nodes": ["/dc"]} | fields
    return save_plan(parse_spec(spec), ctl.vault)


def current_secret(ctl, asset, username):
    account = Account.select().join(Asset).where(
        (Asset.name == asset) & (Account.username == username)).get()
    return ctl.vault.decrypt(account.secret_current)
