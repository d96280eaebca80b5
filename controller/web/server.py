"""The console inside `keyturn serve`: werkzeug's threaded server on a background thread.
Production may run the same app under gunicorn instead (`controller.web:create_app()`)."""
from __future__ import annotations

import logging
import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from controller.runtime import Controller

logger = logging.getLogger(__name__)


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler with its access lines only when debugging (KEYTURN_LOG_LEVEL=DEBUG):
    otherwise each request, page assets included, would print a line into the terminal."""

    def log_request(self, code="-", size="-") -> None:
        if logger.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


class WebServer:
    """A service with start() and stop(), like the daemon's."""

    def __init__(self, ctl: Controller, host: str, port: int):
        self.ctl = ctl
        self.host = host
        self.port = port
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from controller.web import create_app

        self._server = make_server(self.host, self.port, create_app(self.ctl), threaded=True,
                                   request_handler=QuietRequestHandler)
        self.port = self._server.server_port          # the real one when 0 was asked for
        self._thread = threading.Thread(target=self._server.serve_forever, name="keyturn-web",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._server.server_close()
            self._server = None
