"""Where the Redis store keeps what: key names, and the partitions that lay them out over a
cluster's slots. Pure: no I/O.

Every session lives in one of :data:`PARTITIONS` partitions, chosen by its key (the
SHA-256 of its id), so a session's id tells which slot holds it. A partition's keys
share one hash tag, so every atomic step (a script: open, touch, end, a sweep's batch)
touches one slot. The tags are chosen so the partitions fall evenly over the slot space:
a cluster's masters, which own contiguous slot ranges, each get their share.

Per partition ``{tag}``:

- ``s:<key>``: the session, a hash: the record (``u`` user, ``c`` created, ``l`` last
  seen, ``i``/``a`` the idle and absolute deadlines, ``ip``, ``ua``), and while open its
  data (``d``, JSON text) and version (``v``); once ended, ``e`` (ended at) and ``r``
  (reason) instead of the data: the tombstone;
- ``due``, ``seen``, ``born``: the open sessions by deadline, last seen and start (sorted
  sets; ``due`` is where the sweeper finds overdue sessions);
- ``started``: every session by its start, for the last 24 hours' count;
- ``ended``: the tombstones by end, members ``<key>:<reason>:<duration>:<user>``, so the
  report reads an end without reading its tombstone;
- ``events``: the end events (a Stream) with the consumer group ``notify``;
- ``t:<hour>:<reason>``: the tally of the ends in that hour (epoch seconds // 3600) for
  that reason, ``<second of the hour> <duration> `` each (a string the ending script
  appends to), kept two days: the report's summary reads the last 24 hours from them, not
  from every end;
- per user with sessions in the partition (named by the SHA-1 of the user's id, which a
  script computes too: no user id in a key name), ``u:<sha1>``, the keys of their open
  sessions (a set), and ``ue:<sha1>``, their ends (as ``ended``). A user's index is thus in
  the slot of each of their sessions: the script that opens or ends a session changes it in
  the same atomic step, and a user's sessions are read from every partition at once.

Outside the partitions: the password failures (``{throttle}``) and the refused requests
(``{refusals}``).
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import cached_property

from redis.crc import key_slot

#: Partitions of the sessions; fixed for the life of a deployment (it lays out the keys).
PARTITIONS = 32
#: Redis Cluster's slots.
SLOTS = 16384
#: The stream's consumer group that delivers the end events' notifications.
GROUP = "notify"
#: What every key of the store begins with.
PREFIX = "session-expiry"


def _tag(partition: int) -> str:
    """The hash tag of ``partition``: the first ``<partition>.<n>`` whose slot lies near the
    middle of the partition's share of the slot space (so masters owning any contiguous
    ranges get shares of partitions that differ by one at most)."""
    middle = (2 * partition + 1) * SLOTS // (2 * PARTITIONS)
    n = 0
    while abs(key_slot(f"{partition}.{n}".encode()) - middle) > _NEAR:
        n += 1
    return f"{partition}.{n}"


#: How near the middle of its share a partition's slot lies.
_NEAR = 4
TAGS = tuple(_tag(partition) for partition in range(PARTITIONS))


def partition_of(key: str) -> int:
    """The partition a session key lives in."""
    return zlib.crc32(key.encode()) % PARTITIONS


@dataclass(frozen=True)
class Partition:
    """The keys of one partition: ``base`` is their common beginning (its hash tag picks the
    slot; the scripts get it as KEYS[1] and name the partition's keys from it)."""

    base: str

    def session(self, key: str) -> str:
        return f"{self.base}s:{key}"

    @cached_property
    def due(self) -> str:
        return self.base + "due"

    @cached_property
    def ended(self) -> str:
        return self.base + "ended"

    @cached_property
    def events(self) -> str:
        return self.base + "events"

    def user(self, user_id: str) -> str:
        """The set of the user's open sessions in this partition."""
        return f"{self.base}u:{user_tag(user_id)}"

    def user_ended(self, user_id: str) -> str:
        """The user's ends in this partition, as :attr:`ended` holds them."""
        return f"{self.base}ue:{user_tag(user_id)}"


@dataclass(frozen=True)
class Layout:
    """Every key name of one store, under ``prefix``."""

    prefix: str = PREFIX

    @cached_property
    def partitions(self) -> tuple[Partition, ...]:
        return tuple(Partition(f"{self.prefix}:{{{tag}}}:") for tag in TAGS)

    def partition(self, key: str) -> Partition:
        return self.partitions[partition_of(key)]

    @cached_property
    def failures(self) -> str:
        """Password failures: a hash of ``<count>:<last>`` by hashed key name."""
        return f"{self.prefix}:{{throttle}}:failures"

    @cached_property
    def failures_by_last(self) -> str:
        """The same names by their last failure, to forget them in order."""
        return f"{self.prefix}:{{throttle}}:last"

    @cached_property
    def refusals(self) -> str:
        """Refused requests: a hash of counts by ``<hour>:<reason>``."""
        return f"{self.prefix}:{{refusals}}:counts"

    @cached_property
    def pattern(self) -> str:
        """Every session key and tombstone (for a scan)."""
        return f"{self.prefix}:{{*}}:s:*"


def user_tag(user_id: str) -> str:
    """What names a user's keys: the SHA-1 of their id (``redis.sha1hex`` in a script)."""
    return hashlib.sha1(str(user_id).encode()).hexdigest()  # noqa: S324 (a name, not a secret)


def parse_ended(member: str) -> tuple[str, str, int, str]:
    """(key, reason, duration, user id) of an ``ended`` member (a user id may hold colons)."""
    key, reason, duration, user_id = member.split(":", 3)
    return key, reason, int(duration), user_id
