"""The memory store: one process, for development and tests.

Like a classic in-process session store it notices the end of a session by
itself: a sweep thread ends overdue sessions within a second of their
deadline and reports each end once. Data is kept as JSON text, so no two
requests share mutable objects and nothing unserialisable slips in.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

from ..decision import overdue_reason
from ..events import SessionEnded
from ..settings import Policy
from ..throttle import Failures, claim, released
from . import (
    EMPTY,
    OnEnd,
    SessionData,
    SessionRecord,
    SweepResult,
    SweepThread,
    merge,
    report,
)
from .readmodel import (
    HOUR,
    WINDOW,
    Cursor,
    EndCount,
    after_cursor,
    hours_ago,
    length_bucket,
    page_of,
    percentile,
    sort_value,
    summarize,
)

log = logging.getLogger(__name__)

#: How many ended sessions the memory store keeps for the report's "recent ends".
RECENT_ENDS = 10_000


@dataclass(slots=True)
class _Entry:
    record: SessionRecord
    #: While open, the data as a request loads it (replaced whole by each write, so a
    #: read needs no lock and makes nothing); None once ended.
    data: SessionData | None


class MemoryStore:
    """A thread-safe in-memory ``SessionStore``."""

    def __init__(self, policy: Policy, clock, on_end: OnEnd = lambda event: None):
        self.policy = policy
        self.clock = clock
        self.on_end = on_end
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._deadlines: list[tuple[int, str]] = []  # heap: one entry per open session
        self._tombstones: deque[tuple[int, str]] = deque()  # in the order they ended
        self._by_user: defaultdict[str, set[str]] = defaultdict(set)  # open keys per user
        self._recent_ends: deque[SessionEnded] = deque(maxlen=RECENT_ENDS)  # oldest first
        self._refusals: Counter = Counter()  # (hour, reason) -> requests
        self._failures: dict[str, Failures] = {}  # password failures, by hashed key name
        self._sweeper: SweepThread | None = None

    # -- the protocol ---------------------------------------------------------

    def open(self, key, user_id, now, ip=None, user_agent=None):
        record = SessionRecord.opened(key, user_id, now, self.policy, ip=ip,
                                      user_agent=user_agent)
        with self._lock:
            if key in self._entries:
                raise ValueError(f"session {key[:12]} exists already")
            self._entries[key] = _Entry(record, EMPTY)
            self._by_user[record.user_id].add(key)
            heapq.heappush(self._deadlines, (record.deadline, key))
        return record

    def get(self, key):
        entry = self._entries.get(key)
        return entry.record if entry else None

    def load_data(self, key):
        entry = self._entries.get(key)
        return None if entry is None else entry.data

    def save_data(self, key, values, base=EMPTY):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.record.is_open:
                return False
            if base is not None:  # None: replace, whatever is there
                if values == base.values():
                    return True
                if entry.data.version != base.version:
                    values = merge(base.values(), values, entry.data.values(), key)
            entry.data = SessionData.of(values, entry.data.version + 1)
            return True

    def touch(self, key, now, interval=0):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.record.is_open:
                return None
            # No push: the session's one heap entry keeps its earlier deadline, and the
            # sweep looks again when it comes due (a touch never grows the heap).
            if now - entry.record.last_seen >= interval:
                entry.record = entry.record.touched(now, self.policy.idle_timeout)
            return entry.record

    def end(self, key, reason, now):
        with self._lock:
            record = self._end_locked(key, reason, now)
        if record is not None:
            report(self.on_end, SessionEnded.of(record))
        return record

    def end_user_sessions(self, user_id, reason, now, keep=None):
        with self._lock:
            keys = self._by_user.get(str(user_id), set()) - {keep}
            records = [self._end_locked(key, reason, now) for key in sorted(keys)]
        for record in records:
            report(self.on_end, SessionEnded.of(record))
        return records

    def user_sessions(self, user_id, now):
        with self._lock:
            records = [self._entries[key].record for key in self._by_user.get(str(user_id), ())]
        records = [record for record in records if record.deadline > now]
        return sorted(records, key=lambda record: (-record.last_seen, record.key))

    def sweep(self, now):
        started = time.monotonic()
        ended, pruned = [], 0
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, key = heapq.heappop(self._deadlines)
                entry = self._entries.get(key)
                if entry is None or not entry.record.is_open:
                    continue  # ended meanwhile: its entry goes with it
                reason = overdue_reason(entry.record, now)
                if reason:
                    ended.append(SessionEnded.of(self._end_locked(key, reason, now)))
                else:  # touched since: due again at its new deadline
                    heapq.heappush(self._deadlines, (entry.record.deadline, key))
            horizon = now - self.policy.retention
            while self._tombstones and self._tombstones[0][0] <= horizon:
                _, key = self._tombstones.popleft()
                pruned += self._entries.pop(key, None) is not None
            for bucket in [bucket for bucket in self._refusals if bucket[0] <= horizon]:
                del self._refusals[bucket]
            forgotten = now - self.policy.throttle_forget_after
            for name in [name for name, kept in self._failures.items() if kept.last <= forgotten]:
                del self._failures[name]
        for event in ended:
            report(self.on_end, event)
        return SweepResult(ended=Counter(event.reason for event in ended), notified=len(ended),
                           pruned=pruned, seconds=time.monotonic() - started)

    def claim_try(self, keys, now):
        with self._lock:
            answer, stored = claim(keys, {key.name: self._failures.get(key.name)
                                          for key in keys}, now)
            self._failures.update(stored)
        return answer

    def release_try(self, keys):
        with self._lock:
            for key in keys:
                kept = released(key, self._failures.get(key.name))
                if kept is None:
                    self._failures.pop(key.name, None)
                else:
                    self._failures[key.name] = kept

    def close(self):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    # -- the report ------------------------------------------------------------

    def count_refusal(self, reason, now):
        with self._lock:
            self._refusals[(now - now % HOUR, str(reason))] += 1

    def summary(self, now):
        since = now - WINDOW
        with self._lock:
            records = [entry.record for entry in self._entries.values()]
            ends = [event for event in self._recent_ends if event.ended_at > since]
            refusals = [(reason, count) for (hour, reason), count in self._refusals.items()
                        if hour > since]
        open_records = [record for record in records if record.is_open]
        overdue = [record.deadline for record in open_records if record.deadline <= now]
        end_counts = Counter((hours_ago(event.ended_at, now), event.reason,
                              length_bucket(event.duration)) for event in ends)
        lengths = sorted(event.duration for event in ends)
        return summarize(
            now, active=len(open_records) - len(overdue),
            started=sum(record.created > since for record in records),
            end_counts=[EndCount(*group, count) for group, count in end_counts.items()],
            refusals=refusals, lengths=(percentile(lengths, .5), percentile(lengths, .9)),
            sweeper_lag=now - min(overdue) if overdue else 0)

    def active_sessions(self, query):
        sort, descending = query.sort, query.sort.descending
        with self._lock:
            keys = (self._by_user.get(query.user_id, set()) if query.user_id is not None
                    else self._entries.keys())
            records = [self._entries[key].record for key in keys]
        rows = sorted(
            (record for record in records
             if record.is_open and record.deadline > query.now
             and after_cursor(sort_value(record, sort), record.key, query.after, descending)),
            key=lambda record: (sort_value(record, sort), record.key), reverse=descending)
        return page_of(rows[:query.limit + 1], query.limit,
                       lambda record: Cursor(sort_value(record, sort), record.key))

    def recent_ends(self, query):
        with self._lock:
            events = list(self._recent_ends)
        rows = [event for event in events
                if (query.reason is None or event.reason == query.reason)
                and (query.user_id is None or event.user_id == query.user_id)
                and after_cursor(event.ended_at, event.session_key, query.after, True)]
        rows.sort(key=lambda event: (event.ended_at, event.session_key), reverse=True)
        return page_of(rows[:query.limit + 1], query.limit,
                       lambda event: Cursor(event.ended_at, event.session_key))

    @property
    def deadline_entries(self) -> int:
        """Entries in the deadline heap: at most one per session, however often touched."""
        with self._lock:
            return len(self._deadlines)

    def records(self) -> list[SessionRecord]:
        """Every record, open or ended (for tests)."""
        with self._lock:
            return [entry.record for entry in self._entries.values()]

    # -- the sweep thread ------------------------------------------------------

    def start(self, interval: float = 1.0, observe=None) -> None:
        """Run :meth:`sweep` in a daemon thread until :meth:`close`.

        It looks four times per ``interval``, so a session ends less than
        ``interval`` after its deadline.
        """
        if self._sweeper is None:
            self._sweeper = SweepThread(lambda: self.sweep(int(self.clock())), interval / 4,
                                        observe)

    # -- internals -------------------------------------------------------------

    def _end_locked(self, key, reason, now):
        entry = self._entries.get(key)
        if entry is None or not entry.record.is_open:
            return None
        entry.record = entry.record.ended(now, overdue_reason(entry.record, now) or reason)
        entry.data = None
        self._tombstones.append((now, key))
        self._by_user[entry.record.user_id].discard(key)
        if not self._by_user[entry.record.user_id]:
            del self._by_user[entry.record.user_id]
        self._recent_ends.append(SessionEnded.of(entry.record))
        return entry.record

