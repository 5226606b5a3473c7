"""Connections to the SQL store's database: the engine, the driver-level read every request
makes, transactions, and what the store says when the database does not serve it."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import InterfaceError, OperationalError

from ..contract import StoreUnavailable
from ..data import encode

#: Held while a new SQLite connection asks for write-ahead logging: the first one switches
#: a file that has none (an exclusive lock), and a switch racing a transaction begun on
#: another new connection can deadlock, which SQLite answers at once with "database is
#: locked", not after the busy timeout. One at a time, every later one finds it switched.
_WAL_SWITCH = threading.Lock()


def engine_for(url: str) -> sa.Engine:
    """An engine for the store.

    SQLite: write-ahead logging (readers never wait for the writer), and write
    transactions begin IMMEDIATE, so two writers queue instead of failing to
    upgrade a read lock; reads begin DEFERRED. Either way the data is written as the
    memory store keeps it: compact JSON (:func:`encode`).
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=encode)

        @sa.event.listens_for(engine, "connect")
        def _configure(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we say BEGIN ourselves
            with _WAL_SWITCH:
                dbapi_connection.execute("PRAGMA journal_mode=WAL")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection):
            readonly = connection.get_execution_options().get(READONLY, False)
            connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # No ping on every checkout (a round trip per request): a read that meets a
    # connection the server dropped is run once more on a new one (``SqlStore._read``).
    return sa.create_engine(url, json_serializer=encode)


class DriverRead:
    """One read-only statement, compiled once for the driver and run on a pooled DBAPI
    connection in autocommit: no BEGIN and COMMIT round trips, and not SQLAlchemy's
    execution path either, which costs more CPU than the round trip to a local
    PostgreSQL (store.get: 173 µs of CPU through a Connection, 60 µs here).

    Errors come out as SQLAlchemy's (``DBAPIError.instance``), so the store reads
    them like any other; a connection the server dropped is invalidated.
    """

    def __init__(self, url, statement):
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT",
                                       pool_reset_on_return=None)
        self.dialect = self.engine.dialect
        compiled = statement.compile(dialect=self.dialect)
        self.sql = str(compiled)
        self._constants = compiled.params  # the statement's own values (and None for ours)
        self._errors = self.dialect.loaded_dbapi.Error

    def first(self, **params):
        """The first row (a tuple), or None."""
        connection = cursor = None
        try:
            connection = self.engine.raw_connection()
            cursor = connection.cursor()
            params = {**self._constants, **params}
            cursor.execute(self.sql, params)
            return cursor.fetchone()
        except self._errors as error:
            dropped = connection is not None and self.dialect.is_disconnect(
                error, connection.dbapi_connection, cursor)
            if dropped:
                connection.invalidate(error)
            raise sa.exc.DBAPIError.instance(
                self.sql, params, error, self._errors, connection_invalidated=dropped,
                dialect=self.dialect) from error
        finally:
            if connection is not None:
                connection.close()  # back to the pool


READONLY = "session_expiry_readonly"


class Transactions:
    """What every part of the SQL store opens its transactions with."""

    def _insert(self, table: sa.Table):
        """An INSERT into ``table`` that can say ON CONFLICT, in this database's dialect."""
        return (postgresql_insert if self._row_locks else sqlite_insert)(table)

    @contextmanager
    def _begin(self, readonly: bool = False):
        """A connection in a transaction."""
        if not readonly:
            self._just_read.row = None  # a write may change or end what was read
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{READONLY: readonly})
                with conn.begin():
                    yield conn
        except UNAVAILABLE as error:
            raise unavailable(error) from error


#: What the database answers when it cannot serve the store.
UNAVAILABLE = (OperationalError, InterfaceError, sa.exc.TimeoutError, sa.exc.ProgrammingError,
                sa.exc.DataError)


def unavailable(error: sa.exc.SQLAlchemyError) -> StoreUnavailable:
    """What the store says when the database does not serve it: never a 500."""
    reason = str(getattr(error, "orig", error)).splitlines()[0]
    if isinstance(error, sa.exc.DataError):  # a value the database refuses
        return StoreUnavailable("the session database refused a value: " + reason)
    if isinstance(error, sa.exc.ProgrammingError) or "no such table" in reason:
        return StoreUnavailable("the session tables are missing: run "
                                "`session-expiry-db <your ini> upgrade`, or `alembic upgrade "
                                "heads` where your Alembic takes the add-on's versions "
                                f"(docs/add-on.md, Tables) ({reason})")
    return StoreUnavailable(reason)
