"""A process's own Prometheus endpoint (`--metrics-port` of `keyturn daemon` and `keyturn
worker`): the figures that live only in that process, such as how long it takes to apply
results or to log in over SSH. Figures kept in the database are the console's `/metrics`.

Bound to 127.0.0.1 unless told otherwise: the endpoint has no authentication of its own."""
from __future__ import annotations

import logging

import click
from prometheus_client import REGISTRY, start_http_server

logger = logging.getLogger(__name__)
DEFAULT_ADDRESS = "127.0.0.1"


class MetricsServer:
    """A service with start() and stop(), like the daemon's."""

    def __init__(self, port: int, address: str = DEFAULT_ADDRESS):
        self.port = port
        self.address = address
        self._server = None

    def start(self) -> None:
        self._server, _thread = start_http_server(self.port, self.address, REGISTRY)
        self.port = self._server.server_port      # the real one when 0 was asked for
        logger.info("metrics on http://%s:%s/metrics", self.address, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def metrics_options(command):
    """`--metrics-port` and `--metrics-address` for a command that serves its own figures."""
    command = click.option("--metrics-address", default=DEFAULT_ADDRESS, show_default=True,
                           help="Address of the metrics endpoint (it has no authentication)."
                           )(command)
    return click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
                        help="Serve this process's Prometheus metrics on PORT.")(command)
