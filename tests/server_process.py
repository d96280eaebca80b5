"""What the tests' own servers (redis-server, slapd, samba) share: waiting until they answer,
stopping their process, and a temporary directory that lives exactly as long as the server in it."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

Server = TypeVar("Server")


def wait_until_answering(process: subprocess.Popen, probe: Callable[[], object],
                         not_yet: type[Exception] | tuple[type[Exception], ...], seconds: float,
                         exited: Callable[[], str], pause: float = 0.1) -> None:
    """Call `probe()` until it stops raising `not_yet` (re-raised after `seconds`); a process
    that exits meanwhile is a RuntimeError saying `exited()` (its name and where to look)."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{exited()} (exit status {process.returncode})")
        try:
            probe()
            return
        except not_yet:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)


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
