"""The Redis store's sweep: every partition's overdue sessions ended by a script, batch by
batch (any number of sweepers side by side: each session ends in exactly one of them); the
notifications of events left pending by a process that died claimed and sent again (at
least once); tombstones past retention pruned."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import ResponseError

from ...events import SessionEnded
from ..sweeping import SweepResult, SweepsInThread
from .connection import unavailable
from .layout import GROUP
from .lifecycle import tombstone_of

#: An event delivered to a consumer that has not acknowledged it this long (seconds) is
#: taken to be a dead process's: a sweeper claims it and tells it again.
CLAIM_AFTER = 60
#: A consumer (a process that ended sessions) with nothing pending is forgotten after this
#: long idle (seconds); a live one comes back with its next end.
FORGET_CONSUMER_AFTER = 86400


def event_of(fields: dict) -> SessionEnded:
    """The event as the stream holds it."""
    return SessionEnded(fields["key"], fields["user"], fields["reason"], int(fields["at"]),
                        int(fields["duration"]))


class Sweeping(SweepsInThread):
    """The sweep and the stream's notifications."""

    claim_after: float = CLAIM_AFTER

    @unavailable
    def sweep(self, now, batch: int = 500, progress=None) -> SweepResult:
        """End overdue sessions, send the notifications a dead process left, prune."""
        started = time.monotonic()
        result = SweepResult()
        due = self.due_count(now) if progress else 0
        looked_at = 0
        with ThreadPoolExecutor(1, thread_name_prefix="session-expiry-sweep") as ahead:
            for stream, claimed, events in self._ended_batches(now, batch, ahead):
                result.ended.update(event.reason for _, event in events)
                result.notified += self._notify(stream, events)
                looked_at += claimed
                if progress and claimed:
                    progress(looked_at, max(due, looked_at))
        result.notified += self.notify_pending(batch)
        result.pruned = self.prune(now, batch)
        result.seconds = time.monotonic() - started
        return result

    def _ended_batches(self, now: int, batch: int, ahead: ThreadPoolExecutor):
        """Every partition's overdue sessions ended, a batch at a time: (the partition's
        stream, how many were due, the events). The next batch's script is sent (by
        ``ahead``) before a batch is handed over, so Redis ends the next batch while this
        process tells this one."""
        def end_batch(partition):
            claimed, *rows = self.redis.run("sweep", [partition.base],
                                            [now, batch, self.consumer, self._keep])
            return partition, claimed, rows

        partitions = iter(self.layout.partitions)
        running = ahead.submit(end_batch, next(partitions))
        while running is not None:
            partition, claimed, rows = running.result()
            following = partition if claimed == batch else next(partitions, None)
            running = None if following is None else ahead.submit(end_batch, following)
            yield partition.events, claimed, [(event_id, SessionEnded.of(record))
                                              for event_id, record in map(tombstone_of, rows)]

    @unavailable
    def due_count(self, now: int) -> int:
        """How many open sessions are past their deadline now."""
        pipe = self.redis.client.pipeline(transaction=False)
        for partition in self.layout.partitions:
            pipe.zcount(partition.due, "-inf", now)
        return sum(pipe.execute())

    @unavailable
    def notify_pending(self, batch: int = 500) -> int:
        """Claim the events delivered to a consumer that has not acknowledged them within
        ``claim_after`` (its process died), and tell them: at least once."""
        client, sent = self.redis.client, 0
        for partition in self.layout.partitions:
            start = "0-0"
            while True:
                try:
                    start, entries, *_ = client.xautoclaim(
                        partition.events, GROUP, self.consumer,
                        int(self.claim_after * 1000), start, count=batch)
                except ResponseError as error:
                    if "NOGROUP" in str(error):
                        break  # nothing ended in this partition yet
                    raise
                sent += self._notify(partition.events, [
                    (event_id, event_of(fields)) for event_id, fields in entries if fields])
                if start == "0-0":
                    break
        return sent

    @unavailable
    def prune(self, now: int, batch: int = 500) -> int:
        """Delete tombstones past ``retention``, in batches; forget password failures past
        ``throttle_forget_after`` and refused-request counts past retention."""
        horizon = now - self.policy.retention
        started_horizon = now - max(self.policy.retention, 86400)
        pruned = 0
        for partition in self.layout.partitions:
            while True:
                deleted = self.redis.run("prune", [partition.base], [
                    horizon, started_horizon, batch, self.policy.retention * 1000,
                    FORGET_CONSUMER_AFTER * 1000])
                pruned += deleted
                if deleted < batch:
                    break
        self.forget_failures(now)
        self.prune_refusals(horizon)
        return pruned
