"""Sweepers against one Redis (``expiry:redis``): exactly one stream entry per session, every
one notified, whether the sweepers run side by side, one is killed mid-run, or Redis itself is
killed mid-sweep and restarted from its append-only file."""
import hashlib
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from session_expiry.settings import Policy
from session_expiry.stores.redis import RedisStore
from tests.farm.conftest import due, ended_lines, pending, run_sweeper, stream_entries, write_ini
from tests.redis_server import RedisServer

on_redis = pytest.mark.parametrize("backend", ["redis"], indirect=True)

SESSIONS = 2_000
#: Enough that four sweepers whose logs are not read cannot end them all: a sweeper blocks
#: once its stderr pipe (64 KiB) is full, some 450 "session ended" lines in.
MANY = 3_000


def open_overdue(store: RedisStore, count: int = SESSIONS) -> list[str]:
    """``count`` sessions opened two hours ago, so past their 20 minutes idle; their keys."""
    opened = int(time.time()) - 7200
    keys = [hashlib.sha256(f"session-{n}".encode()).hexdigest() for n in range(count)]
    with ThreadPoolExecutor(8) as pool:  # many at once: one fsync for several (appendonly)
        list(pool.map(lambda n: store.open(keys[n], str(n % 3 + 1), opened), range(count)))
    assert due(store) == count
    return keys


def event_count(store: RedisStore) -> int:
    client = store.redis.client
    return sum(client.xlen(partition.events) for partition in store.layout.partitions)


def still_open(store: RedisStore, keys: list[str]) -> int:
    """How many of ``keys`` are open sessions (data, not a tombstone)."""
    pipe = store.redis.client.pipeline(transaction=False)
    for key in keys:
        pipe.hexists(store.layout.partition(key).session(key), "v")
    return sum(pipe.execute())


def indexed(store: RedisStore) -> int:
    """Session keys left in the users' indexes (the test users 1, 2 and 3)."""
    pipe = store.redis.client.pipeline(transaction=False)
    for partition in store.layout.partitions:
        for user in (1, 2, 3):
            pipe.scard(partition.user(str(user)))
    return sum(pipe.execute())


def consumer_pids(store: RedisStore) -> dict[int, int]:
    """The events pending (delivered, unacknowledged) by the pid of the process they were
    delivered to (a consumer is ``<host>:<pid>:<token>``)."""
    return {int(name.split(":")[1]): count for name, count in pending(store).items()}


def wait_until_blocked(store: RedisStore, sweepers, seconds: float = 60,
                       quiet: float = 0.5) -> dict:
    """Once every sweeper holds events it has not acknowledged, and no sweeper has ended
    anything for ``quiet`` seconds: each is blocked mid-batch, writing to its full log pipe
    (ended and delivered to it, not all told). Its events and pending entries."""
    deadline = time.monotonic() + seconds
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        for sweeper in sweepers:
            if sweeper.poll() is not None:
                raise AssertionError(f"sweeper {sweeper.pid} ended its run unblocked: "
                                     f"{sweeper.communicate()}")
        now = {"events": event_count(store), "pending": consumer_pids(store)}
        if now != last:
            last, since = now, time.monotonic()
        elif (all(sweeper.pid in now["pending"] for sweeper in sweepers)
              and time.monotonic() - since >= quiet):
            return now
        time.sleep(0.05)
    raise AssertionError(f"the sweepers never blocked mid-batch: {last}")


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"], indirect=True)
def test_four_sweepers_at_once_leave_exactly_one_stream_entry_per_session(
        tmp_path, farm_url, redis_url, open_store):
    store = open_store()
    keys = open_overdue(store, MANY)
    ini = write_ini(tmp_path, farm_url, redis_url=redis_url)
    sweepers = [run_sweeper(ini, "--once", "--batch", "10") for _ in range(4)]
    # Their logs are read only once all four are held mid-batch by their full pipes: three
    # cannot end the 3,000 sessions alone, so all four sweep the same partitions at once.
    held = wait_until_blocked(store, sweepers)
    assert 0 < held["events"] < MANY
    outputs = [sweeper.communicate(timeout=120) for sweeper in sweepers]
    assert [sweeper.returncode for sweeper in sweepers] == [0, 0, 0, 0], outputs

    ended = [int(out.split("ended=")[1].split()[0]) for out, _ in outputs]
    assert all(count > 0 for count in ended) and sum(ended) == MANY, ended
    told = [ended_lines(err) for _, err in outputs]
    assert [len(lines) for lines in told] == ended  # each told what it ended, once
    assert sorted(line for lines in told for line in lines) == sorted(k[:12] for k in keys)

    entries = stream_entries(store)
    assert len(entries) == MANY
    assert {entry["key"] for entry in entries} == set(keys)
    assert {entry["reason"] for entry in entries} == {"idle_timeout"}
    assert pending(store) == {}
    assert (due(store), still_open(store, keys), indexed(store)) == (0, 0, 0)


@on_redis
def test_a_sweeper_killed_mid_run_leaves_nothing_twice_and_nothing_unsent(
        tmp_path, farm_url, redis_url, open_store):
    store = open_store()
    keys = open_overdue(store)
    ini = write_ini(tmp_path, farm_url, redis_url=redis_url)
    # Its log is never read: once the pipe is full, the sweeper blocks writing a "session
    # ended" line, that is while telling a batch whose sessions are ended (their events in
    # the streams, delivered to it) and whose telling is not done (not acknowledged).
    sweeper = run_sweeper(ini, "--once", "--batch", "10")
    held = wait_until_blocked(store, [sweeper])
    sweeper.send_signal(signal.SIGKILL)
    _, log = sweeper.communicate(timeout=10)
    told_before = ended_lines(log)

    at_kill = {"events": event_count(store), "pending": consumer_pids(store)}
    assert at_kill == held
    assert 0 < at_kill["events"] < SESSIONS, "the kill did not land mid-run"
    unsent = {entry["key"][:12] for entry in stream_entries(store)} - set(told_before)
    # The batch being told stays pending, and the next, ended while this one was told.
    assert 0 < at_kill["pending"][sweeper.pid] <= 2 * 10
    assert len(unsent) <= at_kill["pending"][sweeper.pid]
    assert len(told_before) == len(set(told_before))

    # The next sweep, once the dead process's claim time has passed (here at once).
    told = []
    again = open_store(on_end=told.append)
    again.claim_after = 0
    result = again.sweep(int(time.time()), batch=500)
    assert result.total_ended == SESSIONS - at_kill["events"]
    assert result.notified == SESSIONS - at_kill["events"] + at_kill["pending"][sweeper.pid]
    told_after = [event.session_key[:12] for event in told]
    assert len(told_after) == len(set(told_after))
    # Told twice (at least once): only what the killed sweeper had not acknowledged.
    assert len(set(told_before) & set(told_after)) <= at_kill["pending"][sweeper.pid]
    assert set(told_before) | set(told_after) == {key[:12] for key in keys}

    entries = stream_entries(store)
    assert len(entries) == SESSIONS and {entry["key"] for entry in entries} == set(keys)
    assert pending(store) == {}
    assert (due(store), still_open(store, keys), indexed(store)) == (0, 0, 0)


def wait_for_events(store: RedisStore, sweeper, at_least: int, seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (count := event_count(store)) >= at_least:
            return count
        if sweeper.poll() is not None:
            raise AssertionError(f"the sweeper exited: {sweeper.communicate()}")
        time.sleep(0.005)
    raise AssertionError(f"the sweeper ended fewer than {at_least} sessions in {seconds}s")


@on_redis
def test_redis_killed_mid_sweep_and_restarted_from_its_aof_ends_every_session_once(
        tmp_path, farm_url):
    with RedisServer(appendonly=True, appendfsync="always") as server:
        told = []
        store = RedisStore(server.url, Policy(), clock=time.time, on_end=told.append)
        try:
            keys = open_overdue(store)
            ini = write_ini(tmp_path, farm_url, redis_url=server.url)
            # Its log is read only after the kill: a full pipe holds the sweeper mid-run
            # (some 450 sessions in) should the kill come late.
            sweeper = run_sweeper(ini, "--once", "--batch", "5")
            seen = wait_for_events(store, sweeper, at_least=100)
            server.kill()  # kill -9, while the sweeper ends sessions and tells them
            out, log = sweeper.communicate(timeout=60)
            assert sweeper.returncode == 1, (out, log)
            assert "the session store cannot be reached" in log
            first = ended_lines(log)
            server.restart()  # from its append-only file

            # Every step answered before the kill is in the file (fsynced before the
            # answer); each session is ended with its event or still open and due.
            entries = stream_entries(store)
            ended_keys = {entry["key"] for entry in entries}
            assert seen <= len(entries) < SESSIONS
            assert len(ended_keys) == len(entries)
            assert set(first) <= {key[:12] for key in ended_keys}
            assert due(store) == still_open(store, keys) == SESSIONS - len(entries)
            left_pending = sum(pending(store).values())
            assert len(entries) - len(set(first)) <= left_pending <= len(entries)

            sweeper = run_sweeper(ini, "--once")
            out, log = sweeper.communicate(timeout=60)
            assert sweeper.returncode == 0, log
            left = SESSIONS - len(entries)
            assert f"ended={left} (idle_timeout={left}) notified={left} " in out
            second = ended_lines(log)

            store.claim_after = 0  # the killed sweeper's claim time, passed
            assert store.notify_pending() == left_pending
            claimed = [event.session_key[:12] for event in told]

            entries = stream_entries(store)
            assert len(entries) == SESSIONS and {entry["key"] for entry in entries} == set(keys)
            assert pending(store) == {}
            assert (due(store), still_open(store, keys), indexed(store)) == (0, 0, 0)
            assert not set(first) & set(second) and not set(second) & set(claimed)
            assert set(first) | set(second) | set(claimed) == {key[:12] for key in keys}
        finally:
            store.close()
