"""The Redis store's lifecycle: open, read (one round trip), write data conditionally, touch,
end exactly once. Each step is one script on one partition's slot; a write never resurrects
(a script writes only to a session still open, data only at the version it was read at)."""
from __future__ import annotations

import logging
import threading

from ...events import SessionEnded
from ...record import SessionRecord
from ..data import EMPTY, MAX_WRITE_ATTEMPTS, SessionData, encode, merge
from ..sweeping import report
from .connection import UNREACHABLE, Connection, unavailable
from .layout import GROUP, Layout

log = logging.getLogger("session_expiry.stores.redis")

#: Seconds a session's keys outlive the moment they should have been swept or pruned: the
#: keys' expiry is a safety net (a deployment that stopped sweeping), never an event.
SAFETY = 86400


def record_of(key: str, fields: dict) -> SessionRecord:
    """A session's record from its hash (open or a tombstone)."""
    ended_at = fields.get("e")
    return SessionRecord(
        key=key, user_id=fields["u"], created=int(fields["c"]), last_seen=int(fields["l"]),
        idle_deadline=int(fields["i"]), absolute_deadline=int(fields["a"]),
        ended_at=None if ended_at is None else int(ended_at), end_reason=fields.get("r"),
        ip=fields.get("ip"), user_agent=fields.get("ua"))


def tombstone_of(row: list) -> tuple[str, SessionRecord]:
    """(event id, tombstone) from what the ending scripts return."""
    event_id, key, user_id, created, seen, idle, absolute, ip, agent, ended_at, reason = row
    return event_id, SessionRecord(
        key=key, user_id=user_id, created=int(created), last_seen=int(seen),
        idle_deadline=int(idle), absolute_deadline=int(absolute), ended_at=int(ended_at),
        end_reason=reason, ip=ip or None, user_agent=agent or None)


class Lifecycle:
    """Sessions opened, read, written, touched and ended (``SessionStore``'s lifecycle)."""

    redis: Connection
    layout: Layout
    consumer: str
    #: The hash ``get`` read last in this thread (its ``read``): ``load_data`` of the same
    #: key uses it, so a request reads its session in one round trip.
    _just_read: threading.local

    @unavailable
    def open(self, key, user_id, now, ip=None, user_agent=None):
        record = SessionRecord.opened(key, user_id, now, self.policy, ip=ip,
                                      user_agent=user_agent)
        self._forget_read()
        keep = self.policy.absolute_timeout + self.policy.retention + SAFETY
        opened = self.redis.run("open", [self.layout.partition(key).base], [
            key, record.user_id, now, record.idle_deadline, record.absolute_deadline,
            ip or "", user_agent or "", keep])
        if not opened:
            raise ValueError(f"session {key[:12]} exists already")
        return record

    @unavailable
    def get(self, key):
        fields = self.redis.hgetall(self.layout.partition(key).session(key))
        if not fields:
            self._forget_read()
            return None
        self._just_read.read = (key, fields)
        return record_of(key, fields)

    @unavailable
    def load_data(self, key):
        read = getattr(self._just_read, "read", None)
        if read is not None and read[0] == key:
            self._just_read.read = None
            fields = read[1]
        else:
            fields = self.redis.hgetall(self.layout.partition(key).session(key))
        if "v" not in fields:
            return None
        return SessionData(fields["d"], int(fields["v"]))

    @unavailable
    def save_data(self, key, values, base=EMPTY):
        self._forget_read()
        partition, session = self.layout.partition(key), self.layout.partition(key).session(key)
        if base is not None and values == base.values():
            return bool(self.redis.client.hexists(session, "v"))  # nothing to write; open?
        text = encode(values)  # refuse what JSON cannot hold before Redis sees it
        for _ in range(MAX_WRITE_ATTEMPTS):
            answer = self.redis.run("save", [partition.base], [
                key, text, "" if base is None else base.version])
            if not isinstance(answer, list):
                return bool(answer)  # written; or not open: never resurrect
            current = SessionData(answer[0], int(answer[1]))
            values = merge(base.values(), values, current.values(), key)
            text, base = encode(values), current
        log.error("session %s: data not saved after %d conflicting writes",
                  key[:12], MAX_WRITE_ATTEMPTS)
        return False

    @unavailable
    def touch(self, key, now, interval=0):
        self._forget_read()
        fields = self.redis.run("touch", [self.layout.partition(key).base],
                                [key, now, interval, self.policy.idle_timeout])
        if fields is None:
            return None
        user_id, created, seen, idle, absolute, ip, agent = fields
        return SessionRecord(key=key, user_id=user_id, created=int(created),
                             last_seen=int(seen), idle_deadline=int(idle),
                             absolute_deadline=int(absolute), ip=ip, user_agent=agent)

    @unavailable
    def end(self, key, reason, now):
        self._forget_read()
        row = self.redis.run("end", [self.layout.partition(key).base],
                             [key, str(reason), now, self.consumer, self._keep])
        if row is None:
            return None
        event_id, record = tombstone_of(row)
        self._notify(self.layout.partition(key).events, [(event_id, SessionEnded.of(record))])
        return record

    @unavailable
    def end_user_sessions(self, user_id, reason, now, keep=None):
        keys = sorted(self._keys_of_user(str(user_id)) - {keep})
        return [record for record in (self.end(key, reason, now) for key in keys)
                if record is not None]

    @unavailable
    def user_sessions(self, user_id, now):
        records = [record for record in self._records_of_user(str(user_id))
                   if record.is_open and record.deadline > now]
        return sorted(records, key=lambda record: (-record.last_seen, record.key))

    # -- internals ---------------------------------------------------------------------

    @property
    def _keep(self) -> int:
        """Seconds a tombstone's key is kept at most (the sweep prunes it at retention)."""
        return self.policy.retention + SAFETY

    def _forget_read(self) -> None:
        self._just_read.read = None

    def _keys_of_user(self, user_id: str) -> set[str]:
        """The keys of the user's open sessions: their index in every partition, read at
        once (one round trip; one per server of a cluster)."""
        pipe = self.redis.client.pipeline(transaction=False)
        for partition in self.layout.partitions:
            pipe.smembers(partition.user(user_id))
        return set().union(*pipe.execute())

    def _records_of_user(self, user_id: str) -> list[SessionRecord]:
        """The records of the user's open sessions (a session that ended meanwhile, as a
        tombstone)."""
        keys = sorted(self._keys_of_user(user_id))
        pipe = self.redis.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.layout.partition(key).session(key))
        found = zip(keys, pipe.execute(), strict=True) if keys else ()
        return [record_of(key, fields) for key, fields in found
                if fields and fields.get("u") == user_id]

    def _notify(self, stream: str, events: list[tuple[str, SessionEnded]]) -> int:
        """Tell of ``events`` (delivered to this store's consumer; the ending script has
        written everything else): hand each to the subscribers, then acknowledge them. A
        process that dies before the acknowledgement leaves them pending, for a sweeper to
        claim and tell again (at least once)."""
        if not events:
            return 0
        for _, event in events:
            report(self.on_end, event)
        try:
            self.redis.client.xack(stream, GROUP, *(event_id for event_id, _ in events))
        except UNREACHABLE as error:  # the sessions are ended; a sweeper tells them again
            log.warning("%d ended sessions told but not acknowledged, for a sweeper to tell "
                        "again: Redis: %s", len(events), error)
        return len(events)
