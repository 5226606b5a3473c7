"""The Redis store (``expiry:redis``): one Redis, or a Redis Cluster, for a farm that outgrows
one database. It speaks to Valkey as well (the same protocol).

A session is one hash (its record, and its data as readable JSON while open; the key is the
SHA-256 of its id), read in one round trip. Every change is a script on the slot of the
session's partition (:mod:`.layout`), so it is atomic on a cluster too: writes only to an
open session (never resurrects), data only at the version it was read at (else the changes
are merged by key, as on SQL), a touch at most once per ``touch_interval``.

End events come exactly once without keyspace notifications. Deadlines live in a sorted set
per partition; key expiry is only a safety net. Ending a session is one script, whoever
notices first (the tween, logout, revoke, the sweeper): it leaves the tombstone, writes the
event to the partition's Stream and delivers it to the ending process's consumer in the
consumer group ``notify``, which tells the subscribers, then acknowledges it. An event a
process could not acknowledge (it died) is claimed by a sweeper (``XAUTOCLAIM``) and told
again: at least once for notifications, exactly one event per session. The per-user index
is kept in every partition beside the user's sessions there, so the scripts that open and
end a session change it in the same atomic step.

One class, :class:`RedisStore`, put together from a module per concern: :mod:`.layout` (the
keys), :mod:`.connection` (the client, the scripts in ``lua/``), :mod:`.lifecycle`,
:mod:`.sweeping`, :mod:`.reports` and :mod:`.throttling`.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading

from ...settings import Policy
from ..sweeping import OnEnd, SweepThread
from .connection import Connection
from .layout import PREFIX, Layout
from .lifecycle import Lifecycle
from .reports import Reports
from .sweeping import Sweeping
from .throttling import Throttling

__all__ = ("RedisStore",)


class RedisStore(Lifecycle, Sweeping, Reports, Throttling):
    """A ``Store`` on Redis (or Valkey), one server or a cluster."""

    def __init__(self, url: str, policy: Policy, clock, on_end: OnEnd = lambda event: None,
                 prefix: str = PREFIX):
        self.redis = Connection(url)
        self.layout = Layout(prefix)
        self.policy = policy
        self.clock = clock
        self.on_end = on_end
        #: This process's name in the consumer group: the events it ends are delivered to it.
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._sweeper: SweepThread | None = None
        self._just_read = threading.local()

    def close(self):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        self.redis.close()
