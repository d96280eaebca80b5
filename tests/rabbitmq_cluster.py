"""A three-node RabbitMQ cluster of the tests' own (never the machine's node on 5672): nodes
`kt-a`, `kt-b` and `kt-c` of `tests.rabbitmq_server.RabbitNode`, with one Erlang cookie, started
together and joined with `rabbitmqctl join_cluster`, stopped and removed at the end of the
module that uses it. The cluster forms in the background while the test sets up the rest
(`ready` waits for it)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.rabbitmq_server import ADMIN, RabbitNode


class RabbitCluster:
    def __init__(self, directory: Path, names=("kt-a", "kt-b", "kt-c")):
        cookie = secrets.token_hex(20)
        self.nodes = []
        for name in names:            # started at once: they boot in parallel
            (directory / name).mkdir()
            self.nodes.append(RabbitNode(directory / name, f"{name}-{os.getpid()}@localhost",
                                         cookie))
        forming = ThreadPoolExecutor(1)
        self._formed = forming.submit(self.form)
        forming.shutdown(wait=False)

    def ready(self) -> "RabbitCluster":
        self._formed.result()
        return self

    def form(self) -> None:
        """Wait for every node, then join the others to the first (`join_cluster` resets a
        joining node: users and virtual hosts are the first node's)."""
        first = self.nodes[0]
        first.wait_ready()
        for node in self.nodes[1:]:
            node.wait_started()
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        running = json.loads(first.ctl("cluster_status", "--formatter", "json"))["running_nodes"]
        assert sorted(running) == sorted(node.name for node in self.nodes), running

    @property
    def running(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.process.poll() is None]

    def add_vhost(self, vhost: str) -> None:
        self.running[0].add_vhost(vhost)

    def url(self, vhost: str, *order: int) -> str:
        """The broker URL setting naming the nodes in `order` (indexes), `;`-separated."""
        return ";".join(self.nodes[index].url(vhost, ADMIN) for index in order)

    def leader(self, vhost: str, queue: str) -> RabbitNode:
        """The node whose member of a quorum queue is its leader now."""
        listed = json.loads(self.running[0].ctl("list_queues", "-p", vhost, "name", "leader",
                                                "--formatter", "json"))
        name = next(q["leader"] for q in listed if q["name"] == queue)
        return next(node for node in self.nodes if node.name == name)

    def members(self, vhost: str, queue: str) -> list[str]:
        listed = json.loads(self.running[0].ctl("list_queues", "-p", vhost, "name", "members",
                                                "--formatter", "json"))
        return next(q["members"] for q in listed if q["name"] == queue)

    def stop(self) -> None:
        self._formed.exception()              # never stop a node in the middle of joining
        with ThreadPoolExecutor(len(self.nodes)) as pool:    # at once: each stop takes seconds
            list(pool.map(RabbitNode.stop, self.nodes))


@pytest.fixture(scope="module")
def rabbit_cluster():
    directory = Path(tempfile.mkdtemp(prefix="keyturn-cluster-"))
    cluster = RabbitCluster(directory)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
