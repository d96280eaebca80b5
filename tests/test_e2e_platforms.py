"""One plan across kinds of targets, end to end on real processes and real servers: an sshd host,
a PostgreSQL cluster, a MariaDB server, a Redis server, a dialogue "device" (a second sshd
host, where a login that may not sudo types the enable secret to `su`), an OpenLDAP slapd and a
Samba AD domain controller, each of the tests' own, rotated by
`keyturn daemon` and a `keyturn worker` over RabbitMQ. Afterwards every stored current secret
logs in, every old one is refused, no other account changed, and no server's own log holds a
secret. A worker killed mid-run on the database assets loses nothing."""
from __future__ import annotations

import uuid

import pytest

from controller import inventory
from controller.models import Account, Asset, Execution, Record
from tests.e2e import current_secret, save
from tests.processes import ProcessGroup, keyturn_env, wait_until
from tests.redis_server import ADMIN as REDIS_ADMIN
from tests.samba_dc import ADMIN as AD_ADMIN, BASE_DN as AD_BASE_DN
from tests.slapd_server import PEOPLE, ROOT as LDAP_ROOT, SUFFIX
from tests.test_connector_device import SU_DIALOGUE
from tests.test_planning import log_text

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


class Fleet:
    """The assets, their privileged logins, and how to check a password on each."""

    def __init__(self, ctl, ssh_farm, pg_server, mariadb, redis_acl_server, slapd, samba_dc):
        self.ctl = ctl
        self.host, = ssh_farm.start_hosts(1)
        self.host.set_password("root", "root-pw-e2e")
        self.device, = ssh_farm.start_hosts(1)
        self.device.set_password("root", "enable-pw-e2e")
        self.device.add_user("netops", "netops-pw-e2e")
        self.pg, self.my, self.rd = pg_server, mariadb, redis_acl_server
        self.ldap, self.ad = slapd, samba_dc
        self.my_admin = (fresh("kt_dba"), fresh("dba-pw"))
        mariadb.create_user(self.my_admin[0], "%", self.my_admin[1])
        mariadb.sql("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", self.my_admin[0])
        inventory.add_zone(ctl, "mix", None, trust_first_use=True)
        self.assets = {
            "ssh-1": ("linux", self.host.address, 22, ("root", "root-pw-e2e")),
            "pg-1": ("postgresql", pg_server.address, pg_server.port,
                     (pg_server.admin, pg_server.admin_password)),
            "my-1": ("mysql", mariadb.address, mariadb.port, self.my_admin),
            "rd-1": ("redis", redis_acl_server.address, redis_acl_server.port, REDIS_ADMIN),
            "ldap-1": ("ldap", slapd.address, slapd.port, LDAP_ROOT),
            "ad-1": ("ad", samba_dc.address, samba_dc.port, AD_ADMIN),
            "dev-1": ("device", self.device.address, 22, ("netops", "netops-pw-e2e")),
        }
        params = {"dev-1": {"dialogue": SU_DIALOGUE},
                  "ldap-1": {"tls_ca": str(slapd.ca), "base_dn": SUFFIX},
                  "ad-1": {"tls_ca": str(samba_dc.ca), "base_dn": AD_BASE_DN}}
        for name, (kind, address, port, (login, password)) in self.assets.items():
            inventory.add_asset(name, address, port, kind, "mix", "/mix", None, params.get(name))
            inventory.set_account(ctl, name, login, password, True)
        inventory.set_account(ctl, "dev-1", "enable", "enable-pw-e2e", False)   # sealed to `su`

    def add_user(self, asset: str, user: str, password: str) -> None:
        """The account on the target itself, and in keyturn's inventory."""
        if asset in ("ssh-1", "dev-1"):
            (self.host if asset == "ssh-1" else self.device).add_user(user, password)
        elif asset == "pg-1":
            self.pg.create_role(user, password)
        elif asset == "my-1":
            self.my.create_user(user, "%", password)
        elif asset == "ldap-1":
            self.ldap.add_user(user, password)
        elif asset == "ad-1":
            self.ad.add_user(user, password)
        else:
            self.rd.add_user(user, password, "~*", "+@all")
        inventory.set_account(self.ctl, asset, user, password, False)

    def logs_in(self, asset: str, user: str, password: str) -> bool:
        return {"ssh-1": self.host.password_works, "pg-1": self.pg.logs_in,
                "my-1": self.my.password_works, "rd-1": self.rd.logs_in,
                "ldap-1": lambda user, pw: self.ldap.logs_in(f"uid={user},{PEOPLE}", pw),
                "ad-1": lambda user, pw: self.ad.logs_in(f"{user}@keyturn.test", pw),
                "dev-1": self.device.password_works}[asset](user, password)

    def server_logs(self) -> str:
        return "\n".join([self.pg.log_path.read_text(errors="replace"), self.pg.statements(),
                          self.my.general_log(), self.my.binlog(),
                          self.rd.log_path.read_text(errors="replace"),
                          self.ldap.log_text(), self.ad.log_text(),
                          self.host.log_path.read_text(errors="replace"),
                          self.device.log_path.read_text(errors="replace")])


@pytest.fixture
def fleet(ctl, ssh_farm, pg_server, mariadb, redis_acl_server, slapd, samba_dc):
    made = Fleet(ctl, ssh_farm, pg_server, mariadb, redis_acl_server, slapd, samba_dc)
    yield made
    made.host.close()
    made.device.close()


@pytest.fixture
def group(ctl, rabbitmq_url, tmp_path):
    processes = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url), tmp_path)
    yield processes
    processes.close()


def test_one_plan_rotates_a_host_three_kinds_of_database_and_a_device(ctl, fleet, group):
    user, bystander = fresh("app"), fresh("other")
    old = {asset: fresh("old") for asset in fleet.assets}
    for asset in fleet.assets:
        fleet.add_user(asset, user, old[asset])
        fleet.add_user(asset, bystander, old[asset] + "-b")
    save(ctl, "mix", [user], nodes=["/mix"])
    group.start("daemon", "daemon")
    worker = group.start("worker", "worker", "--zone", "mix")
    run = group.run("plan", "run", "mix", "--wait", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr + log_text(Execution.get())
    new = {asset: current_secret(ctl, asset, user) for asset in fleet.assets}
    for asset in fleet.assets:
        assert new[asset] != old[asset]
        assert fleet.logs_in(asset, user, new[asset]), asset
        assert not fleet.logs_in(asset, user, old[asset]), asset
        assert fleet.logs_in(asset, bystander, old[asset] + "-b"), asset
        assert current_secret(ctl, asset, bystander) == old[asset] + "-b"
    logs = fleet.server_logs() + worker.log_text()
    for secret in [*new.values(), *old.values(), "enable-pw-e2e"]:
        assert secret not in logs


def test_a_worker_killed_mid_run_on_database_assets_loses_nothing(ctl, fleet, group):
    users = [fresh(f"u{n:02d}") for n in range(15)]
    for asset in ("pg-1", "my-1", "rd-1"):
        for user in users:
            fleet.add_user(asset, user, f"old-{user}")
    save(ctl, "dbs", users, nodes=["/mix"])
    group.start("daemon", "daemon")
    first = group.start("worker-1", "worker", "--zone", "mix", KEYTURN_WORKER_THREADS="2")
    assert group.run("plan", "run", "dbs").returncode == 0
    execution = Execution.select().order_by(Execution.id.desc()).get()
    wait_until(lambda: Execution.get_by_id(execution.id).succeeded >= 5, 120,
               what="some records to end")
    first.kill()
    group.start("worker-2", "worker", "--zone", "mix")
    wait_until(lambda: Execution.get_by_id(execution.id).status != "running", 300,
               what="the run to settle")
    statuses = [r.status for r in Record.select().where(Record.execution == execution)]
    assert statuses.count("success") == len(statuses) == 45, statuses
    for account in Account.select(Account, Asset).join(Asset).where(Account.username.in_(users)):
        secret = ctl.vault.decrypt(account.secret_current)
        assert fleet.logs_in(account.asset.name, account.username, secret)
        assert not fleet.logs_in(account.asset.name, account.username, f"old-{account.username}")
