"""The security review's replay attack, end to end on real processes, RabbitMQ and an sshd host:
someone who can read a zone queue copies a sealed command, waits until the account has been
rotated again, and publishes the copy. The password on the host must stay the controller's."""
from __future__ import annotations

import time

import pika
import pytest

from controller import inventory
from controller.models import Account, Asset, Execution, Record, utcnow
from shared.broker import rotate_queue
from tests.e2e import current_secret, save
from tests.processes import ProcessGroup, keyturn_env, wait_until
from tests.test_planning import log_text

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]
DEADLINE = 12          # KEYTURN_ROTATION_DEADLINE for this test: commands are valid ~10 s


def copy_waiting_command(rabbitmq_url: str, queue: str):
    """What an eavesdropper with read access takes: the body and properties of the waiting
    message, which goes back to the queue untouched."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    method, properties, body = channel.basic_get(queue, auto_ack=False)
    assert method is not None, "no command waiting"
    channel.basic_nack(method.delivery_tag, requeue=True)
    connection.close()
    return properties, body


def republish(rabbitmq_url: str, queue: str, properties, body) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().basic_publish("", queue, body, properties)
    connection.close()


def test_a_replayed_command_never_rolls_the_password_back(ctl, ssh_farm, rabbitmq_url, tmp_path):
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-old"})
    host.set_password("root", "root-pw")
    inventory.add_zone(ctl, "east", None, trust_first_use=True)
    inventory.add_asset("east-0", host.address, 22, "linux", "east", "/dc/east", host.host_public_key)
    inventory.set_account(ctl, "east-0", "root", "root-pw", True)
    inventory.set_account(ctl, "east-0", "alice", "alice-old", False)
    save(ctl, "weekly", ["alice"])
    env = keyturn_env(ctl.settings, rabbitmq_url) | {
        "KEYTURN_ROTATION_DEADLINE": str(DEADLINE), "KEYTURN_CLOCK_SKEW": "0"}
    group = ProcessGroup(env, tmp_path)
    queue = rotate_queue("east")
    try:
        assert group.run("plan", "run", "weekly").returncode == 0      # published, no worker yet
        properties, body = copy_waiting_command(rabbitmq_url, queue)
        group.start("daemon", "daemon")
        worker = group.start("worker", "worker", "--zone", "east")
        wait_until(lambda: Execution.select().where(Execution.status == "success").count() == 1,
                   120, what="the first rotation")
        first_secret = current_secret(ctl, "east-0", "alice")
        first_record = Record.get()

        # While the first command may still act, the account is not rotated again ...
        early = group.run("plan", "run", "weekly", "--wait", timeout=120)
        assert early.returncode != 0 and "1 skipped" in early.stdout
        held = Execution.select().order_by(Execution.id.desc()).get()
        assert "rotated too recently" in log_text(held)
        assert current_secret(ctl, "east-0", "alice") == first_secret

        # ... and once it cannot, it is.
        wait_until(lambda: utcnow() > Record.get_by_id(first_record.id).deadline, 60,
                   what="the first command's deadline")
        later = group.run("plan", "run", "weekly", "--wait", timeout=120)
        assert later.returncode == 0, later.stdout + later.stderr
        second_secret = current_secret(ctl, "east-0", "alice")
        assert second_secret != first_secret and host.password_works("alice", second_secret)

        # The copy of the first command comes back: the worker refuses it as expired.
        republish(rabbitmq_url, queue, properties, body)
        wait_until(lambda: "expired before the change was sent" in worker.log_text(), 60,
                   what="the worker to refuse the copy")
        time.sleep(1)
        assert host.password_works("alice", second_secret)
        assert not host.password_works("alice", first_secret)
        assert current_secret(ctl, "east-0", "alice") == second_secret
        assert Record.get_by_id(first_record.id).status == "success"     # unchanged
        account = Account.select().join(Asset).where(Account.username == "alice").get()
        assert account.busy_execution is None
    finally:
        group.close()
