"""Platform drivers by platform name (`unix` assets get the Linux tools)."""
from __future__ import annotations

from worker.platforms.aix import AixDriver
from worker.platforms.base import UnixDriver
from worker.platforms.become import Root
from worker.platforms.linux import LinuxDriver
from worker.platforms.refusals import ChangeFailed

DRIVERS: dict[str, UnixDriver] = {"linux": LinuxDriver(), "unix": LinuxDriver(), "aix": AixDriver()}

__all__ = ["DRIVERS", "ChangeFailed", "Root", "UnixDriver"]
