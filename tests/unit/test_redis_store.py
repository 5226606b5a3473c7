"""What the Redis store does beyond the store contract (which runs on it, in test_stores and
test_store_reports): what is at rest, round trips and writes counted on the server, the key
layout on a cluster's slots, notifications at least once through the stream's consumer group
when a process dies, the per-user index, and a Redis that goes away and comes back.

Everything runs against real ``redis-server`` processes the suite starts itself.
"""
from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict
from itertools import chain

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from session_expiry.clock import FrozenClock
from session_expiry.decision import END_REASONS
from session_expiry.stores import StoreUnavailable, session_key
from session_expiry.stores.memory import MemoryStore
from session_expiry.stores.readmodel import HOUR, WINDOW, EndsQuery, hours_ago, length_bucket
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.redis.layout import GROUP, PARTITIONS, SLOTS, TAGS, Layout
from session_expiry.stores.redis.lifecycle import tombstone_of
from session_expiry.stores.redis.reports import end_counts, fold_tallies
from tests.conftest import clear_redis
from tests.redis_server import RedisServer
from tests.unit.test_stores import IDLE, KEY, KEY2, POLICY, RETENTION, T0, Crash, Ends

#: Redis commands that change data (as ``INFO commandstats`` names them, counting those a
#: script runs as well).
WRITES = {"hset", "hdel", "hincrby", "del", "expire", "zadd", "zrem", "zremrangebyscore",
          "xadd", "xack", "xtrim", "xgroup|create", "sadd", "srem", "set"}


@pytest.fixture
def url(redis_server) -> str:
    clear_redis(redis_server.url)
    return redis_server.url


@pytest.fixture
def make(url):
    built = []

    def build(on_end=None, policy=POLICY, **options) -> RedisStore:
        store = RedisStore(options.pop("at", url), policy, FrozenClock(T0),
                           on_end=on_end or (lambda event: None), **options)
        built.append(store)
        return store

    yield build
    for store in built:
        store.close()


@pytest.fixture
def ends() -> Ends:
    return Ends()


@pytest.fixture
def store(make, ends) -> RedisStore:
    return make(on_end=ends)


def commands(server) -> Counter:
    """Calls per command since the server started (``INFO commandstats``)."""
    stats = server.client().info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): value["calls"]
                    for name, value in stats.items()})


def counted(server, action) -> Counter:
    """The commands the server ran for ``action()`` (less the ``INFO`` that counts them)."""
    before = commands(server)
    action()
    after = commands(server)
    after.subtract(before)
    for housekeeping in ("info", "hello", "client|setinfo"):  # the counting client's own
        after[housekeeping] = 0
    return +after


def pending(store) -> int:
    """Events delivered and not acknowledged, in every partition."""
    client = store.redis.client
    return sum(client.xpending(partition.events, GROUP)["pending"]
               for partition in store.layout.partitions if client.exists(partition.events))


def stream_entries(store) -> list[dict]:
    client = store.redis.client
    return [fields for partition in store.layout.partitions
            for _, fields in client.xrange(partition.events)]


# -- at rest ---------------------------------------------------------------------------------

def test_at_rest_the_data_is_readable_json_under_the_sha256_of_the_id(store, redis_server):
    key = session_key("the-raw-session-id")
    store.open(key, "42", T0, ip="10.0.0.1", user_agent="pytest")
    store.save_data(key, {"cart": [1, 2], "name": "Zoë"})
    client = redis_server.client()
    names = list(client.scan_iter(count=1000))
    assert not [name for name in names if "the-raw-session-id" in name], "no raw id at rest"
    assert not [name for name in names if "42" in name.split(":")[-1]], "no user id in a name"
    fields = client.hgetall(store.layout.partition(key).session(key))
    assert json.loads(fields["d"]) == {"cart": [1, 2], "name": "Zoë"}
    assert fields["u"] == "42" and fields["c"] == str(T0)
    assert set(fields) == {"u", "c", "l", "i", "a", "ip", "ua", "d", "v"}


def test_an_ended_session_keeps_a_tombstone_without_data(store, redis_server):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "gone"})
    store.end(KEY, "logged_out", T0 + 5)
    fields = redis_server.client().hgetall(store.layout.partition(KEY).session(KEY))
    assert "d" not in fields and "v" not in fields
    assert (fields["e"], fields["r"]) == (str(T0 + 5), "logged_out")


def test_every_key_the_store_writes_expires_some_day(store, redis_server):
    """Key expiry is a safety net for a deployment that stopped sweeping, never the source of
    an event: long after the session's end or its tombstone's retention."""
    store.open(KEY, "42", T0)
    store.open(KEY2, "43", T0)
    store.end(KEY2, "logged_out", T0 + 5)
    client = redis_server.client()
    open_ttl = client.ttl(store.layout.partition(KEY).session(KEY))
    tombstone_ttl = client.ttl(store.layout.partition(KEY2).session(KEY2))
    assert open_ttl > POLICY.absolute_timeout + RETENTION
    assert RETENTION < tombstone_ttl < open_ttl


# -- round trips and writes ------------------------------------------------------------------

def test_a_request_that_reads_its_session_makes_one_round_trip_and_no_write(
        store, redis_server):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})

    def read():
        assert store.get(KEY).is_open
        assert store.load_data(KEY).values() == {"a": 1}

    assert counted(redis_server, read) == Counter({"hgetall": 1})


def test_a_touch_not_due_writes_nothing_and_a_due_one_is_one_script(store, redis_server):
    store.open(KEY, "42", T0)
    store.touch(KEY, T0 + 100, interval=120)  # warms the script cache
    not_due = counted(redis_server, lambda: store.touch(KEY, T0 + 110, interval=120))
    assert not_due["evalsha"] == 1 and not set(not_due) & WRITES, not_due
    assert store.get(KEY).last_seen == T0, "nothing moved"
    due = counted(redis_server, lambda: store.touch(KEY, T0 + 130, interval=120))
    assert due["evalsha"] == 1 and set(due) & WRITES == {"hset", "zadd"}, due
    assert store.get(KEY).last_seen == T0 + 130


def test_saving_unchanged_data_sends_no_write(store, redis_server):
    store.open(KEY, "42", T0)
    loaded = store.load_data(KEY)
    assert counted(redis_server, lambda: store.save_data(KEY, {}, base=loaded)) \
        == Counter({"hexists": 1})


# -- the summary's tallies ------------------------------------------------------------------

ENDS = st.lists(st.tuples(st.integers(T0 - 2 * WINDOW, T0 + 2 * HOUR),
                          st.integers(0, 10 * HOUR), st.sampled_from(list(map(str, END_REASONS)))),
                max_size=60)


@given(ENDS, st.integers(T0 - HOUR, T0 + HOUR))
def test_the_hourly_tallies_fold_into_what_each_end_counts_for(ends, now):
    """``fold_tallies`` of the tallies the ending script writes (per hour and reason,
    ``<second of the hour> <duration> ``), then ``end_counts``, give every end after
    ``since`` its column, reason and length bucket, and its length: what the memory store
    counts end by end."""
    since = now - WINDOW
    texts: dict = {}
    for at, duration, reason in ends:
        hour = at // HOUR
        texts[hour, reason] = texts.get((hour, reason), "") + f"{at - hour * HOUR} {duration} "
    tallies = [part for (hour, reason), text in texts.items() for part in (hour, reason, text)]
    columns: defaultdict = defaultdict(list)
    fold_tallies(now, since, tallies, columns)
    kept = [(at, duration, reason) for at, duration, reason in ends if at > since]
    assert Counter({(row.hours_ago, row.reason, row.bucket): row.count
                    for row in end_counts(columns)}) \
        == Counter((hours_ago(at, now), reason, length_bucket(duration))
                   for at, duration, reason in kept)
    assert sorted(chain.from_iterable(columns.values())) \
        == sorted(duration for _, duration, _ in kept)


def test_the_summary_from_tallies_is_the_memory_stores_end_by_end_count(make):
    """The same sessions opened and ended on the memory store and on Redis, over 32 hours
    around the report's clock (ends after its hour too): the same summary, whatever the
    clock's second of the hour."""
    rng = random.Random(23)
    redis_store, memory = make(), MemoryStore(POLICY, FrozenClock(T0))
    reasons = ["logged_out", "revoked", "ended_by_user", "reauth_failed"]
    for i in range(400):
        opened = T0 - 30 * HOUR + rng.randrange(32 * HOUR)
        key = session_key(f"tallied-{i}")
        for store in (redis_store, memory):
            store.open(key, str(i % 7), opened)
        if i % 5:  # four in five end, within their idle timeout
            reason, at = rng.choice(reasons), opened + rng.randrange(IDLE)
            for store in (redis_store, memory):
                store.end(key, reason, at)
    for now in (T0, T0 + 1234, T0 - 777, T0 + HOUR - 1):
        assert redis_store.summary(now) == memory.summary(now)


# -- the layout on a cluster -------------------------------------------------------------------

def test_each_partitions_keys_share_one_slot_and_a_session_key_names_its_partition():
    layout = Layout()
    for name in ("a", "b", "c", "d"):
        key = session_key(name)
        partition = layout.partition(key)
        slots = {key_slot(name.encode()) for name in (
            partition.base, partition.session(key), partition.due, partition.ended,
            partition.events, partition.base + "seen", partition.base + "started")}
        assert len(slots) == 1
        assert layout.partition(key) is partition, "the same key, the same partition"


def test_the_partitions_fall_evenly_over_the_slot_space():
    """A cluster's masters own contiguous slot ranges: each gets its share of partitions."""
    slots = [key_slot(tag.encode()) for tag in TAGS]
    assert [slot * PARTITIONS // SLOTS for slot in slots] == list(range(PARTITIONS))
    for masters in (2, 3, 5):
        per_master = Counter(slot * masters // SLOTS for slot in slots)
        assert len(per_master) == masters
        assert max(per_master.values()) - min(per_master.values()) <= 1, per_master


def test_on_a_cluster_the_partitions_spread_over_every_master(redis_cluster):
    clear_redis(redis_cluster.url)
    store = RedisStore(redis_cluster.url, POLICY, FrozenClock(T0))
    try:
        assert store.redis.clustered
        keys = [session_key(f"spread-{i}") for i in range(200)]
        for key in keys:
            store.open(key, "1", T0)
        holding = [server.dbsize() for server in store.redis.primaries()]
        assert len(holding) == 3 and min(holding) > 0, holding
        assert sum(record.is_open for record in store.records()) == 200
    finally:
        store.close()


# -- notifications: at least once, through the consumer group -------------------------------------

def test_an_end_is_acknowledged_once_its_subscribers_heard_of_it(store, ends):
    store.open(KEY, "42", T0)
    store.end(KEY, "logged_out", T0 + 5)
    assert [event.session_key for event in ends.events] == [KEY]
    assert pending(store) == 0
    [entry] = stream_entries(store)
    assert entry == {"key": KEY, "user": "42", "reason": "logged_out", "at": str(T0 + 5),
                     "duration": "5"}


def test_a_process_that_dies_while_notifying_leaves_the_event_to_a_sweeper(make, ends):
    def dies(event):
        raise Crash

    dying = make(on_end=dies)
    dying.open(KEY, "42", T0)
    with pytest.raises(Crash):
        dying.end(KEY, "logged_out", T0 + 5)
    assert pending(dying) == 1, "delivered to the dead process, not acknowledged"

    sweeper = make(on_end=ends)
    assert sweeper.sweep(T0 + 10).notified == 0, "a live process's event is not taken at once"
    sweeper.claim_after = 0  # the dead process's lease is over
    result = sweeper.sweep(T0 + 10)
    assert result.notified == 1 and result.total_ended == 0
    assert [(event.session_key, event.reason) for event in ends.events] == [(KEY, "logged_out")]
    assert pending(sweeper) == 0
    assert sweeper.sweep(T0 + 10).notified == 0, "told once more, then never again"


def test_a_sweep_that_dies_while_notifying_leaves_every_end_to_be_told_once_more(make, ends):
    sent = []

    def dies_on_the_second(event):
        sent.append(event.session_key)
        if len(sent) == 2:
            raise Crash

    keys = [session_key(f"crash-{i}") for i in range(6)]
    dying = make(on_end=dies_on_the_second)
    for key in keys:
        dying.open(key, "42", T0)
    with pytest.raises(Crash):
        dying.sweep(T0 + IDLE)
    ended_by_the_dead = len(stream_entries(dying))
    assert 0 < pending(dying) <= ended_by_the_dead < len(keys) + 1

    sweeper = make(on_end=ends)
    sweeper.claim_after = 0
    result = sweeper.sweep(T0 + IDLE)
    assert set(sent) | set(ends.keys) == set(keys), "every end told at least once"
    assert len(ends.keys) == len(set(ends.keys)), "the sweeper told each once"
    assert result.total_ended == len(keys) - ended_by_the_dead
    assert pending(sweeper) == 0
    assert len(stream_entries(sweeper)) == len(keys), "exactly one event per session"


def test_the_ending_script_moves_the_session_from_its_users_index_in_the_same_step(
        make, ends, redis_server):
    """A user's index lives in the slot of each of their sessions: the script that ends one
    takes it out of the user's open sessions and files it under the user's ends, atomically,
    so a process killed right after the script leaves no ended session in the index; only
    the notification waits for a sweeper."""
    store = make(on_end=ends)
    store.open(KEY, "7", T0)
    store.open(KEY2, "7", T0)
    partition = store.layout.partition(KEY)
    client = redis_server.client()
    assert client.smembers(partition.user("7")) == {KEY}
    # The ending script alone, as a process killed right after it would leave it.
    row = store.redis.run("end", [partition.base],
                          [KEY, "revoked", T0 + 5, "killed-process", store._keep])
    assert tombstone_of(row)[1].end_reason == "revoked"
    assert client.smembers(partition.user("7")) == set(), "no ended session in the index"
    assert client.zrange(partition.user_ended("7"), 0, -1) == [f"{KEY}:revoked:5:7"]
    assert [record.key for record in store.user_sessions("7", T0 + 6)] == [KEY2]
    assert [event.session_key for event in store.recent_ends(EndsQuery(user_id="7")).rows] \
        == [KEY]
    assert [record.key for record in store.end_user_sessions("7", "revoked", T0 + 6)] == [KEY2]
    assert ends.keys == [KEY2]

    store.claim_after = 0
    assert store.sweep(T0 + 7).notified == 1, "the dead process's notification, told again"
    assert sorted(ends.keys) == sorted([KEY, KEY2])
    assert store.user_sessions("7", T0 + 8) == []
    assert pending(store) == 0


def test_the_users_ends_are_pruned_with_their_tombstones(make, redis_server):
    store = make()
    store.open(KEY, "7", T0)
    store.end(KEY, "logged_out", T0 + 1)
    partition = store.layout.partition(KEY)
    client = redis_server.client()
    store.prune(T0 + 1 + POLICY.retention - 1)
    assert client.zcard(partition.user_ended("7")) == 1, "kept for retention"
    store.prune(T0 + 1 + POLICY.retention)
    assert client.exists(partition.user_ended("7"), partition.session(KEY)) == 0
    assert store.recent_ends(EndsQuery(user_id="7")).rows == []


def test_the_stream_keeps_what_is_not_acknowledged_past_retention(make, ends, redis_server):
    def dies(event):
        raise Crash

    dying = make(on_end=dies)
    dying.open(KEY, "42", T0)
    with pytest.raises(Crash):
        dying.end(KEY, "logged_out", T0)
    store = make(on_end=ends, policy=POLICY.__class__(**{**POLICY.__dict__, "retention": 0}))
    store.prune(T0 + 10)
    assert len(stream_entries(store)) == 1, "pending: kept however old"
    store.claim_after = 0
    store.notify_pending()
    store.prune(T0 + 10)
    assert stream_entries(store) == [], "acknowledged and past retention: trimmed"
    assert ends.keys == [KEY]


# -- Redis goes away and comes back ------------------------------------------------------------

@pytest.fixture
def own_server():
    with RedisServer() as server:
        yield server


def test_a_redis_that_is_down_is_store_unavailable_soon_and_back_without_a_restart(
        own_server, make, ends):
    store = make(on_end=ends, at=own_server.url)
    store.open(KEY, "42", T0)
    own_server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"^Redis: .*refused"):
        store.get(KEY)
    assert time.monotonic() - started < 5, "a 503 soon, not a hung request"
    for call in (lambda: store.touch(KEY, T0 + 1), lambda: store.end(KEY, "revoked", T0 + 1),
                 lambda: store.sweep(T0 + 1), lambda: store.summary(T0 + 1)):
        with pytest.raises(StoreUnavailable):
            call()
    own_server.restart()  # empty: no AOF; the same store object goes on
    assert store.get(KEY) is None
    store.open(KEY2, "42", T0)
    assert store.end(KEY2, "logged_out", T0 + 1).end_reason == "logged_out"
    assert ends.keys == [KEY2]


def test_a_store_made_while_redis_is_down_works_once_it_is_up(own_server, make):
    own_server.kill()
    store = make(at=own_server.url)
    with pytest.raises(StoreUnavailable):
        store.get(KEY)
    own_server.restart()
    store.open(KEY, "42", T0)
    assert store.get(KEY).is_open


def test_a_full_redis_refuses_new_sessions_and_data_with_a_503_but_still_ends_them(
        own_server, make, ends):
    """``noeviction`` and ``maxmemory`` reached: opening a session or writing its data is
    refused before the script changes anything (a 503, not a 500); ending one goes on, and
    is told (its first write frees memory, and a script that began writing is never cut
    short)."""
    store = make(on_end=ends, at=own_server.url)
    store.open(KEY, "42", T0)
    client = own_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # a byte: whatever it holds, it is full
    with pytest.raises(StoreUnavailable, match="maxmemory"):
        store.open(KEY2, "42", T0)
    with pytest.raises(StoreUnavailable, match="maxmemory"):
        store.save_data(KEY, {"a": 1})
    assert store.get(KEY2) is None
    assert store.load_data(KEY).values() == {}
    assert store.end(KEY, "logged_out", T0 + 1).end_reason == "logged_out"
    assert ends.keys == [KEY] and pending(store) == 0
    assert store.get(KEY).end_reason == "logged_out"
    assert store.user_sessions("42", T0 + 2) == []
    client.config_set("maxmemory", 0)  # room again
    store.open(KEY2, "42", T0 + 2)
    assert [record.key for record in store.user_sessions("42", T0 + 2)] == [KEY2]


def test_a_unix_socket_url_reaches_the_same_server(own_server, make):
    store = make(at=own_server.unix_url)
    store.open(KEY, "42", T0)
    assert make(at=own_server.url).get(KEY) == store.get(KEY)
    assert re.fullmatch(r"unix://.+\.sock", own_server.unix_url)


def test_the_sweep_forgets_consumers_of_processes_long_gone_but_not_their_pending_events(
        make, monkeypatch):
    from session_expiry.stores.redis import sweeping

    def dies(event):
        raise Crash

    gone, dead = make(), make(on_end=dies)
    gone.open(KEY, "42", T0)
    gone.end(KEY, "logged_out", T0 + 1)
    dead.open(KEY2, "43", T0)
    with pytest.raises(Crash):
        dead.end(KEY2, "logged_out", T0 + 1)
    monkeypatch.setattr(sweeping, "FORGET_CONSUMER_AFTER", 0)
    time.sleep(0.01)  # idle for longer than nothing
    gone.prune(T0 + 2)
    client = gone.redis.client
    consumers = {consumer["name"] for partition in gone.layout.partitions
                 if client.exists(partition.events)
                 for consumer in client.xinfo_consumers(partition.events, GROUP)}
    assert consumers == {dead.consumer}, "the one with an event pending stays"


def test_a_sweep_works_in_batches_per_partition_and_tells_its_progress(store, ends):
    keys = [session_key(f"batch-{i}") for i in range(40)]
    for key in keys:
        store.open(key, "1", T0)
    looked = []
    result = store.sweep(T0 + IDLE, batch=2, progress=lambda done, due: looked.append((done, due)))
    assert result.total_ended == result.notified == 40
    assert sorted(ends.keys) == sorted(keys)
    assert looked[-1] == (40, 40)
    assert [done for done, _ in looked] == sorted({done for done, _ in looked}), "onwards"
    assert {due for _, due in looked} == {40}
    assert len(looked) > PARTITIONS // 2, "a batch at a time, not a partition"


def test_a_users_ends_come_from_their_own_index_filled_once_by_the_ending_script(make, ends):
    store = make(on_end=ends)
    for name, user in (("a", "7"), ("b", "8"), ("c", "7")):
        store.open(session_key(name), user, T0)
    store.end(session_key("a"), "logged_out", T0 + 10)
    store.end(session_key("b"), "logged_out", T0 + 11)
    # "c" ended by a process killed before it told anyone.
    store.redis.run("end", [store.layout.partition(session_key("c")).base],
                    [session_key("c"), "revoked", T0 + 12, "killed-process", store._keep])

    def ends_of(user, reason=None):
        page = store.recent_ends(EndsQuery(user_id=user, reason=reason))
        return [(event.session_key, event.reason) for event in page.rows]

    both = [(session_key("c"), "revoked"), (session_key("a"), "logged_out")]
    assert ends_of("7") == both, "filed by the script, told or not"
    assert ends_of("7", "revoked") == [(session_key("c"), "revoked")]
    assert ends_of("8") == [(session_key("b"), "logged_out")]
    store.claim_after = 0
    store.sweep(T0 + 13)
    event = next(event for event in ends.events if event.session_key == session_key("c"))
    store._notify(store.layout.partition(event.session_key).events, [("0-1", event)])
    assert ends_of("7") == both, "told twice, filed once"


def test_a_password_try_that_cannot_be_counted_is_refused_not_let_through(store, monkeypatch):
    """Another app server changes the failures under every claim (as if): after so many
    lost claims the try is a 503, never an uncounted try."""
    from session_expiry.throttle import keys_for

    keys = keys_for(POLICY, account="alice", address="192.0.2.8")
    assert store.claim_try(keys, T0).allowed
    monkeypatch.setattr(store, "_swap", lambda read, written: False)
    with pytest.raises(StoreUnavailable, match="could not be counted"):
        store.claim_try(keys, T0 + 1)
    monkeypatch.undo()
    assert store.claim_try(keys, T0 + 2).counts[keys[0].name] == 2, "the lost one not counted"
