"""The database handle: a proxy the models bind to, initialised from a URL at start-up."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import parse as parse_db_url

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",       # readers never block the writer
    "busy_timeout": 15000,       # wait for the writer instead of failing with "database is locked"
    "foreign_keys": 1,
    "synchronous": "normal",     # durable with WAL, without an fsync per commit
}


def open_database(url: str) -> peewee.Database:
    """Open the database named by `url` (sqlite:///abs/path or postgresql://...) and bind the models."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        db = peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, returning_clause=True)
    else:
        db = peewee.PostgresqlDatabase(**parse_db_url(url, unquote_password=True, unquote_user=True))
    database.initialize(db)
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)
