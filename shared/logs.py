"""Logging for keyturn processes: one format, the level from KEYTURN_LOG_LEVEL, and the chatty
libraries (paramiko, pika) quiet unless debugging. Secrets never reach a log record: they are
sealed or `SecretStr` wherever they travel."""
from __future__ import annotations

import logging

from shared.settings import Settings

CHATTY = ("paramiko", "pika")


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelName(settings.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        for name in CHATTY:    # several INFO lines per SSH login or AMQP connection otherwise
            logging.getLogger(name).setLevel(logging.WARNING)
