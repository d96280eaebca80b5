"""The database handle: a proxy the models bind to, initialised from a URL at start-up."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

database = peewee.DatabaseProxy()
OWNER_ONLY = 0o600

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
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(path)
        # IMMEDIATE: a transaction takes the write lock when it begins (waiting up to busy_timeout),
        # so one that reads first cannot fail when it comes to write after another thread did.
        # Pooled: closing the last connection checkpoints the WAL (an fsync) and a new one reads
        # the schema again, which made each console request cost 7 ms more (a pooled connection
        # serves one thread at a time, so it may move between threads).
        db = PooledSqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, returning_clause=True,
                                  lock_type="IMMEDIATE", check_same_thread=False,
                                  max_connections=32, stale_timeout=300)
    else:   # pooled: a console request would otherwise pay for a new connection each time
        db = PooledPostgresqlDatabase(max_connections=32, stale_timeout=300,
                                      **parse_db_url(url, unquote_password=True, unquote_user=True))
    database.initialize(db)
    return db


def _owner_only(path: Path) -> None:
    """Make the SQLite file (created now if new) and its -wal and -shm files 0600, whatever the
    umask: they hold password hashes and sealed secrets, and SQLite gives the -wal and -shm files
    it creates the database file's mode."""
    path.touch(mode=OWNER_ONLY)
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            file.chmod(OWNER_ONLY)
        except FileNotFoundError:
            pass


class _QueryTextOnly(logging.Filter):
    """peewee logs every query at DEBUG as (sql, params), and the params of writes to users and
    accounts are password hashes and sealed secrets: keep the SQL text, drop the params."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, tuple):
            record.msg = str(record.msg[0])
        return True


logging.getLogger("peewee").addFilter(_QueryTextOnly())


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def refresh_statistics() -> None:
    """SQLite: ANALYZE, sampling at most 1,000 rows of each index (milliseconds at 1,000,000
    records). SQLite plans from statistics only when told to gather them, and without them it
    may probe a two-column index with both IN lists of a filter (the accounts named alice x a
    plan's executions), which at a million records is millions of probes where one list
    does. PostgreSQL's autovacuum keeps its statistics by itself."""
    if isinstance(database.obj, peewee.SqliteDatabase):
        database.execute_sql("PRAGMA analysis_limit = 1000")
        database.execute_sql("ANALYZE")


def id_in(field: peewee.Field, ids: list[int]) -> peewee.Expression:
    """`field IN ids`, sent to PostgreSQL as one array parameter (`= ANY(%s)`), since psycopg
    parses a query with thousands of placeholders slowly; SQLite takes the plain list."""
    if is_postgres():
        return field == peewee.fn.ANY(peewee.Cast(peewee.Value(list(ids), unpack=False), "int[]"))
    return field.in_(ids)


def lock_rows(model: type[peewee.Model], ids: list[int]) -> None:
    """Inside a transaction about to write several rows of `model`: lock them on PostgreSQL in
    id order first. An UPDATE over many rows locks them in whatever order its plan visits them,
    so two such transactions (a result batch and a progress batch, the reaper) can each hold a
    row the other waits for; when every writer takes its rows in one order, none can deadlock.
    SQLite has one writer at a time already."""
    if ids and is_postgres():
        list(model.select(model.id).where(id_in(model.id, ids)).order_by(model.id)
             .for_update().tuples())


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
