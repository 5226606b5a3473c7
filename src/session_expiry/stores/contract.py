"""The lifecycle contract every store fulfils: sessions opened, read, written, touched and
ended exactly once, swept, and password tries counted for the farm. The report's reads
are a contract of their own (:class:`~session_expiry.stores.readmodel.ReportReads`)."""
from __future__ import annotations

from typing import Protocol

from ..record import SessionRecord
from ..throttle import Claim, Key
from .data import EMPTY, SessionData
from .readmodel import ReportReads
from .sweeping import SweepResult


class StoreUnavailable(Exception):
    """The store cannot be reached (its database is down): nothing can be judged."""


class SessionStore(Protocol):
    """A session's lifecycle and data: what the tween, the views, the Beaker adapter and the
    sweeper need from a store."""

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

    def close(self) -> None:
        """Stop background work and release resources."""


class Store(SessionStore, ReportReads, Protocol):
    """A store as ``session.type`` configures it: the lifecycle and the report's reads."""
