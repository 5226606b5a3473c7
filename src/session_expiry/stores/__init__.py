"""Session stores: one protocol, one record, several backends.

A store keeps, per session, the lifecycle record and the session data in one
entry, keyed by a hash of the session id (never the raw id). Ending is one
operation, conditional on the session being open, so each session ends
exactly once and the store reports it exactly once through ``on_end``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Protocol

from ..events import SessionEnded
from ..reports.figures import ActiveQuery, EndsQuery, Page, Summary
from ..throttle import Claim, Key

log = logging.getLogger(__name__)

#: How often a conditional data write is tried before giving up on a busy session.
MAX_WRITE_ATTEMPTS = 5


def session_key(session_id: str) -> str:
    """The key a session is stored under: SHA-256 of its id, in hex."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session's lifecycle. Times are whole seconds since the epoch, UTC."""

    key: str
    user_id: str
    created: int
    last_seen: int
    idle_deadline: int
    absolute_deadline: int
    ended_at: int | None = None
    end_reason: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    @property
    def deadline(self) -> int:
        """When the session ends unless touched: the earlier of its two deadlines."""
        return min(self.idle_deadline, self.absolute_deadline)

    def remaining(self, now: float) -> float:
        """Seconds until the session ends unless touched (an int for a whole-second ``now``)."""
        return max(0, self.deadline - now)

    def touched(self, now: int, idle_timeout: int) -> SessionRecord:
        """Touched at ``now``; a request that started earlier never moves it back."""
        return replace(self, last_seen=max(self.last_seen, now),
                       idle_deadline=max(self.idle_deadline, now + idle_timeout))

    def ended(self, now: int, reason: str) -> SessionRecord:
        return replace(self, ended_at=now, end_reason=str(reason))


class StoreUnavailable(Exception):
    """The store cannot be reached (its database is down): nothing can be judged."""


def encode(values: dict) -> str:
    """Session data as the stores keep it: compact JSON text."""
    return json.dumps(values, separators=(",", ":"))


#: Values a request cannot change in place: a copy of a dict of them is as good as a decode.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})
#: Data texts up to this length keep their decoding (below): most sessions' data.
_KEPT_TEXT = 1024


@lru_cache(maxsize=4096)
def _flat_values(text: str) -> dict | None:
    """``text`` decoded, if none of its values can be changed in place; else None.

    Decoded once per distinct text, not per request: a session whose data did not
    change since the last request costs a lookup and a copy. Never handed out itself.
    """
    values = json.loads(text)
    return values if all(type(value) in _IMMUTABLE for value in values.values()) else None


@dataclass(frozen=True, slots=True)
class SessionData:
    """A session's data as loaded: its JSON text and the version it was read at.

    Kept as text, decoded afresh by :meth:`values`: the objects a request gets
    are its own, so changing one in place (a list in the session, then
    ``session.changed()``) cannot change the base its changes are measured from.
    """

    text: str
    version: int = 0

    @classmethod
    def of(cls, values: dict, version: int = 0) -> SessionData:
        return cls(encode(values), version)

    def values(self) -> dict:
        """The values, decoded from the text: objects nobody else holds."""
        if len(self.text) <= _KEPT_TEXT:
            flat = _flat_values(self.text)
            if flat is not None:
                return dict(flat)
        return json.loads(self.text)


EMPTY = SessionData("{}", 0)

OnEnd = Callable[[SessionEnded], None]

_MISSING = object()


def merge(base: dict, ours: dict, theirs: dict, key: str = "") -> dict:
    """Apply the keys this request changed (``base`` -> ``ours``) onto ``theirs``.

    ``theirs`` is what another request wrote meanwhile. A key changed on one
    side only keeps that change; a key changed on both sides takes ours (the
    last writer wins), and that is logged.
    """
    merged = dict(theirs)
    for name in base.keys() | ours.keys():
        before, after = base.get(name, _MISSING), ours.get(name, _MISSING)
        if before == after:
            continue  # this request did not change it
        if theirs.get(name, _MISSING) not in (before, after):
            log.warning("session %s: key %r was changed by two requests at once; "
                        "the last write wins", key[:12], name)
        if after is _MISSING:
            merged.pop(name, None)
        else:
            merged[name] = after
    return merged


@dataclass
class SweepResult:
    """What one ``sweep`` did."""

    ended: Counter = field(default_factory=Counter)  # by reason
    notified: int = 0
    pruned: int = 0
    seconds: float = 0.0

    @property
    def total_ended(self) -> int:
        return sum(self.ended.values())

    def add(self, other: SweepResult) -> None:
        self.ended.update(other.ended)
        self.notified += other.notified
        self.pruned += other.pruned

    def summary(self) -> str:
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.ended.items()))
        return (f"ended={self.total_ended}" + (f" ({reasons})" if reasons else "")
                + f" notified={self.notified} pruned={self.pruned} in {self.seconds:.2f}s")


def report(on_end: OnEnd, event: SessionEnded) -> None:
    """Hand ``event`` to the subscribers; one that raises is logged, never fatal."""
    try:
        on_end(event)
    except Exception:
        log.exception("reporting the end of session %s failed", event.session_key[:12])


class SweepThread:
    """A daemon thread that calls ``sweep`` every ``every`` seconds until :meth:`stop`,
    handing each ``SweepResult`` to ``observe`` (the metrics)."""

    def __init__(self, sweep: Callable[[], SweepResult], every: float,
                 observe: Callable[[SweepResult], object] | None = None):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sweep, every, observe),
                                        name="session-expiry-sweep", daemon=True)
        self._thread.start()

    def _run(self, sweep, every, observe):
        while not self._stop.wait(every):
            try:
                result = sweep()
                if observe is not None:
                    observe(result)
            except Exception:  # keep sweeping; one bad run must not stop it
                log.exception("session sweep failed")

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)


class SessionStore(Protocol):
    """What the tween, the views and the Beaker adapter need from a store."""

    def open(self, key: str, user_id: str, now: int, ip: str | None = None,
             user_agent: str | None = None) -> SessionRecord:
        """Create an open session entry with empty data."""

    def get(self, key: str) -> SessionRecord | None:
        """The record (open or tombstone), or None if the store does not know it."""

    def load_data(self, key: str) -> SessionData | None:
        """The data of an open session; None for tombstones and unknown keys."""

    def save_data(self, key: str, values: dict, base: SessionData | None = EMPTY) -> bool:
        """Write the changes from ``base`` to ``values`` into an open session.

        Conditional on the session being open (never resurrects an ended one)
        and on the version ``base`` was read at: when another request wrote
        meanwhile, the changes are merged by key (:func:`merge`). Writes
        nothing when nothing changed. ``base=None`` replaces the data whatever
        it is. False if the session is not open.
        """

    def touch(self, key: str, now: int, interval: int = 0) -> SessionRecord | None:
        """Move the idle deadline of an open session, unless it was touched less than
        ``interval`` seconds before ``now`` (by a request that ran alongside): then
        nothing is written. The record as it is after; None if it is not open."""

    def end(self, key: str, reason: str, now: int) -> SessionRecord | None:
        """End an open session: purge its data, keep a tombstone, report it once.

        A session already past its deadline ends for that timeout, whatever
        ``reason`` says: it was over before anyone asked (an administrator's
        revoke of a session idle for an hour is not why it ended).

        Returns the tombstone if this call ended the session, None otherwise.
        """

    def end_user_sessions(self, user_id: str, reason: str, now: int,
                          keep: str | None = None) -> list[SessionRecord]:
        """End every open session of ``user_id`` (but ``keep``), each exactly once, as
        :meth:`end` does; return the tombstones of those this call ended."""

    def user_sessions(self, user_id: str, now: int) -> list[SessionRecord]:
        """The live sessions of ``user_id`` at ``now`` (open, before their deadline), most
        recently seen first."""

    def sweep(self, now: int) -> SweepResult:
        """End every overdue open session; prune tombstones past retention (and password
        failures past ``throttle_forget_after``)."""

    # -- password throttling (``session_expiry.throttle``) --------------------------

    def claim_try(self, keys: tuple[Key, ...], now: int) -> Claim:
        """Claim one password try under every key at once, atomically across the farm
        (:func:`~session_expiry.throttle.claim` decides): counted on each key, or, when a
        key must wait, nothing counted and the wait returned."""

    def release_try(self, keys: tuple[Key, ...]) -> None:
        """The password was right: take back what the claim counted
        (:func:`~session_expiry.throttle.released`)."""

    # -- the report (``session_expiry.reports``) --------------------------------

    def count_refusal(self, reason: str, now: int) -> None:
        """Count one request refused for ``reason`` (the store may buffer the count)."""

    def summary(self, now: int) -> Summary:
        """The report's figures for the last 24 hours."""

    def active_sessions(self, query: ActiveQuery) -> Page:
        """A page of open sessions before their deadline (rows: ``SessionRecord``)."""

    def recent_ends(self, query: EndsQuery) -> Page:
        """A page of ended sessions, newest first (rows: ``SessionEnded``)."""

    def close(self) -> None:
        """Stop background work and release resources."""
