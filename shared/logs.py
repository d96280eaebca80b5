"""Logging for keyturn processes: one format, the level from KEYTURN_LOG_LEVEL, and the chatty
libraries (paramiko, pika) quiet unless debugging. Secrets never reach a log record: they are
sealed or `SecretStr` wherever they travel, and the filters that guard the rest (peewee's query
parameters in `controller.db`, `worker.errors.scrub`) act on records before any format.

With KEYTURN_LOG_FORMAT=json each record is one JSON object a line, for log shippers: time,
level, logger, message, the record and execution ids where known, and a traceback if any."""
from __future__ import annotations

import contextvars
import json
import logging
from contextlib import contextmanager
from datetime import datetime, timezone

from shared.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
IDS = ("record", "execution")
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("keyturn_log_ids", default={})


@contextmanager
def log_ids(**ids: int):
    """Name the record (or execution) that the log lines of this block are about."""
    token = _context.set(_context.get() | ids)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        ids = _context.get()
        for name in IDS:
            value = getattr(record, name, None) or ids.get(name)   # extra={"record": 7} wins
            if isinstance(value, int):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelName(settings.log_level)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    if level > logging.DEBUG:
        # paramiko: several INFO lines per login. pika: a traceback at ERROR for every refused
        # connection, which keyturn already reports in one line as it retries.
        logging.getLogger("paramiko").setLevel(logging.WARNING)
        logging.getLogger("pika").setLevel(logging.CRITICAL)
