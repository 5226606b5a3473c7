"""The SQL store (``expiry:sql``): SQLAlchemy 2 Core on SQLite or PostgreSQL, for a farm.

``sessions`` holds the open sessions: one row each, the lifecycle record and
the data (readable JSON). Every write is a conditional UPDATE (the row still
there; for data, the version it was read at), never an upsert, so a request
that finishes after a logout, a revoke or a sweep cannot bring a session back.
The store keeps its own short transactions, independent of the request's: an
exception in a view cannot undo a logout.

Ending a session moves it, in one transaction: its row is deleted and its
``ended`` row written to ``session_events``, holding the record as it ended
(the tombstone: why it ended, for the pages that say so) until retention
is over. The unique (session_key, kind) pair makes "exactly once" a fact of the
database, and a key is never opened again. The same statement puts the
event's id in ``session_outbox``, a table of one small column; notifications
go out after the commit, and the id is deleted once they were sent (at least
once). Nothing is updated to end a session: a tombstone kept in ``sessions``
was a new version of the row with an entry in each of its indexes, and an
event marked sent was the same again.

Touches change only ``last_seen`` and ``idle_deadline``, which no index
covers, so PostgreSQL can make them HOT updates. The sweeper finds overdue
sessions through ``sweep_at``, a lower bound of the session's deadline that
is refreshed only when the sweeper finds the session still alive.

One class, :class:`SqlStore`, put together from a module per concern:
:mod:`.schema` (the tables), :mod:`.engine` (connections, transactions),
:mod:`.lifecycle`, :mod:`.sweeping`, :mod:`.reports` and :mod:`.throttling`.
"""
from __future__ import annotations

import threading
from collections import Counter

import sqlalchemy as sa

from ...settings import Policy
from ..sweeping import OnEnd, SweepThread
from .engine import DriverRead, engine_for, unavailable
from .lifecycle import GET, Lifecycle
from .reports import REFUSALS_FLUSH_INTERVAL, Reports
from .schema import (
    metadata,
    session_events,
    session_failures,
    session_outbox,
    session_refusals,
    sessions,
)
from .sweeping import Sweeping
from .throttling import Throttling

__all__ = ("SqlStore", "engine_for", "metadata", "session_events", "session_failures",
           "session_outbox", "session_refusals", "sessions", "unavailable")


class SqlStore(Lifecycle, Sweeping, Reports, Throttling):
    """A ``Store`` on SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine, policy: Policy, clock,
                 on_end: OnEnd = lambda event: None):
        self.engine = engine
        self.policy = policy
        self.clock = clock
        self.on_end = on_end
        self._sweeper: SweepThread | None = None
        # Re-entrant: a subscriber may end another session (and notify) in this thread.
        self._notifying = threading.RLock()
        self._sqlite = engine.dialect.name == "sqlite"
        self._row_locks = not self._sqlite
        #: PostgreSQL: every request's read, from a pool of its own (switching a pooled
        #: connection to autocommit and back costs more than a read).
        self._reads = None if self._sqlite else DriverRead(engine.url, GET)
        #: The open session row ``get`` read last in this thread, until ``load_data``
        #: uses it or this thread writes anything (``_begin``).
        self._just_read = threading.local()
        self._refusals: Counter = Counter()  # (hour, reason) -> requests not written yet
        self._refusals_lock = threading.Lock()
        self._refusals_timer: threading.Timer | None = None
        self.refusals_flush_interval = REFUSALS_FLUSH_INTERVAL

    def close(self):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        self.flush_refusals()
        with self._refusals_lock:  # a failed last write is not retried after the close
            if self._refusals_timer is not None:
                self._refusals_timer.cancel()
        self.engine.dispose()
        if self._reads is not None:
            self._reads.engine.dispose()
