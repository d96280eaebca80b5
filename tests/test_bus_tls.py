"""RabbitMQ over TLS, on a node of the tests' own whose TLS listener has a certificate from a
test CA and asks every client for a certificate: the daemon and a zone's worker (each with its
least-privilege account) rotate through it, and a wrong CA, a host name the certificate is not
for, a missing client certificate or TLS files without an amqps:// URL stop start-up with one
line."""
from __future__ import annotations

import pytest

from controller import inventory
from tests.certs import make_certificates
from tests.e2e import current_secret, save
from tests.processes import ProcessGroup, keyturn_env

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def tls_bus(bus_accounts):
    return {role: bus_accounts.url(role, tls=True) for role in ("controller", "t")}


def tls_files(node) -> dict[str, str]:
    return {"KEYTURN_BROKER_CA": str(node.certificates.ca),
            "KEYTURN_BROKER_CERT": str(node.client_cert), "KEYTURN_BROKER_KEY": str(node.client_key)}


@pytest.fixture
def zone_t(ctl):
    inventory.add_zone(ctl, "t", None, trust_first_use=True)


@on_postgres
def test_a_rotation_through_tls_with_client_certificates(ctl, zone_t, tls_bus, rabbit_node,
                                                         ssh_farm, tmp_path):
    host, = ssh_farm.start_hosts(1, users={"carol": "carol-old-1"})
    host.set_password("root", "root-pw-t")
    inventory.add_asset("t-0", host.address, 22, "linux", "t", "/dc/t", host.host_public_key)
    inventory.set_account(ctl, "t-0", "root", "root-pw-t", True)
    inventory.set_account(ctl, "t-0", "carol", "carol-old-1", False)
    save(ctl, "over-tls", ["carol"])
    group = ProcessGroup(keyturn_env(ctl.settings, tls_bus["controller"]) | tls_files(rabbit_node),
                         tmp_path)
    try:
        group.start("daemon", "daemon")
        group.start("worker", "worker", "--zone", "t", KEYTURN_BROKER_URL=tls_bus["t"])
        run = group.run("plan", "run", "over-tls", "--wait", timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        connections = [line.split("\t") for line in
                       rabbit_node.ctl("list_connections", "user", "ssl", "port").splitlines()[1:]]
        over_tls = {user for user, ssl, port in connections if port == str(rabbit_node.tls_port)
                    and ssl == "true"}
        assert over_tls == {"keyturn-controller", "keyturn-zone-t"}     # the daemon, the worker
    finally:
        group.close()
    new = current_secret(ctl, "t-0", "carol")
    assert new != "carol-old-1" and host.password_works("carol", new)
    for process in group.processes:
        assert "Traceback" not in process.log_text() and new not in process.log_text()


@on_postgres
def test_a_wrong_ca_or_no_client_certificate_stops_start_up_with_one_line(
        ctl, zone_t, tls_bus, rabbit_node, tmp_path):
    base = keyturn_env(ctl.settings, tls_bus["controller"])
    wrong_ca = {"KEYTURN_BROKER_CA": str(make_certificates(tmp_path).ca),
                "KEYTURN_BROKER_CERT": str(rabbit_node.client_cert),
                "KEYTURN_BROKER_KEY": str(rabbit_node.client_key)}
    no_certificate = {"KEYTURN_BROKER_CA": str(rabbit_node.certificates.ca)}
    plain_url = {"KEYTURN_BROKER_URL": tls_bus["controller"].replace("amqps:", "amqp:")}
    cases = [
        (["worker", "--zone", "t"], wrong_ca | {"KEYTURN_BROKER_URL": tls_bus["t"]},
         "certificate verify failed"),
        (["daemon"], wrong_ca, "certificate verify failed"),
        (["worker", "--zone", "t"], no_certificate | {"KEYTURN_BROKER_URL": tls_bus["t"]},
         "client certificate"),
        (["daemon"], no_certificate, "client certificate"),
        (["daemon"], tls_files(rabbit_node) | plain_url,
         "KEYTURN_BROKER_CA: needs an amqps:// KEYTURN_BROKER_URL"),
        (["worker", "--zone", "t"],      # the certificate is for 127.0.0.1, not for localhost
         tls_files(rabbit_node) | {"KEYTURN_BROKER_URL": tls_bus["t"].replace("@127.0.0.1:",
                                                                            "@localhost:")},
         "Hostname mismatch"),
    ]
    passwords = [url.split(":")[2].split("@")[0] for url in tls_bus.values()]
    for args, env, expected in cases:
        done = ProcessGroup(base | env, tmp_path).run(*args, timeout=60)
        assert done.returncode in (1, 2), (args, env, done.stderr)
        line, = done.stderr.strip().splitlines()
        assert expected in line and line.startswith("keyturn:"), line
        assert not any(password in line for password in passwords)


def test_unreadable_tls_files_are_a_setting_error_naming_the_file(tmp_path):
    from shared.bus import tls_context
    from shared.settings import BrokerTls, SettingsError

    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=f"KEYTURN_BROKER_CA: cannot load {garbage}"):
        tls_context(BrokerTls(garbage, None, None))
    good_ca = make_certificates(tmp_path)
    with pytest.raises(SettingsError, match="KEYTURN_BROKER_CERT: cannot load"):
        tls_context(BrokerTls(good_ca.ca, good_ca.cert, garbage))
