"""Logging for keyturn processes: one format, the level from KEYTURN_LOG_LEVEL, and the chatty
libraries (paramiko, pika) quiet unless debugging. Secrets never reach a log record: they are
sealed or `SecretStr` wherever they travel."""
from __future__ import annotations

import logging

from shared.settings import Settings


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelName(settings.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        # paramiko: several INFO lines per login. pika: a traceback at ERROR for every refused
        # connection, which keyturn already reports in one line as it retries.
        logging.getLogger("paramiko").setLevel(logging.WARNING)
        logging.getLogger("pika").setLevel(logging.CRITICAL)
