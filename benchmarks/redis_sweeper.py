"""The sweeper at scale on Redis: a million overdue sessions in ``expiry:redis``, ended by
``session-sweeper``.

    .venv/bin/python -m benchmarks.redis_sweeper [--sessions 1000000 --rounds 1]
    .venv/bin/python -m benchmarks.redis_sweeper --smoke

Starts its own ``redis-server`` (``tests.redis_server``: loopback, no persistence of its
own) and loads it with ``--sessions`` open sessions through the store's own scripts
(``benchmarks.redis_load``), every one past its deadline, as ``sweeper_scale`` loads
PostgreSQL: started 8.5 to 9.3 hours ago; three in four last seen within 17 minutes of
the start (idle timeout), one in four just before the absolute lifetime ran out; data like
a real session's. The loaded server is saved (``SAVE``), and every run starts the server
again from that snapshot, so every run starts from the same keys:

- *bare*: a plain client script that takes the same sessions out of the partitions'
  sorted sets (per partition ``ZRANGEBYSCORE`` of the overdue keys, ``ZREMRANGEBYSCORE``
  of ``due``, ``ZREM`` of them from ``seen`` and ``born``, pipelined): the floor for
  finding and unlisting the overdue sessions, with no tombstone, event or notification;
- *bare script with the same writes* (no target; what Redis must do at least): one Lua
  script per batch of 500, sent by this process, that writes what the store's ``sweep``
  script writes for each overdue session (the tombstone, the ``ended`` entry, the user's
  index and ends, the event in the stream, the sorted sets) but delivers nothing to a
  consumer and tells nobody;
- *session-sweeper, 1 process*: the real command, ``session-sweeper <ini> --once``,
  logging as production.ini does (one INFO line per ended session, to a file);
- *session-sweeper, 4 processes*: four of them started at once on the same keys.

After every sweeper run the server is checked: no session left in a partition's ``due``,
``seen`` or ``born``; every session once in ``ended``, for the right timeout; one event
per session in the partitions' streams, none left unacknowledged (every one told); and
as many "session ended" log lines as sessions. The CPU time the Redis server spent
meanwhile is read from ``INFO cpu``. Peak RSS of each sweeper process comes from
``wait4``, in a small process that starts it (:data:`MEASURED`). Exit code 1 when a check
fails or a target is missed (a smoke run judges only the checks).
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import ResponseError
from tests.conftest import migrate
from tests.redis_server import RedisServer

from benchmarks import sweeper_scale
from benchmarks.figures import Figure, median, report
from benchmarks.redis_load import (
    USER_AGENTS,
    Loader,
    chunks,
    data_of,
    index_of,
    ip_of,
    key_of,
    policy,
)
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.redis.layout import GROUP, Layout

#: The sweeper's wall time against the bare script's (the performance issue's target).
TARGET_RATIO = 2.0
#: Peak resident memory of one sweeper process, MB.
TARGET_RSS_MB = 150
SMOKE_SESSIONS = 3_000
PROCESSES = (1, 4)
IDLE, ABSOLUTE = 1200, 8 * 3600
#: ``ZREM`` members per command in the bare script.
ZREM_CHUNK = 1_000

#: sweeper_scale's ini, on the Redis store (the users' database stays SQLite).
INI = sweeper_scale.INI.replace(
    "sqlalchemy.url = {url}\nsession.type = expiry:sql",
    "sqlalchemy.url = {app_url}\nsession.type = expiry:redis\nsession.url = {url}")


#: The bare script with the same writes: per overdue session of the partition (KEYS[1]) the
#: writes of the store's ``finish`` (lua/common.lua), without the consumer group's delivery.
SAME_WRITES = """
local base, now, keep = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', base .. 'due', '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(due) do
  local session = base .. 's:' .. key
  local f = redis.call('HMGET', session, 'u', 'c', 'i', 'a')
  local reason = 'idle_timeout'
  if tonumber(f[4]) <= tonumber(f[3]) then reason = 'absolute_timeout' end
  local duration = now - tonumber(f[2])
  redis.call('HDEL', session, 'd', 'v')
  redis.call('HSET', session, 'e', now, 'r', reason)
  redis.call('EXPIRE', session, keep)
  redis.call('ZREM', base .. 'due', key)
  redis.call('ZREM', base .. 'seen', key)
  redis.call('ZREM', base .. 'born', key)
  local member = key .. ':' .. reason .. ':' .. duration .. ':' .. f[1]
  redis.call('ZADD', base .. 'ended', now, member)
  local user = redis.sha1hex(f[1])
  redis.call('SREM', base .. 'u:' .. user, key)
  redis.call('ZADD', base .. 'ue:' .. user, now, member)
  redis.call('EXPIRE', base .. 'ue:' .. user, keep)
  redis.call('XADD', base .. 'events', '*', 'key', key, 'user', f[1], 'reason', reason,
             'at', now, 'duration', duration)
end
return #due
"""
BATCH = 500


#: Runs a command (argv[2:]) and writes its peak RSS (KiB, from ``wait4``) to argv[1]: a
#: child's ``ru_maxrss`` counts the memory of the process that started it (Linux keeps the
#: high-water mark across fork and exec), so the sweeper is started from this small one, not
#: from the benchmark's process (whose hundreds of MB a sweeper started by it would show).
MEASURED = """\
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def expected_reason(i: int) -> str:
    return "absolute_timeout" if i % 4 == 0 else "idle_timeout"


@dataclass
class Run:
    """One sweep of a fresh copy: wall seconds, the peak RSS of its biggest process, and the
    CPU seconds the Redis server spent meanwhile (``INFO cpu``)."""

    seconds: float
    peak_rss_mb: float = 0.0
    redis_cpu_seconds: float = 0.0


class Bench:
    """A Redis server with the loaded snapshot, started afresh from it for every run."""

    def __init__(self, server: RedisServer, sessions: int, workdir: Path):
        self.server = server
        self.sessions = sessions
        self.workdir = workdir
        self.now = int(time.time())
        self.layout = Layout()
        self.runs = 0
        self.app_url = f"sqlite:///{workdir / 'app.sqlite'}"

    def load(self) -> None:
        """Every session opened, touched and given its data through the store's scripts,
        at its own time in the past; then the snapshot every run starts from."""
        started = time.perf_counter()
        store = RedisStore(self.server.url, policy(IDLE, ABSOLUTE), clock=time.time)
        try:
            loader = Loader(store)
            for numbers in chunks(1, self.sessions + 1):
                for i in numbers:
                    key, created = key_of(i), self.now - 30600 - i % 3000
                    seen = created + (28740 if i % 4 == 0 else i % 1000)
                    loader.open(key, str(1 + i % 10_000), created, ip_of(i),
                                USER_AGENTS[i % len(USER_AGENTS)])
                    loader.touch(key, seen)
                    loader.save(key, data_of(i))
                answers = loader.execute()
                if answers[0::3].count(1) != len(numbers):
                    raise SystemExit(f"the load opened {answers[0::3].count(1)} sessions of "
                                     f"{len(numbers)}: is the server empty?")
        finally:
            store.close()
        loaded = time.perf_counter() - started
        with self.server.client(socket_timeout=None) as client:
            client.save()  # blocks Redis until it is written
            self.keys = client.dbsize()
        migrate(self.app_url)  # the demo's own database (its users), as the ini names it
        print(f"  loaded {self.sessions:,} overdue sessions in {loaded:.1f} s ({self.keys:,} "
              f"keys), saved in {time.perf_counter() - started - loaded:.1f} s", flush=True)

    def fresh(self):
        """The server started again from the snapshot; a client connected to it, its
        CPU time noted."""
        self.server.restart(seconds=600)
        client = self.server.client()
        if client.dbsize() != self.keys:
            raise SystemExit(f"the snapshot holds {client.dbsize()} keys, not {self.keys}")
        self.cpu = redis_cpu(client)
        return client

    def bare(self) -> Run:
        client = self.fresh()
        try:
            started = time.perf_counter()
            moved = 0
            for partition in self.layout.partitions:
                keys = client.zrangebyscore(partition.due, "-inf", self.now)
                pipe = client.pipeline(transaction=False)
                pipe.zremrangebyscore(partition.due, "-inf", self.now)
                for first in range(0, len(keys), ZREM_CHUNK):
                    members = keys[first:first + ZREM_CHUNK]
                    pipe.zrem(partition.base + "seen", *members)
                    pipe.zrem(partition.base + "born", *members)
                removed = pipe.execute()
                if removed[0] != len(keys) or sum(removed[1:]) != 2 * len(keys):
                    raise SystemExit(f"the bare script removed {removed} for {len(keys)} keys")
                moved += len(keys)
            elapsed = time.perf_counter() - started
            spent = redis_cpu(client) - self.cpu
        finally:
            client.close()
        if moved != self.sessions:
            raise SystemExit(f"the bare script moved {moved} sessions of {self.sessions}")
        return Run(elapsed, redis_cpu_seconds=spent)

    def same_writes(self) -> Run:
        """The bare script with the sweeper's writes, batch by batch; checked."""
        client = self.fresh()
        try:
            script = client.register_script(SAME_WRITES)
            keep = policy().retention + 86400
            script(keys=[self.layout.partitions[0].base], args=[0, 0, keep])  # loaded
            started = time.perf_counter()
            for partition in self.layout.partitions:
                while script(keys=[partition.base], args=[self.now, BATCH, keep]) == BATCH:
                    pass
            elapsed = time.perf_counter() - started
            spent = redis_cpu(client) - self.cpu
            self.check(client, self.sessions)  # no log: nobody is told
        finally:
            client.close()
        return Run(elapsed, redis_cpu_seconds=spent)

    def sweepers(self, processes: int) -> Run:
        """``processes`` ``session-sweeper --once`` at once on a fresh copy; checked."""
        client = self.fresh()
        self.runs += 1
        ini = self.workdir / f"sweeper-{self.runs}.ini"
        ini.write_text(INI.format(url=self.server.url, app_url=self.app_url))
        logs = [self.workdir / f"sweeper-{self.runs}-{n}.log" for n in range(processes)]
        command = [str(Path(sys.executable).with_name("session-sweeper")), str(ini), "--once"]
        peaks = [log.with_suffix(".rss") for log in logs]
        try:
            started = time.perf_counter()
            children = []
            for log, peak in zip(logs, peaks, strict=True):
                with log.open("w") as out:
                    children.append(subprocess.Popen(
                        [sys.executable, "-I", "-S", "-c", MEASURED, str(peak), *command],
                        stdout=out, stderr=subprocess.STDOUT))
            for child in children:
                child.wait()
            elapsed = time.perf_counter() - started
            spent = redis_cpu(client) - self.cpu
            failed = [log for child, log in zip(children, logs, strict=True) if child.returncode]
            if failed:
                raise SystemExit(f"session-sweeper failed; see {failed[0]}:\n"
                                 + failed[0].read_text()[-2000:])
            self.check(client, sum(_ended_lines(log) for log in logs))
            peak = max(int(path.read_text()) for path in peaks)  # KiB on Linux
        finally:
            client.close()
        for path in (*logs, *peaks):
            path.unlink(missing_ok=True)
        return Run(elapsed, peak / 1024, spent)

    def check(self, client, log_lines: int) -> None:
        """No session left open, each ended once for its timeout, one event each, every
        event acknowledged, a log line each."""
        pipe = client.pipeline(transaction=False)
        for partition in self.layout.partitions:
            for name in ("due", "seen", "born"):
                pipe.zcard(partition.base + name)
            pipe.xlen(partition.events)
            pipe.xpending(partition.events, GROUP)
        answers = pipe.execute(raise_on_error=False)
        still_open = sum(answer for n, answer in enumerate(answers) if n % 5 < 3)
        events = sum(answers[3::5])
        unacknowledged = sum(_pending(answer) for answer in answers[4::5])
        ended = bytearray(self.sessions + 1)
        wrong_reason = twice = 0
        for partition in self.layout.partitions:
            for member in _members(client, partition.ended):
                key, reason = member.split(":", 2)[:2]
                i = index_of(key)
                twice += ended[i]
                ended[i] = 1
                wrong_reason += reason != expected_reason(i)
        found = {"still_open": still_open, "ended_sessions": sum(ended), "ended_twice": twice,
                 "wrong_reason": wrong_reason, "events": events,
                 "unacknowledged": unacknowledged}
        expected = {"still_open": 0, "ended_sessions": self.sessions, "ended_twice": 0,
                    "wrong_reason": 0, "events": self.sessions, "unacknowledged": 0}
        if found != expected or log_lines != self.sessions:
            raise SystemExit(f"the sweep is wrong: found {found}, {log_lines} log lines; "
                             f"expected {expected}, {self.sessions} log lines")


def _pending(answer) -> int:
    """Entries left unacknowledged, from ``XPENDING``'s summary (no stream: none)."""
    if isinstance(answer, ResponseError) and "NOGROUP" in str(answer):
        return 0
    if isinstance(answer, Exception):
        raise answer
    return answer["pending"]


def _members(client, name: str, page: int = 10_000):
    """Every member of the sorted set ``name``, page by page."""
    start = 0
    while True:
        members = client.zrange(name, start, start + page - 1)
        yield from members
        if len(members) < page:
            return
        start += page


def redis_cpu(client) -> float:
    """CPU seconds the Redis server has used since it started (``INFO cpu``)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _ended_lines(log: Path) -> int:
    with log.open() as lines:
        return sum("session ended:" in line for line in lines)


def measure(smoke: bool = False, sessions: int | None = None, rounds: int = 1) -> list[Figure]:
    """The Redis sweeper's figures for ``make bench``'s table (``benchmarks.__main__``)."""
    sessions = sessions or (SMOKE_SESSIONS if smoke else 1_000_000)
    server = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="redis-sweeper-") as workdir:
            bench = Bench(server, sessions, Path(workdir))
            bench.load()
            runs: dict[str, list[Run]] = {"bare": [], "writes": []}
            runs.update({f"{n}": [] for n in PROCESSES})
            for number in range(1, rounds + 1):  # interleaved, as the HTTP benchmark
                runs["bare"].append(bench.bare())
                print(f"  round {number}: bare {runs['bare'][-1].seconds:.2f} s", flush=True)
                runs["writes"].append(bench.same_writes())
                print(f"  round {number}: bare with the same writes "
                      f"{runs['writes'][-1].seconds:.1f} s (checked)", flush=True)
                for processes in PROCESSES:
                    run = bench.sweepers(processes)
                    runs[f"{processes}"].append(run)
                    print(f"  round {number}: {processes} sweeper(s) {run.seconds:.1f} s "
                          f"(Redis CPU {run.redis_cpu_seconds:.1f} s), peak RSS "
                          f"{run.peak_rss_mb:.0f} MB (checked)", flush=True)
    finally:
        server.stop()
    return figures(runs, sessions, smoke)


def figures(runs: dict[str, list[Run]], sessions: int, smoke: bool) -> list[Figure]:
    scale = f"{sessions:,} overdue sessions"
    bare = median(run.seconds for run in runs["bare"])
    bare_cpu = median(run.redis_cpu_seconds for run in runs["bare"])
    result = [Figure("Sweeper, Redis", "bare script: ZREM/ZREMRANGEBYSCORE per partition "
                     "(floor)", bare, "s", f"{scale}; Redis CPU {bare_cpu:.2f} s")]
    writes = median(run.seconds for run in runs["writes"])
    result.append(Figure(
        "Sweeper, Redis", "bare script with the same writes, no notification (no target)",
        writes, "s", f"{writes / bare:.2f}x the bare script's time; Redis CPU "
                     f"{median(run.redis_cpu_seconds for run in runs['writes']):.1f} s; "
                     f"{scale}, checked"))
    for processes in PROCESSES:
        seconds = median(run.seconds for run in runs[f"{processes}"])
        busy = median(run.redis_cpu_seconds for run in runs[f"{processes}"])
        met = None if smoke else seconds <= TARGET_RATIO * bare
        result.append(Figure(
            "Sweeper, Redis",
            f"session-sweeper on Redis, {processes} process{'es' if processes > 1 else ''}",
            seconds, "s", f"{seconds / bare:.2f}x the bare script's time "
                          f"(target <= {TARGET_RATIO:g}x), {seconds / writes:.2f}x the same "
                          f"writes'; Redis CPU {busy:.1f} s; {scale}, checked", met))
    peak = max(run.peak_rss_mb for processes in PROCESSES for run in runs[f"{processes}"])
    result.append(Figure("Sweeper, Redis", "peak RSS of a sweeper process on Redis", peak, "MB",
                         f"target < {TARGET_RSS_MB} MB", None if smoke else peak < TARGET_RSS_MB))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_sweeper",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None,
                        help=f"overdue sessions (default 1,000,000; smoke {SMOKE_SESSIONS:,})")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--smoke", action="store_true", help="toy size; judges nothing")
    args = parser.parse_args(argv)
    return report(measure(args.smoke, args.sessions, args.rounds))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
