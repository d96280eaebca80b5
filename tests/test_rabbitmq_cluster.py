"""A 200-account run through a three-node RabbitMQ cluster of the tests' own, the daemon and the
worker given the nodes in different orders (so they connect through different nodes), and in
the middle of the run the node leading the zone's quorum queue is stopped: a new leader takes
over, nothing is lost or dead-lettered, every record settles, every stored secret logs in."""
from __future__ import annotations

import json
import secrets
from collections import Counter

import pytest

from shared.broker import RESULTS_QUEUE, rotate_queue
from tests.fleets import linux_fleet
from tests.processes import ProcessGroup, keyturn_env, wait_until
from tests.test_faults import (FAST, assert_settled, current_execution, ended, outcomes, settle,
                               start_run)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

HOSTS, USERS = 20, 10
ZONE = "quorum"


@pytest.fixture
def vhost(rabbit_cluster):
    name = f"kt_{secrets.token_hex(6)}"
    rabbit_cluster.ready().add_vhost(name)
    return name


@pytest.fixture
def farm(ctl, ssh_farm):
    with linux_fleet(ctl, ssh_farm, ZONE, HOSTS, USERS) as hosts:
        yield hosts


@pytest.fixture
def group(ctl, rabbit_cluster, vhost, tmp_path):
    """The daemon (and the CLI) try the nodes a, b, c in this order; the worker b, c, a."""
    processes = ProcessGroup(keyturn_env(ctl.settings, rabbit_cluster.url(vhost, 0, 1, 2)) | FAST,
                             tmp_path)
    yield processes
    processes.close()


def connection_ports(cluster, vhost: str) -> Counter:
    """How many of the virtual host's client connections each node's AMQP port holds."""
    listed = json.loads(cluster.running[0].ctl("list_connections", "port", "vhost",
                                               "--formatter", "json"))
    return Counter(c["port"] for c in listed if c["vhost"] == vhost)


def test_leader_of_the_zone_queue_stopped_mid_run(ctl, farm, group, rabbit_cluster, vhost):
    queue = rotate_queue(ZONE)
    group.start("daemon", "daemon")
    group.start("worker", "worker", "--zone", ZONE,
                KEYTURN_BROKER_URL=rabbit_cluster.url(vhost, 1, 2, 0))
    start_run(group)
    execution = current_execution()
    assert len(rabbit_cluster.members(vhost, queue)) == 3        # replicated on every node
    wait_until(lambda: ended(execution.id) >= 60, 120, what="60 records to end")
    ports = connection_ports(rabbit_cluster, vhost)
    assert {rabbit_cluster.nodes[0].port, rabbit_cluster.nodes[1].port} <= set(ports), ports

    leader = rabbit_cluster.leader(vhost, queue)
    leader.stop()
    print(f"\nstopped {leader.name}, leader of {queue}, with {ended(execution.id)} records ended")
    recovery = settle(group, execution.id)
    print(f"cluster: settled {recovery:.1f} s after the leader stopped")
    assert_settled(ctl, farm, group, execution.id, broker_outage=True)
    assert outcomes(execution.id) == {("success", None): HOSTS * USERS}
    assert rabbit_cluster.leader(vhost, queue) is not leader
    queues = {q["name"]: q["messages"] for q in json.loads(rabbit_cluster.running[0].ctl(
        "list_queues", "-p", vhost, "name", "messages", "--formatter", "json"))}
    assert queues[queue] == 0 and queues[RESULTS_QUEUE] == 0
    assert queues[f"{queue}.XQ"] == 0 and queues[f"{RESULTS_QUEUE}.XQ"] == 0, queues
