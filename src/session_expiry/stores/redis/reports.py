"""The Redis store's answers to the report: each partition's figures and list pages made by a
script on its own slot, then folded together here (the pure folding is the read model's)."""
from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import Counter, defaultdict
from functools import partial
from itertools import chain

from ...decision import END_REASONS
from ...events import SessionEnded
from ..readmodel import (
    HOUR,
    HOURS,
    LENGTH_EDGES,
    WINDOW,
    ActiveSort,
    Cursor,
    EndCount,
    after_cursor,
    hours_ago,
    page_of,
    percentile,
    sort_value,
    summarize,
)
from .connection import unavailable
from .layout import parse_ended, user_tag
from .lifecycle import record_of

#: The sorted set each sort of the active sessions walks.
_SORTED_BY = {ActiveSort.STARTED: "born", ActiveSort.LAST_SEEN: "seen",
              ActiveSort.REMAINING: "due"}


def fold_tallies(now: int, since: int, tallies: list, columns: defaultdict) -> None:
    """Add the lengths of the ends in a partition's hourly tallies (``[hour, reason, tally,
    ...]``, each tally ``<second of the hour> <duration> `` per end) that lie after
    ``since`` to ``columns[hours ago, reason]``.

    An hour's ends fall in at most two columns of the chart: those up to ``now``'s second
    of the hour ``ago`` hours ago, the later ones an hour less."""
    for hour, reason, tally in zip(tallies[::3], tallies[1::3], tallies[2::3], strict=True):
        start = int(hour) * HOUR
        numbers = list(map(int, tally.split()))
        ends = zip(numbers[::2], numbers[1::2], strict=True)  # (second, duration)
        if start <= since:  # the window opens in this hour
            ends = [(second, duration) for second, duration in ends if start + second > since]
        ago, split = divmod(now - start, HOUR)
        earlier = columns[min(HOURS - 1, max(0, ago)), reason]
        later = columns[min(HOURS - 1, max(0, ago - 1)), reason]
        for second, duration in ends:
            (earlier if second <= split else later).append(duration)


def end_counts(columns: dict) -> list[EndCount]:
    """The rows of the chart and histogram from the lengths by (hours ago, reason)."""
    bucket = partial(bisect_right, LENGTH_EDGES)  # length_bucket, in C
    return [EndCount(hours, reason, length, count)
            for (hours, reason), lengths in columns.items()
            for length, count in Counter(map(bucket, lengths)).items()]


class Reports:
    """``ReportReads``: refused requests counted, the summary, the two lists."""

    @unavailable
    def count_refusal(self, reason, now):
        self.redis.client.hincrby(self.layout.refusals, f"{now - now % HOUR}:{reason}", 1)

    @unavailable
    def summary(self, now):
        since = now - WINDOW
        active = started = 0
        earliest = None
        columns: defaultdict = defaultdict(list)  # (hours ago, reason): lengths
        for counted, begun, first, tallies, later in self.redis.run_each("summary", [
                ([partition.base], [now, since, *map(str, END_REASONS)])
                for partition in self.layout.partitions]):
            active, started = active + counted, started + begun
            if first != "":
                earliest = int(first) if earliest is None else min(earliest, int(first))
            fold_tallies(now, since, tallies, columns)
            for member, at in zip(later[::2], later[1::2], strict=True):
                _, reason, duration, _ = parse_ended(member)
                columns[hours_ago(int(at), now), reason].append(duration)
        lengths = sorted(chain.from_iterable(columns.values()))
        refusals = []
        for field, count in self.redis.client.hgetall(self.layout.refusals).items():
            hour, reason = field.split(":", 1)
            if int(hour) > since:
                refusals.append((reason, int(count)))
        return summarize(
            now, active=active, started=started,
            end_counts=end_counts(columns),
            refusals=refusals, lengths=(percentile(lengths, .5), percentile(lengths, .9)),
            sweeper_lag=now - earliest if earliest is not None and earliest <= now else 0)

    @unavailable
    def active_sessions(self, query):
        sort, descending = query.sort, query.sort.descending
        if query.user_id is not None:  # a user has few sessions: from their index
            records = [record for record in self._records_of_user(query.user_id)
                       if record.is_open and record.deadline > query.now
                       and after_cursor(sort_value(record, sort), record.key, query.after,
                                        descending)]
            records.sort(key=lambda record: (sort_value(record, sort), record.key),
                         reverse=descending)
            rows = records[:query.limit + 1]
        else:
            after = query.after
            found = [[(int(value), key) for key, value in zip(flat[::2], flat[1::2], strict=True)]
                     for flat in self.redis.run_each("active", [
                         ([partition.base], [
                             _SORTED_BY[sort], int(descending), query.now,
                             "" if after is None else after.value,
                             "" if after is None else after.key, query.limit + 1])
                         for partition in self.layout.partitions])]
            merged = heapq.merge(*found, reverse=descending)
            keys = [key for _, key in list(merged)[:query.limit + 1]]
            pipe = self.redis.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self.layout.partition(key).session(key))
            rows = [record_of(key, fields) for key, fields
                    in zip(keys, pipe.execute() if keys else [], strict=True) if fields]
        return page_of(rows, query.limit,
                       lambda record: Cursor(sort_value(record, sort), record.key))

    @unavailable
    def recent_ends(self, query):
        after = query.after
        whose = "" if query.user_id is None else user_tag(query.user_id)
        found = [[(int(at), member) for member, at in zip(flat[::2], flat[1::2], strict=True)]
                 for flat in self.redis.run_each("recent", [
                     ([partition.base], [
                         "" if after is None else after.value,
                         "" if after is None else after.key, query.reason or "",
                         query.limit + 1, whose])
                     for partition in self.layout.partitions])]
        rows = []
        for at, member in list(heapq.merge(*found, reverse=True))[:query.limit + 1]:
            key, reason, duration, user_id = parse_ended(member)
            rows.append(SessionEnded(key, user_id, reason, at, duration))
        return page_of(rows, query.limit, lambda event: Cursor(event.ended_at, event.session_key))

    @unavailable
    def prune_refusals(self, horizon: int) -> None:
        client = self.redis.client
        old = [field for field in client.hkeys(self.layout.refusals)
               if int(field.split(":", 1)[0]) <= horizon]
        if old:
            client.hdel(self.layout.refusals, *old)

    @unavailable
    def records(self) -> list:
        """Every record, open or ended: a scan of every server (for tests)."""
        found = []
        for server in self.redis.primaries():
            for name in server.scan_iter(match=self.layout.pattern, count=1000):
                fields = server.hgetall(name)
                if fields:
                    found.append(record_of(name.rsplit(":s:", 1)[1], fields))
        return found
