"""The sweeper at scale: a million overdue sessions in PostgreSQL, ended by ``session-sweeper``.

    .venv/bin/python -m benchmarks.sweeper_scale [--sessions 1000000]
    .venv/bin/python -m benchmarks.sweeper_scale --smoke

Starts its own PostgreSQL (``shared_buffers`` 1 GB), migrates a template database and loads it with
``--sessions`` open sessions, every one past its deadline (three in four idle,
one in four at its absolute lifetime; data like a real session's). Each run
gets its own copy of the template (``CREATE DATABASE ... TEMPLATE``), so every
run starts from the same rows:

- *bare*: one statement, ``WITH ended AS (DELETE ... RETURNING) INSERT INTO
  session_events ...``, writing the same event rows (the record as it ended):
  the floor for moving these rows into a log table, with no notification sent
  and no batch committed on the way;
- *session-sweeper, 1 process*: the real command, ``session-sweeper <ini>
  --once``, logging as production.ini does (one INFO line per ended session,
  to a file);
- *session-sweeper, 4 processes*: four of them started at once on the same rows.

After every sweeper run the database is checked: no session left open, every
session ended for the right timeout, exactly one ``ended`` event per session,
every event notified, and as many "session ended" log lines as sessions.
Peak RSS of each sweeper process comes from ``wait4``. Exit code 1 when a
check fails or a target is missed (a smoke run judges only the checks).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from tests.conftest import migrate
from tests.postgres import PostgresServer

from benchmarks.figures import Figure, median, report
from session_expiry.stores.sql.schema import at

#: The sweeper's wall time against the bare statement's (the performance issue's target).
TARGET_RATIO = 2.0
#: Peak resident memory of one sweeper process, MB.
TARGET_RSS_MB = 150
SMOKE_SESSIONS = 3_000
PROCESSES = (1, 4)
TEMPLATE = "sweep_template"
#: The server's buffer pool: room for the million rows and their indexes, as a production
#: server would have (the tests' 128 MB default makes every run mostly a disk benchmark).
SHARED_BUFFERS = "1GB"

# Session i: started 8.5 to 9.3 hours ago, so both deadlines have passed. Three in four
# were last seen within 17 minutes of the start (idle timeout), one in four just before
# the absolute lifetime ran out. sweep_at is the idle deadline set when it opened, as
# the store writes it.
OVERDUE = """
INSERT INTO sessions (key, user_id, data, version, created, last_seen, idle_deadline,
                      absolute_deadline, sweep_at, ip, user_agent)
SELECT key, user_id, data, version, created, last_seen, last_seen + interval '20 minutes',
       created + interval '8 hours', created + interval '20 minutes', ip, user_agent
FROM (
  SELECT md5(i::text) || md5((i + 1)::text) AS key, (1 + i % 10000)::text AS user_id,
         json_build_object('cart', json_build_array(i % 97, i % 13), 'theme', 'dark',
                           'draft', repeat('x', CAST(i % 200 AS int))) AS data,
         i % 7 AS version, created,
         CASE WHEN i % 4 = 0 THEN created + interval '7 hours 59 minutes'
              ELSE created + make_interval(secs => i % 1000) END AS last_seen,
         '10.' || ((i >> 16) & 255) || '.' || ((i >> 8) & 255) || '.' || (i & 255) AS ip,
         'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0'
           AS user_agent
  FROM (SELECT i, to_timestamp(:now - 30600 - i % 3000) AS created
        FROM generate_series(CAST(1 AS bigint), :sessions) AS i) AS numbered
) AS row
"""

BARE = """
WITH ended AS (
  DELETE FROM sessions WHERE sweep_at <= :now
  RETURNING key, user_id, created, last_seen, idle_deadline, absolute_deadline, ip, user_agent
)
INSERT INTO session_events (session_key, user_id, kind, reason, at, duration, created,
                            last_seen, idle_deadline, absolute_deadline, ip, user_agent)
SELECT key, user_id, 'ended',
       CASE WHEN absolute_deadline <= idle_deadline THEN 'absolute_timeout'
            ELSE 'idle_timeout' END,
       :now, CAST(extract(epoch FROM :now - created) AS int), created, last_seen,
       idle_deadline, absolute_deadline, ip, user_agent
FROM ended
"""

CHECK = """
SELECT (SELECT count(*) FROM sessions) AS still_open,
       (SELECT count(*) FROM session_events WHERE reason IS DISTINCT FROM
          CASE WHEN absolute_deadline <= idle_deadline THEN 'absolute_timeout'
               ELSE 'idle_timeout' END) AS wrong_reason,
       (SELECT count(*) FROM session_events WHERE kind = 'ended') AS events,
       (SELECT count(DISTINCT session_key) FROM session_events) AS ended_sessions,
       (SELECT count(*) FROM session_outbox) AS unnotified
"""

INI = """\
[app:main]
use = egg:session-expiry-demo
sqlalchemy.url = {url}
session.type = expiry:sql
session.key = session
session.secure = false
session_expiry.idle_timeout = 20m
session_expiry.absolute_timeout = 8h
session_expiry.secret = benchmark-only-secret-0123456789abcdef0123456789abcdef

[loggers]
keys = root, session_expiry

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[logger_session_expiry]
level = INFO
handlers =
qualname = session_expiry

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s][%(threadName)s] %(message)s
"""


@dataclass
class Run:
    """One sweep of a fresh copy: wall seconds and the peak RSS of its biggest process."""

    seconds: float
    peak_rss_mb: float = 0.0


class Bench:
    """A PostgreSQL server with the loaded template, and fresh copies of it."""

    def __init__(self, server: PostgresServer, sessions: int, workdir: Path):
        self.server = server
        self.sessions = sessions
        self.workdir = workdir
        self.now = int(time.time())
        self.admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
        self.copies = 0

    def load(self) -> None:
        started = time.perf_counter()
        url = self.server.create_database(TEMPLATE)
        migrate(url)
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                # Settled, as a production table is by the time its sessions run out: the
                # load's commit flushed before the VACUUM, so that the rows get their
                # committed hint bits and the pages are marked all-visible (an unflushed,
                # asynchronous commit leaves both sides to set them on first touch).
                conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
                conn.execute(sa.text(OVERDUE), {"now": self.now, "sessions": self.sessions})
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE sessions")
        finally:
            engine.dispose()
        print(f"  loaded {self.sessions:,} overdue sessions in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

    def copy(self) -> str:
        """A new database holding the template's rows; its URL."""
        self.copies += 1
        name = f"sweep_{self.copies}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} "
                                 "STRATEGY FILE_COPY")
            conn.exec_driver_sql("CHECKPOINT")  # its cost not charged to the run that follows
        return self.server.url(name)

    def drop(self, url: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def bare(self) -> Run:
        url = self.copy()
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:  # connected before the clock starts
                started = time.perf_counter()
                with conn.begin():
                    moved = conn.execute(sa.text(BARE), {"now": at(self.now)}).rowcount
                elapsed = time.perf_counter() - started
        finally:
            engine.dispose()
        self.drop(url)
        if moved != self.sessions:
            raise SystemExit(f"the bare statement moved {moved} rows of {self.sessions}")
        return Run(elapsed)

    def sweepers(self, processes: int) -> Run:
        """``processes`` ``session-sweeper --once`` at once on a fresh copy; checked."""
        url = self.copy()
        ini = self.workdir / f"sweeper-{self.copies}.ini"
        ini.write_text(INI.format(url=url))
        logs = [self.workdir / f"sweeper-{self.copies}-{n}.log" for n in range(processes)]
        command = [str(Path(sys.executable).with_name("session-sweeper")), str(ini), "--once"]
        started = time.perf_counter()
        children = []
        for log in logs:
            with log.open("w") as out:
                children.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
        peak = 0
        for child in children:
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            peak = max(peak, usage.ru_maxrss)  # KiB on Linux
        elapsed = time.perf_counter() - started
        failed = [log for child, log in zip(children, logs, strict=True) if child.returncode]
        if failed:
            raise SystemExit(f"session-sweeper failed; see {failed[0]}:\n"
                             + failed[0].read_text()[-2000:])
        self.check(url, sum(_ended_lines(log) for log in logs))
        self.drop(url)
        return Run(elapsed, peak / 1024)

    def check(self, url: str, log_lines: int) -> None:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                found = conn.execute(sa.text(CHECK)).one()._asdict()
        finally:
            engine.dispose()
        expected = {"still_open": 0, "wrong_reason": 0, "events": self.sessions,
                    "ended_sessions": self.sessions, "unnotified": 0}
        if found != expected or log_lines != self.sessions:
            raise SystemExit(f"the sweep is wrong: found {found}, {log_lines} log lines; "
                             f"expected {expected}, {self.sessions} log lines")

    def close(self) -> None:
        self.admin.dispose()


def _ended_lines(log: Path) -> int:
    with log.open() as lines:
        return sum("session ended:" in line for line in lines)


def measure(smoke: bool = False, sessions: int | None = None, rounds: int = 1) -> list[Figure]:
    """The sweeper's figures for ``make bench``'s table (``benchmarks.__main__``)."""
    sessions = sessions or (SMOKE_SESSIONS if smoke else 1_000_000)
    server = PostgresServer(shared_buffers=SHARED_BUFFERS).start()
    bench = None
    try:
        with tempfile.TemporaryDirectory(prefix="sweeper-scale-") as workdir:
            bench = Bench(server, sessions, Path(workdir))
            bench.load()
            runs: dict[str, list[Run]] = {"bare": []}
            runs.update({f"{n}": [] for n in PROCESSES})
            for number in range(1, rounds + 1):  # interleaved, as the HTTP benchmark
                runs["bare"].append(bench.bare())
                print(f"  round {number}: bare {runs['bare'][-1].seconds:.1f} s", flush=True)
                for processes in PROCESSES:
                    run = bench.sweepers(processes)
                    runs[f"{processes}"].append(run)
                    print(f"  round {number}: {processes} sweeper(s) {run.seconds:.1f} s, "
                          f"peak RSS {run.peak_rss_mb:.0f} MB (checked)", flush=True)
    finally:
        if bench is not None:
            bench.close()
        server.stop()
    return figures(runs, sessions, smoke)


def figures(runs: dict[str, list[Run]], sessions: int, smoke: bool) -> list[Figure]:
    scale = f"{sessions:,} overdue sessions"
    bare = median(run.seconds for run in runs["bare"])
    result = [Figure("Sweeper", "bare DELETE ... RETURNING into the log (floor)", bare, "s",
                     scale)]
    for processes in PROCESSES:
        seconds = median(run.seconds for run in runs[f"{processes}"])
        met = None if smoke else seconds <= TARGET_RATIO * bare
        result.append(Figure(
            "Sweeper", f"session-sweeper, {processes} process{'es' if processes > 1 else ''}",
            seconds, "s", f"{seconds / bare:.2f}x the bare statement's time "
                          f"(target <= {TARGET_RATIO:g}x); {scale}, checked", met))
    peak = max(run.peak_rss_mb for processes in PROCESSES for run in runs[f"{processes}"])
    result.append(Figure("Sweeper", "peak RSS of a sweeper process", peak, "MB",
                         f"target < {TARGET_RSS_MB} MB", None if smoke else peak < TARGET_RSS_MB))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweeper_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None,
                        help="overdue sessions (default 1,000,000; smoke 3,000)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--smoke", action="store_true", help="toy size; judges nothing")
    args = parser.parse_args(argv)
    return report(measure(args.smoke, args.sessions, args.rounds))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
