"""The database handle: a proxy the models bind to, initialised from a URL at start-up."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import PooledPostgresqlDatabase

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
        # IMMEDIATE: a transaction takes the write lock when it begins (waiting up to busy_timeout),
        # so one that reads first cannot fail when it comes to write after another thread did.
        db = peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, returning_clause=True,
                                   lock_type="IMMEDIATE")
    else:   # pooled: a console request would otherwise pay for a new connection each time
        db = PooledPostgresqlDatabase(max_connections=32, stale_timeout=300,
                                      **parse_db_url(url, unquote_password=True, unquote_user=True))
    database.initialize(db)
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def id_in(field: peewee.Field, ids: list[int]) -> peewee.Expression:
    """`field IN ids`, sent to PostgreSQL as one array parameter (`= ANY(%s)`), since psycopg
    parses a query with thousands of placeholders slowly; SQLite takes the plain list."""
    if is_postgres():
        return field == peewee.fn.ANY(peewee.Cast(peewee.Value(list(ids), unpack=False), "int[]"))
    return field.in_(ids)


def bulk_insert(model: type[peewee.Model], fields: list[peewee.Field], rows: list[tuple]) -> None:
    """Insert many rows of database-ready values without building a query per row: PostgreSQL's
    COPY, or one prepared SQLite statement run over all rows."""
    table = model._meta.table_name
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    if is_postgres():
        with database.cursor() as cursor:
            with cursor.copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        return
    placeholders = ", ".join("?" * len(fields))
    database.cursor().executemany(f'INSERT INTO "{table}" ({columns}) VALUES ({placeholders})', rows)
