"""End to end on real processes: pinned host keys, sealed messages, zone keys made on the
worker's machine."""
from __future__ import annotations

import pika
import pytest

from controller.models import Account, Asset, Record
from shared.broker import rotate_queue
from tests.e2e import USERS, current_secret, save
from tests.processes import ProcessGroup, keyturn_env

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def test_a_changed_host_key_is_refused_before_any_password_is_sent(ctl, zone_fleet, cluster):
    host = zone_fleet["east-0"]
    host.new_host_key()
    log_before = host.log_path.read_text()
    save(ctl, "east", ["alice"], nodes=["/dc/east"])
    run = cluster.run("plan", "run", "east", "--wait", timeout=240)
    assert run.returncode == 1
    refused = (Record.select().join(Account).join(Asset).where(Asset.name == "east-0").get())
    assert (refused.status, refused.error_code) == ("failed", "host_key_mismatch")
    assert "SHA256:" in refused.error and "no password was sent" in refused.error
    new_lines = host.log_path.read_text()[len(log_before):]
    assert "password" not in new_lines.lower()          # sshd saw no password attempt at all
    assert current_secret(ctl, "east-0", "alice") == USERS["alice"]

    trust = cluster.run("asset", "trust", "east-0", "--yes")
    assert trust.returncode == 0 and "pinned" in trust.stdout, trust.stderr
    assert Asset.get(Asset.name == "east-0").host_key == host.host_public_key
    retry = cluster.run("records", "retry", str(refused.id), "--wait", timeout=240)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert host.password_works("alice", current_secret(ctl, "east-0", "alice"))


def test_no_secret_travels_in_the_clear_on_the_bus(ctl, zone_fleet, rabbitmq_url, tmp_path):
    cli = ProcessGroup(keyturn_env(ctl.settings, rabbitmq_url), tmp_path)   # no workers running
    save(ctl, "sealed", ["alice", "bob"])
    assert cli.run("plan", "run", "sealed").returncode == 0
    secrets = {ctl.vault.decrypt(r.new_secret) for r in Record.select()}
    secrets |= {"ops-pw-1", "root-pw-0", "root-pw-1"} | set(USERS.values())
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    bodies = []
    for zone in ("east", "west"):
        while True:
            method, _, body = channel.basic_get(rotate_queue(zone), auto_ack=True)
            if method is None:
                break
            bodies.append(body)
    connection.close()
    assert len(bodies) == 8
    for body in bodies:
        assert not any(secret.encode() in body for secret in secrets)


def test_a_zone_key_made_on_the_worker_machine(ctl, ssh_farm, rabbitmq_url, tmp_path):
    host, = ssh_farm.start_hosts(1, users={"dana": "dana-old"})
    host.set_password("root", "root-north")
    worker_dir = tmp_path / "worker-machine"
    controller_env = keyturn_env(ctl.settings, rabbitmq_url)
    worker_env = controller_env | {"KEYTURN_DATA_DIR": str(worker_dir)}
    worker_env.pop("KEYTURN_DATABASE_URL")
    group = ProcessGroup(controller_env, tmp_path)
    try:
        keygen = group.run("zone", "keygen", "north", **{"KEYTURN_DATA_DIR": str(worker_dir)})
        public_key = keygen.stdout.strip()
        assert keygen.returncode == 0 and (worker_dir / "zones" / "north.key").stat().st_mode & 0o777 == 0o600
        added = group.run("zone", "add", "north", "--public-key", public_key)
        assert added.returncode == 0, added.stderr
        assert not (ctl.settings.data_dir / "zones" / "north.key").exists()   # stays on the worker
        controller_key = added.stdout.split("controller public key for its workers: ")[1].split()[0]
        steps = [("asset", "add", "n1", "--address", host.address, "--zone", "north"),
                 ("account", "add", "n1", "root", "--privileged", "--secret-stdin"),
                 ("account", "add", "n1", "dana", "--secret-stdin"),
                 ("plan", "add", "north", "--username", "dana", "--asset", "n1")]
        inputs = {1: "root-north\n", 2: "dana-old\n"}
        for index, step in enumerate(steps):
            assert group.run(*step, input=inputs.get(index)).returncode == 0, step
        group.start("daemon", "daemon")
        worker = ProcessGroup(worker_env | {"KEYTURN_CONTROLLER_PUBLIC_KEY": controller_key}, tmp_path)
        group.processes.append(worker.start("worker-north", "worker", "--zone", "north"))
        run = group.run("plan", "run", "north", "--wait", timeout=240)
        assert run.returncode == 0, run.stdout + run.stderr
        assert host.password_works("dana", current_secret(ctl, "n1", "dana"))
    finally:
        group.close()
