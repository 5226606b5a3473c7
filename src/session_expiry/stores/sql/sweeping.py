"""The SQL store's sweep: overdue sessions ended in batches (``SKIP LOCKED`` on PostgreSQL,
so any number of sweepers work side by side), their notifications sent from the outbox
(at least once), and events past retention pruned."""
from __future__ import annotations

import queue
import threading
import time
from contextlib import closing

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from ...events import SessionEnded
from ..sweeping import SweepResult, SweepsInThread, report
from .engine import Transactions
from .lifecycle import ending, log_ended
from .schema import (
    DEADLINE,
    ENDED_EVENT,
    UTCDateTime,
    at,
    seconds,
    session_events,
    session_failures,
    session_outbox,
    sessions,
)


def epoch(moment):
    """A time column as whole seconds, computed by PostgreSQL (no datetime per row)."""
    return sa.cast(sa.extract("epoch", moment), sa.BigInteger)


def take_claimed(claim):
    """PostgreSQL: delete the outbox entries ``claim`` selects, skipping those another
    notifier holds, returning their ids.

    ``= ANY(ARRAY(claim))``, not ``IN (claim)``: the claim runs once, and the DELETE
    looks its rows up by primary key. Given ``IN``, the planner joined the two; the
    outbox, a queue whose deleted rows stay until a vacuum, looks empty to it, so it
    picked a nested loop that ran the claim once per row in the table (270 to 480 ms a
    batch after 700,000 ends; 2 ms otherwise).
    """
    return (session_outbox.delete()
            .where(session_outbox.c.event_id == sa.any_(sa.func.array(
                claim.with_for_update(skip_locked=True).scalar_subquery())))
            .returning(session_outbox.c.event_id))


def sweep_batch_statement():
    """PostgreSQL: a sweeper's batch in one statement (parameters ``now``, ``batch`` and
    ``after``).

    Claims up to ``batch`` overdue sessions from ``sweep_at`` ``after`` on (``SKIP
    LOCKED``), reading whether each is past its deadline (the row is locked: it cannot
    move), ends those, writes their events and outbox entries, and refreshes the
    ``sweep_at`` of the others; returns one row per event written (id, then
    ``SessionEnded``'s fields), each with the count claimed and the last ``sweep_at``
    reached.
    """
    now = sa.bindparam("now", type_=UTCDateTime())
    overdue = now >= DEADLINE
    due = (sa.select(sessions.c.key, sessions.c.sweep_at, overdue.label("overdue"))
           .where(sessions.c.sweep_at <= now,
                  sessions.c.sweep_at >= sa.bindparam("after", type_=UTCDateTime()))
           .order_by(sessions.c.sweep_at).limit(sa.bindparam("batch", type_=sa.Integer))
           .with_for_update(skip_locked=True)).cte("due")
    ended = ending(sa.and_(sessions.c.key.in_(sa.select(due.c.key).where(due.c.overdue)),
                            overdue), None, now).cte("ended")
    logged, queued = log_ended(ended)
    refreshed = (sessions.update()
                 .where(sessions.c.key.in_(sa.select(due.c.key).where(~due.c.overdue)),
                        ~overdue)
                 .values(sweep_at=DEADLINE).cte("refreshed"))
    claimed = sa.select(sa.func.count().label("claimed"),
                        sa.func.max(due.c.sweep_at).label("reached")).select_from(due).subquery()
    return (sa.select(claimed.c.claimed, claimed.c.reached, logged.c.id, logged.c.session_key,
                      logged.c.user_id, logged.c.reason, epoch(logged.c.at), logged.c.duration)
            .select_from(claimed.outerjoin(logged, sa.true()))
            .add_cte(queued, refreshed))


#: Built once: building and keying a statement of this size costs milliseconds a batch.
SWEEP_BATCH = sweep_batch_statement()
#: The outbox entries of the events a sweep just wrote (parameter ``ids``), PostgreSQL.
SWEPT = sa.select(session_outbox.c.event_id).where(
    session_outbox.c.event_id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.BigInteger))))
TAKE_SWEPT = take_claimed(SWEPT)


class Sweeping(Transactions, SweepsInThread):
    """The sweep and the outbox's notifications."""

    def sweep(self, now, batch: int = 500, progress=None) -> SweepResult:
        """End overdue sessions, send pending notifications, prune past retention.

        Works in batches of ``batch`` rows, each in its own transaction, so
        memory stays flat and other sweepers can work beside it. ``progress``
        is called after each batch with (sessions looked at, sessions due).
        """
        started = time.monotonic()
        result = SweepResult()
        due = self.due_count(now) if progress else 0
        looked_at = 0
        with closing(self._ended_batches(now, batch)) as batches:
            for claimed, ended in batches:
                # Told batch by batch: subscribers hear of each end within a batch's time.
                result.ended.update(event.reason for event in ended.values())
                if ended:
                    result.notified += self._notify_swept(ended)
                looked_at += claimed
                if progress:
                    progress(looked_at, max(due, looked_at))
        result.notified += self.notify_pending(batch)  # what a crash left behind
        result.pruned = self.prune(now, batch)
        result.seconds = time.monotonic() - started
        return result

    def due_count(self, now: int) -> int:
        """How many open sessions the sweeper has to look at now."""
        with self._begin() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sessions)
                                .where(sessions.c.sweep_at <= at(now))).scalar_one()

    def notify_pending(self, batch: int = 500, only: list[str] | None = None) -> int:
        """Send the notifications of ended sessions not sent yet (the outbox).

        At least once: an event leaves the outbox only after its subscribers
        ran, so a process that dies in between leaves it for the next sweep. A
        subscriber that raises is logged, not retried. ``only``: just these
        sessions' (keys), right after ending them.
        """
        waiting = session_outbox.c.event_id
        if only is None:  # the oldest pending events
            return self._notify(sa.select(waiting).order_by(waiting).limit(batch), batch)
        # By the unique (session_key, kind) index, one event per key, then the
        # outbox's primary key: never a walk of either table.
        events = session_events.c
        return self._notify(sa.select(waiting).where(waiting.in_(
            sa.select(events.id).where(self._among(events.session_key, only), ENDED_EVENT))))

    def _notify(self, claim, batch: int | None = None, known=None, take=None,
                params=None) -> int:
        """Send the events of the outbox entries ``claim`` selects, then delete the
        entries; ``batch``: again until fewer than ``batch`` were sent. ``known``: the
        events (id -> ``SessionEnded``) as the sweep just wrote them, not read again.
        ``take``: ``take_claimed(claim)`` built once; ``params``: the statements' parameters."""
        sent = 0
        with self._notifying:  # one notifier per process: no double sends from threads
            while True:
                if self._row_locks:
                    # PostgreSQL: one statement claims a batch (other sweepers skip the
                    # entries it locked) and deletes it; the delete is committed only
                    # after the subscribers ran: a crash while sending rolls it back.
                    taken = take if take is not None else take_claimed(claim)
                    with self._begin() as conn:
                        if known is None:
                            taken = taken.cte("taken")
                            events = list(self._events(conn, session_events.c.id.in_(
                                sa.select(taken.c.event_id))).values())
                        else:
                            events = [known[event_id] for event_id
                                      in sorted(conn.execute(taken, params).scalars())]
                        self._send(events)
                else:
                    # SQLite locks the whole file: send outside the transaction, so a
                    # subscriber may use the database.
                    with self._begin(readonly=True) as conn:
                        ids = sorted(conn.execute(claim, params).scalars())
                        found = known if known is not None or not ids else self._events(
                            conn, session_events.c.id.in_(ids))
                    events = [found[event_id] for event_id in ids]
                    self._send(events)
                    if ids:
                        with self._begin() as conn:
                            conn.execute(session_outbox.delete()
                                         .where(session_outbox.c.event_id.in_(ids)))
                sent += len(events)
                if batch is None or len(events) < batch:
                    return sent

    @staticmethod
    def _events(conn, which) -> dict[int, SessionEnded]:
        """{event id: ``SessionEnded``} of the events ``which`` selects, oldest first."""
        events = session_events.c
        rows = conn.execute(sa.select(events.id, events.session_key, events.user_id,
                                      events.reason, events.at, events.duration)
                            .where(which).order_by(events.id))
        return {row.id: SessionEnded(row.session_key, row.user_id, row.reason,
                                     seconds(row.at), row.duration) for row in rows}

    def _send(self, events) -> None:
        for event in events:
            report(self.on_end, event)

    def prune(self, now: int, batch: int = 500) -> int:
        """Delete the events (tombstones) older than ``retention`` once they were sent, in
        batches; and password failures past ``throttle_forget_after``."""
        events = session_events.c
        old = sa.and_(events.at <= at(now - self.policy.retention),
                      ~sa.exists().where(session_outbox.c.event_id == events.id))  # sent
        with self._begin() as conn:  # a few small rows: forgotten in one statement
            conn.execute(session_failures.delete().where(
                session_failures.c.last <= at(now - self.policy.throttle_forget_after)))
        pruned = 0
        while True:
            with self._begin() as conn:
                doomed = sa.select(events.id).where(old).limit(batch).scalar_subquery()
                deleted = conn.execute(session_events.delete().where(events.id.in_(doomed)))
            pruned += deleted.rowcount
            if deleted.rowcount < batch:
                return pruned

    def _ended_batches(self, now, batch):
        """(claimed, ended) of each batch of a sweep, each batch committed before it is
        yielded, until a batch claims fewer than ``batch`` sessions.

        PostgreSQL: a thread of its own ends the next batch while the caller sends the
        notifications of this one (the client's work and the server's overlap). It
        commits each batch on its own, waiting for no subscriber, so a subscriber that
        ends a session of the next batch waits at most for that commit. It is at most two
        batches ahead (one waiting, one being ended: flat memory), and stops once the
        caller stops (a subscriber raised, the process is going down): what it ended and
        nobody sent stays in the outbox for the next sweep, as if the process had died.
        """
        # Where the last batch's claim reached in the ``sweep_at`` index: the next one starts
        # there (ties included), not at the front, where the sessions this sweep ended leave
        # entries a claim would step over until a vacuum (after 300,000 ends: 9,500 buffers
        # and 4.5 ms a batch before its first row). What lies behind is ended, or was skipped
        # because another sweeper holds it; a session refreshed moves past ``now``.
        after = at(0)

        def one():
            nonlocal after
            with self._begin() as conn:
                claimed, reached, ended = self._sweep_batch(conn, now, batch, after)
            after = reached or after
            return claimed, ended

        if self._sqlite:  # one writer for the whole file: one batch at a time
            while True:
                claimed, ended = one()
                yield claimed, ended
                if claimed < batch:
                    return
        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def hand_over(item) -> None:  # unless the caller stopped taking them
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce():
            try:
                while not stop.is_set():
                    claimed, ended = one()
                    hand_over((claimed, ended, None))
                    if claimed < batch:
                        return
            except BaseException as error:  # raised in the caller
                hand_over((0, {}, error))

        producer = threading.Thread(target=produce, name="session-expiry-sweep-ender",
                                    daemon=True)
        producer.start()
        try:
            while True:
                claimed, ended, error = ready.get()
                if error is not None:
                    raise error
                yield claimed, ended
                if claimed < batch:
                    return
        finally:
            stop.set()
            producer.join()

    def _notify_swept(self, ended: dict) -> int:
        """Send the events a sweep just wrote (id -> ``SessionEnded``) and take them out
        of the outbox, unless another notifier already took them."""
        if self._sqlite:
            return self._notify(sa.select(session_outbox.c.event_id)
                                .where(session_outbox.c.event_id.in_(list(ended))),
                                known=ended)
        return self._notify(SWEPT, known=ended, take=TAKE_SWEPT, params={"ids": list(ended)})

    def _sweep_batch(self, conn, now, batch, after):
        """Claim up to ``batch`` overdue sessions from ``sweep_at`` ``after`` on, end those
        past their deadline and look again at the deadline of the rest (touched since their
        ``sweep_at`` was set).

        Returns (how many were claimed, the last ``sweep_at`` claimed or None,
        {event id: ``SessionEnded``} of each session ended).
        """
        if self._sqlite:  # no row locks, no DELETE inside WITH: a statement a step
            overdue = at(now) >= DEADLINE
            due = conn.execute(sa.select(sessions.c.key, sessions.c.sweep_at)
                               .where(sessions.c.sweep_at <= at(now),
                                      sessions.c.sweep_at >= after)
                               .order_by(sessions.c.sweep_at).limit(batch)).all()
            keys = [key for key, _ in due]
            claimed = sessions.c.key.in_(keys)
            ended = self._end_rows(conn, sa.and_(claimed, overdue), None, now)
            conn.execute(sessions.update().where(claimed).values(sweep_at=DEADLINE))
            events = (self._events(conn, sa.and_(
                self._among(session_events.c.session_key, [row.key for row in ended]),
                ENDED_EVENT)) if ended else {})
            return len(keys), due[-1].sweep_at if due else None, events
        # PostgreSQL: the whole batch is one statement, the events written on the server.
        rows = conn.execute(SWEEP_BATCH, {"now": at(now), "batch": batch, "after": after}).all()
        return rows[0][0], rows[0][1], {row[2]: SessionEnded(*row[3:]) for row in rows
                                        if row[2] is not None}

    def _among(self, column, values):
        """``column IN values``; on PostgreSQL one array parameter (``= ANY``), so the
        statement's text is the same for any number of values."""
        if self._sqlite:
            return column.in_(values)
        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))
