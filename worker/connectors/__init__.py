"""The worker's connector table, read from the platform registry (`shared.platforms`): a
connector module is imported the first time a command for its platform arrives, so a worker
needs only the client libraries of the targets it serves."""
from __future__ import annotations

import functools
import importlib

from shared.platforms import platform
from worker.connectors.base import Connector, Targets
from worker.errors import TargetError

__all__ = ["Connector", "TargetError", "Targets", "connector_class"]


@functools.cache
def connector_class(platform_name: str) -> type[Connector]:
    module, _, name = platform(platform_name).connector.partition(":")
    return getattr(importlib.import_module(module), name)
