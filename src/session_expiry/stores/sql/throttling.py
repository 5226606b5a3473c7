"""The SQL store's password throttle: failures in a row per hashed key, in rows that a claim
locks in one order, so two app servers never both take the last free try."""
from __future__ import annotations

import sqlalchemy as sa

from ...throttle import Failures, claim, released
from .engine import Transactions
from .schema import at, seconds, session_failures


class Throttling(Transactions):
    """Password tries claimed and released (``SessionStore.claim_try``, ``release_try``)."""

    def claim_try(self, keys, now):
        with self._begin() as conn:
            answer, stored = claim(keys, self._failures(conn, keys), now)
            for name, kept in stored.items():
                conn.execute(session_failures.update().where(session_failures.c.name == name)
                             .values(count=kept.count, last=at(kept.last)))
        return answer

    def release_try(self, keys):
        with self._begin() as conn:
            failures = self._failures(conn, keys)
            for key in keys:
                kept = released(key, failures[key.name])
                which = session_failures.c.name == key.name
                conn.execute(session_failures.delete().where(which) if kept is None else
                             session_failures.update().where(which).values(count=kept.count))

    def _failures(self, conn, keys) -> dict[str, Failures | None]:
        """The keys' failures, their rows locked until the transaction ends (SQLite: the
        write transaction itself is the lock). A key without a row gets one first (count 0,
        forgotten long ago), so that two first tries at once lock the same row."""
        names = sorted({key.name for key in keys})  # one order: no deadlock between claims
        insert = self._insert(session_failures)
        conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]),
                     [{"name": name, "count": 0, "last": at(0)} for name in names])
        rows = conn.execute(sa.select(session_failures).where(session_failures.c.name.in_(names))
                            .order_by(session_failures.c.name).with_for_update())
        found = {row.name: Failures(row.count, seconds(row.last)) for row in rows}
        return {name: found.get(name) for name in names}
