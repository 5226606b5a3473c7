"""The memory store: one process, for development and tests.

Like a classic in-process session store it notices the end of a session by
itself: a sweep thread ends overdue sessions within a second of their
deadline and reports each end once. Data is kept as JSON text, so no two
requests share mutable objects and nothing unserialisable slips in.
"""
from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from ..decision import overdue_reason
from ..events import SessionEnded
from ..settings import Policy
from . import EMPTY, OnEnd, SessionData, SessionRecord, SweepResult, SweepThread, merge, report

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    record: SessionRecord
    data: str | None  # JSON text while open; None once ended
    version: int = 0


class MemoryStore:
    """A thread-safe in-memory ``SessionStore``."""

    def __init__(self, policy: Policy, clock, on_end: OnEnd = lambda event: None):
        self.policy = policy
        self.clock = clock
        self.on_end = on_end
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._deadlines: list[tuple[int, str]] = []  # heap; stale items are skipped
        self._tombstones: deque[tuple[int, str]] = deque()  # in the order they ended
        self._sweeper: SweepThread | None = None

    # -- the protocol ---------------------------------------------------------

    def open(self, key, user_id, now, ip=None, user_agent=None):
        record = SessionRecord(
            key=key, user_id=str(user_id), created=now, last_seen=now,
            idle_deadline=now + self.policy.idle_timeout,
            absolute_deadline=now + self.policy.absolute_timeout,
            ip=ip, user_agent=user_agent,
        )
        with self._lock:
            if key in self._entries:
                raise ValueError(f"session {key[:12]} exists already")
            self._entries[key] = _Entry(record, "{}")
            heapq.heappush(self._deadlines, (record.deadline, key))
        return record

    def get(self, key):
        entry = self._entries.get(key)
        return entry.record if entry else None

    def load_data(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.data is None:
                return None
            return SessionData(json.loads(entry.data), entry.version)

    def save_data(self, key, values, base=EMPTY):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.record.is_open:
                return False
            if base is None:  # replace, whatever is there
                base = SessionData(json.loads(entry.data), entry.version)
            elif values == base.values:
                return True
            elif entry.version != base.version:
                values = merge(base.values, values, json.loads(entry.data), key)
            entry.data = json.dumps(values, separators=(",", ":"))
            entry.version += 1
            return True

    def touch(self, key, now):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.record.is_open:
                return None
            entry.record = entry.record.touched(now, self.policy.idle_timeout)
            heapq.heappush(self._deadlines, (entry.record.deadline, key))
            return entry.record

    def end(self, key, reason, now):
        with self._lock:
            record = self._end_locked(key, reason, now)
        if record is not None:
            report(self.on_end, SessionEnded.of(record))
        return record

    def sweep(self, now):
        started = time.monotonic()
        ended, pruned = [], 0
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, key = heapq.heappop(self._deadlines)
                entry = self._entries.get(key)
                reason = entry and entry.record.is_open and overdue_reason(entry.record, now)
                if reason:
                    ended.append(SessionEnded.of(self._end_locked(key, reason, now)))
            horizon = now - self.policy.retention
            while self._tombstones and self._tombstones[0][0] <= horizon:
                _, key = self._tombstones.popleft()
                pruned += self._entries.pop(key, None) is not None
        for event in ended:
            report(self.on_end, event)
        return SweepResult(ended=Counter(event.reason for event in ended), notified=len(ended),
                           pruned=pruned, seconds=time.monotonic() - started)

    def close(self):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    # -- reports for tests and pages -------------------------------------------

    def records(self) -> list[SessionRecord]:
        with self._lock:
            return [entry.record for entry in self._entries.values()]

    # -- the sweep thread ------------------------------------------------------

    def start(self, interval: float = 1.0) -> None:
        """Run :meth:`sweep` in a daemon thread until :meth:`close`.

        It looks four times per ``interval``, so a session ends less than
        ``interval`` after its deadline.
        """
        if self._sweeper is None:
            self._sweeper = SweepThread(lambda: self.sweep(int(self.clock())), interval / 4)

    # -- internals -------------------------------------------------------------

    def _end_locked(self, key, reason, now):
        entry = self._entries.get(key)
        if entry is None or not entry.record.is_open:
            return None
        entry.record = entry.record.ended(now, reason)
        entry.data = None
        self._tombstones.append((now, key))
        return entry.record

