"""The embedded default: one process runs the daemon, a worker for every zone whose key is on
this machine, and the console, over dramatiq's in-process broker. With a broker configured,
`serve` runs the daemon and the console only; workers run in their zones."""
from __future__ import annotations

import logging
import threading

from controller.daemon import daemon_services
from controller.models import Zone
from controller.runtime import Controller

logger = logging.getLogger(__name__)
ZONE_POLL_SECONDS = 2.0


class EmbeddedWorkers:
    """A worker agent for the zones registered with a local key; restarted with the new zone set
    when a zone is added while `serve` runs (queued messages wait in the in-process broker)."""

    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self._agent = None
        self._zones: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-workers", daemon=True)

    def local_zones(self) -> list[str]:
        return sorted(z.name for z in Zone.select(Zone.name)
                      if self.ctl.settings.zone_key_path(z.name).exists())

    def start(self) -> None:
        self._refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._agent is not None:
            self._agent.stop()

    def _refresh(self) -> None:
        from worker.agent import WorkerAgent

        zones = self.local_zones()
        if zones == self._zones:
            return
        if self._agent is not None:
            self._agent.stop()
            self._agent = None
        self._zones = zones
        if zones:
            self._agent = WorkerAgent(self.ctl.settings, zones, self.ctl.broker)
            self._agent.start()
            logger.info("embedded worker serves zones %s", ", ".join(zones))

    def _watch(self) -> None:
        while not self._stop.wait(ZONE_POLL_SECONDS):
            try:
                self._refresh()
            except Exception:
                logger.exception("could not refresh the embedded worker's zones")


def services(ctl: Controller, host: str, port: int) -> list:
    """What `keyturn serve` runs, in start order."""
    running = daemon_services(ctl)
    if ctl.settings.embedded:
        running.append(EmbeddedWorkers(ctl))
    from controller.web.server import WebServer

    return running + [WebServer(ctl, host, port)]
