"""The session report at scale on Redis (``expiry:redis``): timings of every report call.

    .venv/bin/python -m benchmarks.redis_report [--sessions 1000000 --events 1000000
                                                 --active 10000 --users 10000]
    .venv/bin/python -m benchmarks.redis_report --smoke

The data of ``benchmarks.report_scale`` (the same sizes, spread over the same 30 days
before the same fixed ``now``), written into a ``redis-server`` of its own through the
store's own scripts (``benchmarks.redis_load``): ``--sessions`` sessions of which
``--active`` are open and the rest ended (each opened, touched at its last-seen time and
ended for its reason at its time, its event told: their tombstones, the ``ended`` index
and the partitions' streams are the store's own), and older end events to make
``--events`` in the streams (kept there for ``retention``; the report reads the ``ended``
index, which the tombstones' ends fill); refused requests counted per hour and reason.

Then it times each report call of ``RedisStore`` at ``now`` as ``report_scale`` does
(wall time of the call on loopback; the same operations, cursors and table; the
report's first page is ``summary`` + the first page of active sessions by last seen +
the first page of recent ends). Exit code 1 when a median misses the 100 ms target
(never with ``--smoke``).
"""
from __future__ import annotations

import signal
import sys
import time

from tests.redis_server import RedisServer

from benchmarks.figures import Figure
from benchmarks.redis_load import USER_AGENTS, Loader, chunks, data_of, key_of, policy
from benchmarks.report_scale import (
    BENCH_TABLE,
    NOW,
    SMOKE,
    SPAN,
    TARGET_MS,
    Sizes,
    Timing,
    operations,
    parse,
    print_table,
)
from benchmarks.report_scale import measure as time_operations
from session_expiry.stores.redis import RedisStore

#: The reasons of the ended sessions, one in twenty each as ``report_scale`` spreads them.
REASONS = (("idle_timeout",) * 10 + ("absolute_timeout",) * 2 + ("logged_out",) * 5
           + ("revoked",) + ("ended_by_user",) * 2)
IDLE, ABSOLUTE = 1200, 8 * 3600
REFUSED = ("ticket_mismatch", "ticket_expired", "session_lost")
#: The figures in ``make bench``'s table: ``report_scale``'s, and the list of one user's ends
#: (which the SQL store reads by an index, and this store by a scan of every end).
TABLE = (*BENCH_TABLE, "ends by user")


def ip_of(i: int) -> str:
    """Mostly IPv4 from a few /16s, one in ten IPv6 (``report_scale``'s addresses)."""
    if i % 10 == 0:
        return f"2001:db8:{i >> 16 & 65535:x}:{i & 65535:x}::{i * 7 % 65536:x}"
    return f"{('10', '172', '192', '203')[i % 4]}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def ended_session(i: int, sizes: Sizes) -> tuple[str, int, int, int]:
    """(reason, created, last seen, ended at) of ended session ``i`` (1..tombstones), as
    ``report_scale``'s ``ENDED_SESSIONS``: ended evenly over the 30 days, up to 8 h long."""
    reason = REASONS[i % 20]
    ended_at = NOW - SPAN + i * SPAN // sizes.tombstones
    duration = {"absolute_timeout": ABSOLUTE,
                "idle_timeout": IDLE + (i * 40503) % 27601}.get(reason, (i * 40503) % 28801)
    last_seen = {"idle_timeout": ended_at - IDLE,
                 "absolute_timeout": ended_at - i % IDLE}.get(reason, ended_at)
    return reason, ended_at - duration, last_seen, ended_at


def load(url: str, sizes: Sizes, say=print) -> None:
    """The sessions, their ends and the older events, through the store's scripts."""
    if not 0 < sizes.active <= sizes.sessions or sizes.users < 1:
        raise ValueError(f"impossible sizes: {sizes}")
    store = RedisStore(url, policy(IDLE, ABSOLUTE), clock=lambda: NOW)
    try:
        loader = Loader(store)
        started = time.perf_counter()
        for numbers in chunks(1, sizes.tombstones + 1):
            for i in numbers:
                key, user = key_of(i), str(1 + i % sizes.users)
                reason, created, last_seen, ended_at = ended_session(i, sizes)
                loader.open(key, user, created, ip_of(i), USER_AGENTS[i * 31 % len(USER_AGENTS)])
                loader.touch(key, last_seen)
                loader.end(key, reason, ended_at)
            rows = loader.execute()[2::3]
            if any(row is None for row in rows):
                raise SystemExit("a session did not end: is the server empty?")
            loader.told(rows)
        say(f"  loaded {sizes.tombstones:>9,} ended sessions in "
            f"{time.perf_counter() - started:5.1f} s")
        started = time.perf_counter()
        for numbers in chunks(sizes.tombstones + 1, sizes.sessions + 1):
            for i in numbers:
                key, user = key_of(i), str(1 + i % sizes.users)
                created = NOW - 27000 + (i - sizes.tombstones) * 27000 // sizes.active
                loader.open(key, user, created, ip_of(i), USER_AGENTS[i * 31 % len(USER_AGENTS)])
                loader.touch(key, max(created, NOW - (i * 31) % 1100))
                loader.save(key, data_of(i))
            loader.execute()
        extra = max(0, sizes.events - sizes.tombstones)
        pipe = store.redis.client.pipeline(transaction=False)
        for j in range(1, extra + 1):  # older sessions' events, their tombstones pruned
            key = key_of(sizes.sessions + j)
            pipe.xadd(store.layout.partition(key).events, {
                "key": key, "user": str(1 + j * 7 % sizes.users), "reason": REASONS[j * 3 % 20],
                "at": NOW - SPAN - 17 + j * SPAN // extra, "duration": j * 7919 % 28801})
            if j % 5000 == 0:
                pipe.execute()
        pipe.execute()
        # Refused requests, counted per hour and reason over the same 30 days, as the store's
        # count_refusal keeps them.
        store.redis.client.hset(store.layout.refusals, mapping={
            f"{NOW - NOW % 3600 - h * 3600}:{reason}": 1 + (h * 37 + len(reason)) % 50
            for h in range(SPAN // 3600) for reason in REFUSED})
        say(f"  loaded {sizes.active:>9,} open sessions and {extra:,} older events in "
            f"{time.perf_counter() - started:5.1f} s")
    finally:
        store.close()


def run(url: str, sizes: Sizes, repeat: int, smoke: bool,
        timings_out: list[Timing] | None = None) -> int:
    """Load, time and print; the exit code. ``timings_out`` receives the timings."""
    started = time.perf_counter()
    print(f"loading {sizes} ...")
    load(url, sizes)
    store = RedisStore(url, policy(IDLE, ABSOLUTE), clock=lambda: NOW)
    try:
        client = store.redis.client
        memory = int(client.info("memory")["used_memory"]) / 2**20
        events = sum(client.xlen(partition.events) for partition in store.layout.partitions)
        print(f"data ready in {time.perf_counter() - started:.1f} s; now = {NOW}; "
              f"{client.dbsize():,} keys, {events:,} events in the streams, "
              f"Redis used_memory {memory:,.0f} MB")
        if events != max(sizes.events, sizes.tombstones):
            raise SystemExit(f"the streams hold {events} events, not {sizes.events}")
        ops = operations(store, sizes)
        timings = time_operations(ops, repeat)
    finally:
        store.close()
    if timings_out is not None:
        timings_out.extend(timings)
    print(f"\ntimings ({repeat} rounds, wall time of the store call):")
    missed = print_table(timings)
    if smoke:
        print("\nsmoke run: sizes too small for timings to mean anything; not checked")
        return 0
    if missed:
        print(f"\nFAIL: median over {TARGET_MS:.0f} ms: {', '.join(missed)}")
        return 1
    print(f"\nOK: every median under {TARGET_MS:.0f} ms")
    return 0


def figures(smoke: bool = False) -> list[Figure]:
    """The Redis report's figures for ``make bench``'s one table (``benchmarks.__main__``).
    Missed targets show in the table (and ``make bench``'s exit code), as the others'."""
    sizes, repeat = (SMOKE, 3) if smoke else (Sizes(), 20)
    timings: list[Timing] = []
    server = RedisServer().start()
    try:
        run(server.url, sizes, repeat, smoke, timings)
    finally:
        server.stop()
    scale = f"{sizes.sessions:,} sessions ({sizes.active:,} open), {sizes.events:,} events"
    return [Figure("Report, Redis", timing.name, timing.median, "ms",
                   f"median, p95 {timing.p95:.0f} ms; {scale}",
                   None if smoke else timing.median < TARGET_MS)
            for timing in timings if timing.name in TABLE]


def main(argv: list[str] | None = None) -> int:
    args, sizes, repeat = parse(argv, "python -m benchmarks.redis_report", __doc__,
                                "an empty Redis")
    if args.url:
        return run(args.url, sizes, repeat, args.smoke)
    server = RedisServer().start()
    try:
        return run(server.url, sizes, repeat, args.smoke)
    finally:
        server.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
