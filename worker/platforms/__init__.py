"""Platform drivers by platform name; a platform without one is refused, never guessed."""
from __future__ import annotations

from worker.platforms.base import ChangeFailed, Driver
from worker.platforms.linux import LinuxDriver

DRIVERS: dict[str, Driver] = {"linux": LinuxDriver(), "unix": LinuxDriver()}

__all__ = ["DRIVERS", "ChangeFailed", "Driver"]
