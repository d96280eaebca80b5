"""What the tests' own servers (redis-server, slapd, samba) share: stopping their process, and
a temporary directory that lives exactly as long as the server in it."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

Server = TypeVar("Server")


def stop_process(process: subprocess.Popen, seconds: float = 10) -> None:
    """SIGTERM, and SIGKILL if it is still there after `seconds`."""
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def server_in_temp_dir(prefix: str, start: Callable[[Path], Server]) -> Iterator[Server]:
    """`start(directory)` in a new temporary directory; the server (its `stop()`) and the
    directory are gone afterwards, also when it failed to start."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = None
    try:
        server = start(directory)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
