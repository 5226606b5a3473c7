"""The session report at scale, on PostgreSQL: timings and plans.

    .venv/bin/python -m benchmarks.report_scale [--sessions 1000000 --events 1000000
                                                 --active 10000 --users 10000]
    .venv/bin/python -m benchmarks.report_scale --smoke

Starts its own PostgreSQL (``tests.postgres.PostgresServer``; ``--url`` uses an
empty database instead), migrates it to head and bulk-loads the data on the
server (``INSERT ... SELECT generate_series``): ``--sessions`` sessions of
which ``--active`` are open (``sessions`` rows) and the rest ended over 30 days
(their tombstones are their ``ended`` events), ``--events`` end events spread over
the same 30 days (older ones beside those), ``--users`` users.

Then, at a fixed ``now`` (the end of the data), it times each report call of
``SqlStore`` (wall time of the call, on loopback: server time plus a round trip
or two), prints median and p95 against the 100 ms target, and EXPLAINs every
statement those calls issue. Exit code 1 when a plan scans ``sessions`` or
``session_events`` sequentially (once it holds 100,000 rows or more), or a median
misses the target. ``--smoke``
runs tiny sizes in a few seconds and fails only when something does not run:
at a few thousand rows sequential scans are the planner's right choice.
"""
from __future__ import annotations

import argparse
import math
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from tests.conftest import migrate
from tests.postgres import PostgresServer

from benchmarks.figures import Figure
from session_expiry.settings import Policy
from session_expiry.stores.readmodel import ActiveQuery, ActiveSort, EndsQuery
from session_expiry.stores.sql import SqlStore, engine_for

#: The fixed "now" of every measurement: the end of the data.
NOW = 1_800_000_000
DAY = 86400
#: The data's time span.
SPAN = 30 * DAY
TARGET_MS = 100.0
#: The tables a plan must never read sequentially once they hold ``BIG_ROWS`` rows or more
#: (``sessions`` holds the open ones only: 10,000 of the default million).
BIG_TABLES = ("sessions", "session_events")
BIG_ROWS = 100_000

REASONS_SQL = ("ARRAY['idle_timeout','idle_timeout','idle_timeout','idle_timeout',"
               "'idle_timeout','idle_timeout','idle_timeout','idle_timeout','idle_timeout',"
               "'idle_timeout','absolute_timeout','absolute_timeout','logged_out',"
               "'logged_out','logged_out','logged_out','logged_out','revoked',"
               "'ended_by_user','ended_by_user']")
USER_AGENTS_SQL = (
    "ARRAY["
    "'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36',"
    "'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15',"
    "'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0',"
    "'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',"
    "'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.71 Mobile Safari/537.36',"
    "'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68']")
#: An address per row: mostly IPv4 from a few /16s, one in ten IPv6.
IP_SQL = ("CASE WHEN i % 10 = 0 THEN '2001:db8:' || to_hex((i >> 16) & 65535) || ':' "
          "|| to_hex(i & 65535) || '::' || to_hex((i * 7) % 65536) "
          "ELSE (ARRAY['10','172','192','203'])[1 + i % 4] || '.' || ((i >> 16) & 255) || '.' "
          "|| ((i >> 8) & 255) || '.' || (i & 255) END")

# Ended sessions, i = 1..:tombstones, ended evenly over SPAN in insertion order (as a live
# table fills), lasting up to 8 h: their records, as their ``ended`` events keep them.
ENDED_SESSIONS = f"""
SELECT key AS session_key, user_id, reason, ended_at AS at, duration, created, last_seen,
       last_seen + interval '20 minutes' AS idle_deadline,
       created + interval '8 hours' AS absolute_deadline, ip, user_agent
FROM (
  SELECT key, user_id, reason, ip, user_agent, ended_at, duration,
         ended_at - make_interval(secs => duration) AS created,
         CASE reason WHEN 'idle_timeout' THEN ended_at - interval '20 minutes'
                     WHEN 'absolute_timeout' THEN ended_at - make_interval(secs => i % 1200)
                     ELSE ended_at END AS last_seen
  FROM (
    SELECT i, key, user_id, reason, ip, user_agent, ended_at,
           CASE reason WHEN 'absolute_timeout' THEN 28800
                       WHEN 'idle_timeout' THEN 1200 + (i * 40503) % 27601
                       ELSE (i * 40503) % 28801 END AS duration
    FROM (
      SELECT i, md5(i::text) || md5((i + 1)::text) AS key,
             (1 + i % :users)::text AS user_id,
             ({REASONS_SQL})[1 + i % 20] AS reason,
             {IP_SQL} AS ip,
             ({USER_AGENTS_SQL})[1 + (i * 31) % 6] AS user_agent,
             to_timestamp(:now - :span + (i * CAST(:span AS bigint)) / :tombstones) AS ended_at
      FROM generate_series(CAST(1 AS bigint), :tombstones) AS i
    ) AS base
  ) AS timed
) AS row
"""  # noqa: S608 (fixed fragments, no input)

# Open sessions, i = :tombstones+1..:sessions: started in the last 7.5 h, seen in the
# last 18 minutes, so both deadlines lie ahead; sweep_at is the deadline.
OPEN_SESSIONS = f"""
INSERT INTO sessions (key, user_id, data, version, created, last_seen, idle_deadline,
                      absolute_deadline, sweep_at, ip, user_agent)
SELECT key, user_id, data, version, created, last_seen, last_seen + interval '20 minutes',
       created + interval '8 hours',
       least(last_seen + interval '20 minutes', created + interval '8 hours'),
       ip, user_agent
FROM (
  SELECT key, user_id, data, version, ip, user_agent, created,
         greatest(created, to_timestamp(:now - (i * 31) % 1100)) AS last_seen
  FROM (
    SELECT i, md5(i::text) || md5((i + 1)::text) AS key,
           (1 + i % :users)::text AS user_id,
           json_build_object('cart', json_build_array(i % 97, i % 13),
                             'theme', 'dark', 'draft', repeat('x', CAST(i % 200 AS int))) AS data,
           i % 7 AS version, {IP_SQL} AS ip,
           ({USER_AGENTS_SQL})[1 + (i * 31) % 6] AS user_agent,
           to_timestamp(:now - 27000 + CAST(i - :tombstones AS bigint) * 27000 / :active)
             AS created
    FROM generate_series(CAST(:tombstones AS bigint) + 1, :sessions) AS i
  ) AS base
) AS row
"""  # noqa: S608 (fixed fragments, no input)

# One 'ended' event per ended session, plus older ones (synthetic sessions whose records
# hold only what an event knows) to reach :events; the most recent :events of them,
# appended in time order.
EVENTS = f"""
INSERT INTO session_events (session_key, user_id, kind, reason, at, duration, created,
                            last_seen, idle_deadline, absolute_deadline, ip, user_agent)
SELECT session_key, user_id, 'ended', reason, at, duration, created, last_seen,
       idle_deadline, absolute_deadline, ip, user_agent
FROM (
  SELECT * FROM (
    {ENDED_SESSIONS}
    UNION ALL
    SELECT session_key, user_id, reason, at, duration,
           at - make_interval(secs => duration), at, at, at, NULL, NULL
    FROM (
      SELECT md5('pruned' || j) || md5('event' || j) AS session_key,
             (1 + (j * 7) % :users)::text AS user_id, ({REASONS_SQL})[1 + (j * 3) % 20] AS reason,
             to_timestamp(:now - :span - 17
                          + (j * CAST(:span AS bigint)) / greatest(:extra, 1)) AS at,
             (j * 7919) % 28801 AS duration
      FROM generate_series(CAST(1 AS bigint), :extra) AS j
    ) AS older
  ) AS every ORDER BY at DESC LIMIT :events
) AS recent ORDER BY at
"""  # noqa: S608 (fixed fragments, no input)

# Refused requests, counted per hour and reason over the same 30 days.
REFUSALS = """
INSERT INTO session_refusals (hour, reason, count)
SELECT to_timestamp(:now - :now % 3600 - h * 3600), reason, 1 + (h * 37 + length(reason)) % 50
FROM generate_series(0, :span / 3600 - 1) AS h,
     unnest(ARRAY['ticket_mismatch', 'ticket_expired', 'session_lost']) AS reason
"""


@dataclass(frozen=True)
class Sizes:
    sessions: int = 1_000_000
    events: int = 1_000_000
    active: int = 10_000
    users: int = 10_000

    @property
    def tombstones(self) -> int:
        return self.sessions - self.active


SMOKE = Sizes(sessions=2_000, events=2_000, active=200, users=100)
LOADED_TABLES = ("sessions", "session_events", "session_refusals")


def load(url: str, sizes: Sizes, say: Callable[[str], None] = print) -> None:
    """Fill the migrated, empty database at ``url`` with ``sizes`` rows, then VACUUM, ANALYZE."""
    if not 0 < sizes.active <= sizes.sessions or sizes.users < 1:
        raise ValueError(f"impossible sizes: {sizes}")
    values = {"now": NOW, "span": SPAN, "users": sizes.users, "sessions": sizes.sessions,
              "active": sizes.active, "tombstones": sizes.tombstones,
              "events": sizes.events, "extra": max(0, sizes.events - sizes.tombstones)}
    engine = sa.create_engine(url)
    try:
        for name, sql in (("open sessions", OPEN_SESSIONS), ("ended sessions' events", EVENTS),
                          ("refusals", REFUSALS)):
            started = time.perf_counter()
            with engine.begin() as conn:
                # Committed to disk before the VACUUM below: a tuple whose commit is not yet
                # flushed gets no hint bit, and VACUUM marks no page holding one all-visible
                # (the server runs with synchronous_commit off, so index-only scans would
                # fetch every heap row).
                conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
                conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
                count = conn.execute(sa.text(sql), values).rowcount
            say(f"  loaded {count:>9,} {name} in {time.perf_counter() - started:5.1f} s")
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # Every VACUUM before any ANALYZE. VACUUM marks a page all-visible only when its
            # tuples carry the "inserter committed" hint bit, and PostgreSQL sets none while
            # a later commit in their transaction's clog group (32 transaction ids) waits
            # unflushed in the WAL: ANALYZE commits asynchronously here, so once one ran, no
            # table vacuumed after it was marked (index-only scans read every heap row).
            for table in LOADED_TABLES:
                conn.exec_driver_sql(f"VACUUM {table}")
            for table in LOADED_TABLES:
                conn.exec_driver_sql(f"ANALYZE {table}")
        say(f"  VACUUM, ANALYZE in {time.perf_counter() - started:5.1f} s")
    finally:
        engine.dispose()


# -- the operations ----------------------------------------------------------------------------

Operation = tuple[str, Callable[[], object]]


def operations(store: SqlStore, sizes: Sizes) -> list[Operation]:
    """Each report call to time, by name; next pages start at the first pages' cursors."""
    # Session i belongs to user 1 + i % users: the newest session's user has an open one.
    active_user = str(1 + sizes.sessions % sizes.users)
    ends_user = str(1 + (sizes.tombstones // 2) % sizes.users)
    ops: list[Operation] = [("summary", lambda: store.summary(NOW))]
    for sort in ActiveSort:
        first = ActiveQuery(now=NOW, sort=sort)
        cursor = store.active_sessions(first).next
        ops.append((f"active {sort} first page", lambda q=first: store.active_sessions(q)))
        following = ActiveQuery(now=NOW, sort=sort, after=cursor)
        ops.append((f"active {sort} next page", lambda q=following: store.active_sessions(q)))
    ops.append(("active by user", lambda: store.active_sessions(
        ActiveQuery(now=NOW, user_id=active_user))))
    for label, query in (("ends", EndsQuery()), ("ends by reason revoked",
                                                  EndsQuery(reason="revoked"))):
        cursor = store.recent_ends(query).next
        ops.append((f"{label} first page", lambda q=query: store.recent_ends(q)))
        following = EndsQuery(reason=query.reason, after=cursor)
        ops.append((f"{label} next page", lambda q=following: store.recent_ends(q)))
    ops.append(("ends by user", lambda: store.recent_ends(EndsQuery(user_id=ends_user))))
    return ops


#: The three calls the report's first page makes.
REPORT_PAGE = ("summary", "active last_seen first page", "ends first page")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@dataclass
class Timing:
    name: str
    samples: list[float] = field(default_factory=list)  # milliseconds

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return percentile(self.samples, .95)


def measure(ops: list[Operation], repeat: int) -> list[Timing]:
    """``repeat`` rounds of every operation, after one warm-up round."""
    for _, call in ops:
        call()
    timings = {name: Timing(name) for name, _ in ops}
    total = Timing("report page total")
    for _ in range(repeat):
        page = 0.0
        for name, call in ops:
            started = time.perf_counter()
            call()
            elapsed = (time.perf_counter() - started) * 1000
            timings[name].samples.append(elapsed)
            if name in REPORT_PAGE:
                page += elapsed
        total.samples.append(page)
    return [*timings.values(), total]


def print_table(timings: list[Timing], say: Callable[[str], None] = print) -> list[str]:
    """The table; returns the names of the operations whose median misses the target."""
    width = max(len(timing.name) for timing in timings)
    say(f"{'operation':<{width}}  {'median ms':>9}  {'p95 ms':>8}  {'target ms':>9}  result")
    missed = []
    for timing in timings:
        ok = timing.median <= TARGET_MS
        if not ok:
            missed.append(timing.name)
        say(f"{timing.name:<{width}}  {timing.median:9.1f}  {timing.p95:8.1f}  "
            f"{TARGET_MS:9.0f}  {'OK' if ok else 'MISS'}")
    return missed


# -- the plans ---------------------------------------------------------------------------------

@dataclass
class Plan:
    statement: str
    parameters: object
    plan: dict
    scans: list[tuple[str, str | None, str | None]]  # (node type, relation, index)
    big: tuple[str, ...]  # the tables of BIG_TABLES that hold BIG_ROWS rows or more

    @property
    def sequential(self) -> list[str]:
        return [relation for node, relation, _ in self.scans
                if node.endswith("Seq Scan") and relation in self.big]


def capture(engine: sa.Engine, ops: list[Operation]) -> list[tuple[str, object]]:
    """The distinct statements (and their parameters) the operations send, in order."""
    seen: dict[str, tuple[str, object]] = {}

    def listen(conn, cursor, statement, parameters, *_):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.setdefault(statement, (statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        for _, call in ops:
            call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    return list(seen.values())


def _scans(node: dict) -> list[tuple[str, str | None, str | None]]:
    """(node type, relation, index) of each node that reads a table or an index."""
    found = []
    if "Relation Name" in node or "Index Name" in node:
        found.append((node["Node Type"], node.get("Relation Name"), node.get("Index Name")))
    for child in node.get("Plans", ()):
        found.extend(_scans(child))
    return found


def big_tables(conn) -> tuple[str, ...]:
    """The tables of ``BIG_TABLES`` holding ``BIG_ROWS`` rows or more (as last analyzed)."""
    return tuple(conn.execute(sa.text(
        "SELECT relname FROM pg_class WHERE relname = ANY(:names) AND reltuples >= :rows "
        "ORDER BY relname"), {"names": list(BIG_TABLES), "rows": BIG_ROWS}).scalars())


def explain(engine: sa.Engine, statements: list[tuple[str, object]]) -> list[Plan]:
    plans = []
    with engine.connect() as conn:
        big = big_tables(conn)
        for statement, parameters in statements:
            result = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
            document = result.scalar_one()
            if isinstance(document, str):
                import json

                document = json.loads(document)
            plan = document[0]["Plan"]
            plans.append(Plan(statement, parameters, plan, _scans(plan), big))
    return plans


def print_plans(plans: list[Plan], say: Callable[[str], None] = print) -> list[Plan]:
    """One line per statement: what it reads and how; returns the plans with a Seq Scan."""
    bad = []
    for number, plan in enumerate(plans, 1):
        statement = " ".join(plan.statement.split())
        reads = ", ".join(node + (f" on {relation}" if relation else "")
                          + (f" using {index}" if index else "")
                          for node, relation, index in plan.scans) or "no table"
        flag = "SEQ SCAN" if plan.sequential else "ok"
        if plan.sequential:
            bad.append(plan)
        say(f"  [{number:2}] {flag:8} {reads}")
        say(f"       {statement[:160]}{'...' if len(statement) > 160 else ''}")
    return bad


# -- the run -----------------------------------------------------------------------------------

def parse(argv: list[str] | None, prog: str = "python -m benchmarks.report_scale",
          description: str = __doc__, store: str = "an empty PostgreSQL database",
          ) -> tuple[argparse.Namespace, Sizes, int]:
    """The command line of a report benchmark (this one's, or ``redis_report``'s, whose
    ``store`` is what ``--url`` names): the arguments, the sizes and the rounds to time."""
    parser = argparse.ArgumentParser(prog=prog, description=description.partition("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=Sizes.sessions)
    parser.add_argument("--events", type=int, default=Sizes.events)
    parser.add_argument("--active", type=int, default=Sizes.active)
    parser.add_argument("--users", type=int, default=Sizes.users)
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, a few seconds; fails only when something breaks")
    parser.add_argument("--url", help=f"{store} to use instead of starting a server")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes(args.sessions, args.events, args.active, args.users)
    return args, sizes, min(args.repeat, 3) if args.smoke else args.repeat


def run(url: str, sizes: Sizes, repeat: int, smoke: bool,
        timings_out: list[Timing] | None = None) -> int:
    """Load, explain, time and print; the exit code. ``timings_out`` receives the timings."""
    started = time.perf_counter()
    migrate(url)
    print(f"loading {sizes} ...")
    load(url, sizes)
    print(f"data ready in {time.perf_counter() - started:.1f} s; now = {NOW}")
    store = SqlStore(engine_for(url), Policy(store_type="expiry:sql", sweep_interval=None),
                     clock=lambda: NOW)
    try:
        ops = operations(store, sizes)
        plans = explain(store.engine, capture(store.engine, ops))
        timings = measure(ops, repeat)
    finally:
        store.close()
    if timings_out is not None:
        timings_out.extend(timings)
    print(f"\nplans ({len(plans)} statements):")
    seq = print_plans(plans)
    print(f"\ntimings ({repeat} rounds, wall time of the store call):")
    missed = print_table(timings)
    if smoke:
        print("\nsmoke run: sizes too small for timings or plans to mean anything; not checked")
        return 0
    failed = False
    if seq:
        failed = True
        print(f"\nFAIL: {len(seq)} plan(s) scan a big table sequentially:")
        for plan in seq:
            print(f"  {', '.join(plan.sequential)}: {' '.join(plan.statement.split())[:200]}")
    if missed:
        failed = True
        print(f"\nFAIL: median over {TARGET_MS:.0f} ms: {', '.join(missed)}")
    if not failed:
        big = plans[0].big if plans else ()
        print(f"\nOK: every median under {TARGET_MS:.0f} ms, no sequential scan of "
              f"{' or '.join(big) or 'a table'} (a table of {BIG_ROWS:,} rows or more)")
    return 1 if failed else 0


#: The report figures ``make bench`` puts in its table.
BENCH_TABLE = ("summary", "active started first page", "active started next page",
               "ends first page", "report page total")


def figures(smoke: bool = False) -> list[Figure]:
    """The report's figures for ``make bench``'s one table (``benchmarks.__main__``)."""
    sizes, repeat = (SMOKE, 3) if smoke else (Sizes(), 20)
    timings: list[Timing] = []
    server = PostgresServer().start()
    try:
        code = run(server.create_database("report_scale"), sizes, repeat, smoke, timings)
    finally:
        server.stop()
    if code:
        raise SystemExit("the report benchmark failed (see above)")
    scale = f"{sizes.sessions:,} sessions, {sizes.events:,} events"
    return [Figure("Report", timing.name, timing.median, "ms",
                   f"median, p95 {timing.p95:.0f} ms; {scale}",
                   None if smoke else timing.median < TARGET_MS)
            for timing in timings if timing.name in BENCH_TABLE]


def main(argv: list[str] | None = None) -> int:
    args, sizes, repeat = parse(argv)
    if args.url:
        return run(args.url, sizes, repeat, args.smoke)
    server = PostgresServer().start()
    try:
        return run(server.create_database("report_scale"), sizes, repeat, args.smoke)
    finally:
        server.stop()


if __name__ == "__main__":
    # A plain kill stops the server too (the finally in main), as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
