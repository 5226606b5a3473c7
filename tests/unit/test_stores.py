"""The store contract: every store keeps one record per session, ends it exactly once,
never brings it back, merges concurrent writes by key, and reports the same events.

The contract runs against the memory store, the SQL store on a fresh migrated SQLite
file, and the SQL store on a real PostgreSQL. The SQL-only part at the end checks
what is at rest (JSON, hashed keys, UTC), the event rows, the outbox and the sweeper.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from session_expiry.clock import FrozenClock
from session_expiry.events import SessionEnded
from session_expiry.settings import RANGES, Policy, load
from session_expiry.stores import EMPTY, SessionData, StoreUnavailable, SweepResult, session_key
from session_expiry.stores.beaker import JudgedSession
from session_expiry.stores.memory import MemoryStore
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.sql import (
    SqlStore,
    engine_for,
    session_events,
    session_outbox,
    sessions,
)
from session_expiry.stores.sql.sweeping import TAKE_SWEPT, take_claimed
from session_expiry.throttle import keys_for
from tests.conftest import clear_redis, clear_sessions, migrate
from tests.postgres import free_port

T0 = 1_800_000_000  # 2027-01-15 08:00:00 UTC
T0_UTC = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)
IDLE = 1200
ABSOLUTE = 3600
RETENTION = 86400
POLICY = Policy(idle_timeout=IDLE, absolute_timeout=ABSOLUTE, warn_before=120,
                touch_interval=120, retention=RETENTION, secret="x" * 40)
KEY = session_key("session-one")
KEY2 = session_key("session-two")

KINDS = ("memory", "sqlite", "postgresql", "redis", "redis-cluster")
SQL_KINDS = ("sqlite", "postgresql")
REDIS_KINDS = ("redis", "redis-cluster")
#: The stores a farm shares (a request's read cached for its ``load_data``, a sweeper).
SHARED_KINDS = SQL_KINDS + REDIS_KINDS
MERGE_LOGGER = "session_expiry.stores"


# -- fixtures -----------------------------------------------------------------------------------

class Ends:
    """An ``on_end`` that records every ``SessionEnded`` (thread-safe)."""

    def __init__(self):
        self._events: list[SessionEnded] = []
        self._lock = threading.Lock()
        self.event = threading.Event()

    def __call__(self, event: SessionEnded):
        with self._lock:
            self._events.append(event)
        self.event.set()

    @property
    def events(self) -> list[SessionEnded]:
        with self._lock:
            return list(self._events)

    @property
    def keys(self) -> list[str]:
        return [event.session_key for event in self.events]

    def since(self, count: int) -> list[SessionEnded]:
        return self.events[count:]


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory):
    """One migrated SQLite file; each test gets a fresh copy of it."""
    path = tmp_path_factory.mktemp("stores") / "template.sqlite"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def postgres_url(postgres) -> str:
    """One migrated PostgreSQL database for this module."""
    url = postgres.create_database("unit_stores")
    migrate(url)
    return url


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def url(kind, request, tmp_path) -> str | None:
    """The database of this test's store, with no sessions in it (None for memory)."""
    if kind == "memory":
        return None
    if kind == "sqlite":
        path = tmp_path / "sessions.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    if kind in REDIS_KINDS:
        return redis_url(kind, request)
    url = request.getfixturevalue("postgres_url")
    clear_sessions(url)
    return url


def redis_url(kind, request) -> str:
    """The test run's Redis server (``redis``) or cluster (``redis-cluster``), emptied."""
    url = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster").url
    clear_redis(url)
    return url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def ends() -> Ends:
    return Ends()


class Stores:
    """Builds stores of this test's kind on this test's database; closes them afterwards."""

    def __init__(self, kind, url, clock):
        self.kind, self.url, self.clock = kind, url, clock
        self.built = []

    def __call__(self, on_end=None, policy=POLICY, engine=None):
        on_end = on_end or (lambda event: None)
        if self.kind == "memory":
            store = MemoryStore(policy, self.clock, on_end=on_end)
        elif self.kind in REDIS_KINDS:
            store = RedisStore(self.url, policy, self.clock, on_end=on_end)
        else:
            store = SqlStore(engine or engine_for(self.url), policy, self.clock, on_end=on_end)
        self.built.append(store)
        return store

    def close(self):
        for store in self.built:
            store.close()


@pytest.fixture
def make(kind, url, clock):
    stores = Stores(kind, url, clock)
    yield stores
    stores.close()


@pytest.fixture
def store(make, ends):
    return make(on_end=ends)


# -- helpers ----------------------------------------------------------------------------------

def values(store, key=KEY):
    """The values of an open session's data, or None."""
    data = store.load_data(key)
    return None if data is None else data.values()


def sweep(store, ends: Ends, now: int) -> list[SessionEnded]:
    """Sweep, and return the events the sweep fired (checked against what it returned)."""
    before = len(ends.events)
    result = store.sweep(now)
    fired = ends.since(before)
    if isinstance(result, SweepResult):
        assert result.ended == Counter(event.reason for event in fired)
        assert result.notified == len(fired)
    else:
        assert result == fired
    return fired


def eventually(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def raw(store, sql: str, **params) -> list:
    """Rows of a raw SQL query on the store's database."""
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def merge_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == MERGE_LOGGER and record.levelno == logging.WARNING]


# == the contract: every store =================================================================

# -- open, read, write ----------------------------------------------------------------------

def test_open_creates_an_open_record_with_both_deadlines(store):
    record = store.open(KEY, 42, T0, ip="10.0.0.1", user_agent="pytest")
    assert record.key == KEY
    assert record.user_id == "42"
    assert record.created == record.last_seen == T0
    assert record.idle_deadline == T0 + IDLE
    assert record.absolute_deadline == T0 + ABSOLUTE
    assert record.is_open and record.ended_at is None and record.end_reason is None
    assert (record.ip, record.user_agent) == ("10.0.0.1", "pytest")
    assert store.get(KEY) == record


def test_new_session_has_empty_data_at_version_zero(store):
    store.open(KEY, "42", T0)
    assert store.load_data(KEY) == SessionData.of({}, 0)


def test_saved_data_loads_back(store):
    store.open(KEY, "42", T0)
    data = {"cart": [1, 2, 3], "name": "Zoë ✓", "nested": {"a": None, "b": True, "c": 1.5}}
    assert store.save_data(KEY, data) is True
    assert values(store) == data


def test_a_save_from_the_loaded_data_replaces_it(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    loaded = store.load_data(KEY)
    assert store.save_data(KEY, {"b": 2}, base=loaded) is True
    assert values(store) == {"b": 2}, "the key this request removed stays removed"


def test_each_write_moves_the_version_on(store):
    store.open(KEY, "42", T0)
    first = store.load_data(KEY)
    store.save_data(KEY, {"a": 1}, base=first)
    second = store.load_data(KEY)
    store.save_data(KEY, {"a": 2}, base=second)
    third = store.load_data(KEY)
    assert first.version < second.version < third.version
    assert third.values() == {"a": 2}


def test_unknown_key_is_unknown_everywhere(store, ends):
    assert store.get("nope") is None
    assert store.load_data("nope") is None
    assert store.save_data("nope", {"a": 1}) is False
    assert store.get("nope") is None, "saving must not create an entry"
    assert store.touch("nope", T0) is None
    assert store.end("nope", "logged_out", T0) is None
    assert ends.events == []


def test_sessions_are_kept_apart(store):
    store.open(KEY, "1", T0)
    store.open(KEY2, "2", T0)
    store.save_data(KEY, {"who": "one"})
    store.save_data(KEY2, {"who": "two"})
    store.end(KEY2, "logged_out", T0)
    assert values(store, KEY) == {"who": "one"}
    assert store.get(KEY).is_open
    assert store.load_data(KEY2) is None


def test_mutating_a_loaded_dict_does_not_change_the_store(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"items": [1], "n": 1})
    loaded = values(store)
    loaded["items"].append(2)
    loaded["n"] = 99
    loaded["new"] = True
    assert values(store) == {"items": [1], "n": 1}


def test_mutating_a_saved_dict_afterwards_does_not_change_the_store(store):
    store.open(KEY, "42", T0)
    data = {"items": [1]}
    store.save_data(KEY, data)
    data["items"].append(2)
    data["later"] = 1
    assert values(store) == {"items": [1]}


def test_two_loads_do_not_share_objects(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"items": [1]})
    first, second = values(store), values(store)
    assert first == second and first is not second
    assert first["items"] is not second["items"]


def test_unserialisable_data_is_refused_with_a_type_error_and_leaves_the_data(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    loaded = store.load_data(KEY)
    with pytest.raises(TypeError):
        store.save_data(KEY, {"when": object()}, base=loaded)
    assert store.load_data(KEY) == loaded


# -- touch ---------------------------------------------------------------------------------

def test_touch_moves_idle_deadline_to_now_plus_idle_timeout(store):
    store.open(KEY, "42", T0)
    touched = store.touch(KEY, T0 + 500)
    assert touched.last_seen == T0 + 500
    assert touched.idle_deadline == T0 + 500 + IDLE
    assert touched.absolute_deadline == T0 + ABSOLUTE, "touch never moves the absolute deadline"
    assert touched.created == T0
    assert store.get(KEY) == touched


def test_touch_keeps_the_data(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    store.touch(KEY, T0 + 10)
    assert values(store) == {"a": 1}


def test_touch_never_moves_a_deadline_back(store):
    store.open(KEY, "42", T0)
    store.touch(KEY, T0 + 200)
    late = store.touch(KEY, T0 + 100)  # a request that started earlier finishes later
    assert late.last_seen == T0 + 200
    assert late.idle_deadline == T0 + 200 + IDLE
    assert store.get(KEY) == late


def test_of_requests_that_found_the_same_touch_due_one_writes_it(store):
    """A page's parallel requests all find the touch due; the first writes it, the rest
    get the record it wrote (at most one write per ``touch_interval``)."""
    store.open(KEY, "42", T0)
    first = store.touch(KEY, T0 + 130, interval=120)
    alongside = store.touch(KEY, T0 + 131, interval=120)
    assert first.last_seen == T0 + 130 and first.idle_deadline == T0 + 130 + IDLE
    assert alongside == first == store.get(KEY)
    later = store.touch(KEY, T0 + 250, interval=120)
    assert later.last_seen == T0 + 250 and later.idle_deadline == T0 + 250 + IDLE


def test_a_touch_not_due_of_a_session_no_longer_open_returns_none(store):
    store.open(KEY, "42", T0)
    store.touch(KEY, T0 + 130, interval=120)
    store.end(KEY, "logged_out", T0 + 131)
    assert store.touch(KEY, T0 + 132, interval=120) is None
    assert store.touch(KEY2, T0 + 132, interval=120) is None, "an unknown key"


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_touch_made_alongside_updates_no_row(store):
    store.open(KEY, "42", T0)
    # psycopg counts an UPDATE's rows when it runs (and forgets once the cursor is closed),
    # SQLite once they are fetched: keep both counts, take the one that is known.
    updates = []

    def count_updates(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append((cursor, cursor.rowcount))

    sa.event.listen(store.engine, "after_cursor_execute", count_updates)
    try:
        store.touch(KEY, T0 + 130, interval=120)
        store.touch(KEY, T0 + 131, interval=120)
        store.touch(KEY, T0 + 129)  # a request that started earlier
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", count_updates)
    assert [max(ran, cursor.rowcount) for cursor, ran in updates] == [1, 0, 0]


# -- end -------------------------------------------------------------------------------------

def test_end_returns_the_tombstone_and_reports_it_once(store, ends):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    tombstone = store.end(KEY, "logged_out", T0 + 30)
    assert tombstone is not None
    assert tombstone.ended_at == T0 + 30
    assert tombstone.end_reason == "logged_out"
    assert not tombstone.is_open
    assert ends.events == [SessionEnded(KEY, "42", "logged_out", T0 + 30, 30)]
    assert ends.events == [SessionEnded.of(tombstone)]


def test_second_end_returns_none_and_does_not_report_again(store, ends):
    store.open(KEY, "42", T0)
    first = store.end(KEY, "logged_out", T0 + 30)
    assert store.end(KEY, "revoked", T0 + 40) is None
    assert store.end(KEY, "idle_timeout", T0 + 5000) is None
    assert ends.events == [SessionEnded.of(first)]
    assert store.get(KEY).end_reason == "logged_out", "the first reason stays"
    assert store.get(KEY).ended_at == T0 + 30


@pytest.mark.parametrize("reason", ["logged_out", "revoked", "ended_by_user", "idle_timeout",
                                    "absolute_timeout"])
def test_tombstone_keeps_ended_at_and_reason(store, reason):
    store.open(KEY, "42", T0)
    store.end(KEY, reason, T0 + 7)
    tombstone = store.get(KEY)
    assert (tombstone.ended_at, tombstone.end_reason) == (T0 + 7, reason)
    assert tombstone.user_id == "42" and tombstone.created == T0


def test_ended_session_has_no_data(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    store.end(KEY, "revoked", T0 + 1)
    assert store.load_data(KEY) is None


def test_save_after_end_returns_false_and_never_resurrects(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    loaded = store.load_data(KEY)  # a request read the data ...
    store.end(KEY, "logged_out", T0 + 1)  # ... the user logged out in another tab ...
    assert store.save_data(KEY, {"a": 1, "back": "again"}, base=loaded) is False  # ... too late
    assert store.load_data(KEY) is None
    assert not store.get(KEY).is_open
    assert store.get(KEY).end_reason == "logged_out"


def test_save_after_sweep_returns_false_and_never_resurrects(store, ends):
    store.open(KEY, "42", T0)
    loaded = store.load_data(KEY)
    assert len(sweep(store, ends, T0 + IDLE)) == 1
    assert store.save_data(KEY, {"back": "again"}, base=loaded) is False
    assert store.load_data(KEY) is None
    assert store.get(KEY).end_reason == "idle_timeout"


@pytest.mark.parametrize("which", ["ended", "unknown"])
def test_save_of_unchanged_data_to_a_session_not_open_returns_false(store, which):
    """The protocol: False if the session is not open, even when there is nothing to write."""
    store.open(KEY, "42", T0)
    loaded = store.load_data(KEY)
    if which == "ended":
        store.end(KEY, "logged_out", T0 + 1)
        key = KEY
    else:
        key = "nope"
        loaded = EMPTY
    assert store.save_data(key, dict(loaded.values()), base=loaded) is False
    assert store.load_data(key) is None


def test_touch_after_end_returns_none_and_keeps_the_tombstone(store):
    store.open(KEY, "42", T0)
    tombstone = store.end(KEY, "logged_out", T0 + 1)
    assert store.touch(KEY, T0 + 2) is None
    assert store.get(KEY) == tombstone


def test_failing_on_end_subscriber_does_not_undo_the_end(make):
    def explode(event):
        raise RuntimeError("subscriber broke")

    store = make(on_end=explode)
    store.open(KEY, "42", T0)
    tombstone = store.end(KEY, "logged_out", T0 + 1)
    assert tombstone is not None and tombstone.end_reason == "logged_out"
    assert store.load_data(KEY) is None
    assert store.end(KEY, "revoked", T0 + 2) is None


def test_on_end_subscriber_can_read_the_store(make):
    """A subscriber may look at the tombstone (or write to the app's database) at once."""
    seen = []

    def look(event):
        try:
            seen.append(store.get(event.session_key))
        except Exception as error:
            seen.append(error)

    store = make(on_end=look)
    store.open(KEY, "42", T0)
    ender = threading.Thread(target=store.end, args=(KEY, "logged_out", T0 + 1), daemon=True)
    started = time.monotonic()
    ender.start()
    ender.join(timeout=3)
    assert not ender.is_alive(), "end() still blocked in the subscriber after 3 s"
    assert time.monotonic() - started < 1.0
    assert len(seen) == 1 and not isinstance(seen[0], Exception), seen
    assert seen[0].end_reason == "logged_out"


# -- sweep -----------------------------------------------------------------------------------

def test_sweep_before_any_deadline_ends_nothing(store, ends):
    store.open(KEY, "42", T0)
    assert sweep(store, ends, T0 + IDLE - 1) == []
    assert store.get(KEY).is_open


def test_sweep_ends_an_idle_session_at_its_idle_deadline(store, ends):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    swept = sweep(store, ends, T0 + IDLE)
    assert swept == [SessionEnded(KEY, "42", "idle_timeout", T0 + IDLE, IDLE)]
    assert store.load_data(KEY) is None
    assert store.get(KEY).end_reason == "idle_timeout"


def test_sweep_ends_an_active_session_at_its_absolute_deadline(store, ends):
    store.open(KEY, "42", T0)
    for t in range(T0 + 1000, T0 + ABSOLUTE, 1000):  # active all along
        store.touch(KEY, t)
        assert sweep(store, ends, t) == []
    swept = sweep(store, ends, T0 + ABSOLUTE)
    assert swept == [SessionEnded(KEY, "42", "absolute_timeout", T0 + ABSOLUTE, ABSOLUTE)]


def test_sweep_gives_each_session_its_own_reason(store, ends):
    store.open(KEY, "idle", T0)
    store.open(KEY2, "active", T0)
    store.touch(KEY2, T0 + 3000)  # idle deadline T0 + 4200, after the absolute one
    swept = sweep(store, ends, T0 + ABSOLUTE + 10)
    assert {event.session_key: event.reason for event in swept} == {
        KEY: "idle_timeout", KEY2: "absolute_timeout"}


def test_sweep_ignores_stale_deadlines_of_touched_sessions(store, ends):
    store.open(KEY, "42", T0)
    store.touch(KEY, T0 + 600)  # the sweeper still holds the old deadline T0 + IDLE
    assert sweep(store, ends, T0 + IDLE) == []
    assert sweep(store, ends, T0 + IDLE + 599) == []
    assert store.get(KEY).is_open
    swept = sweep(store, ends, T0 + 600 + IDLE)
    assert [(event.session_key, event.reason) for event in swept] == [(KEY, "idle_timeout")]


def test_sweep_does_not_end_a_session_ended_already(store, ends):
    store.open(KEY, "42", T0)
    store.end(KEY, "logged_out", T0 + 10)
    assert sweep(store, ends, T0 + ABSOLUTE + 10) == []
    assert [event.reason for event in ends.events] == ["logged_out"]
    assert store.get(KEY).end_reason == "logged_out"


def test_repeated_sweeps_end_each_session_once(store, ends):
    for i in range(5):
        store.open(session_key(f"s{i}"), str(i), T0)
    assert len(sweep(store, ends, T0 + IDLE)) == 5
    assert sweep(store, ends, T0 + IDLE + 1) == []
    assert sweep(store, ends, T0 + ABSOLUTE) == []
    assert len(ends.events) == 5


def test_sweep_prunes_tombstones_once_retention_has_passed(store, ends):
    store.open(KEY, "1", T0)
    store.open(KEY2, "2", T0)
    store.end(KEY, "logged_out", T0 + 10)
    store.end(KEY2, "logged_out", T0 + 500)
    sweep(store, ends, T0 + 10 + RETENTION - 1)
    assert store.get(KEY) is not None, "kept until retention has passed"
    sweep(store, ends, T0 + 10 + RETENTION + 1)
    assert store.get(KEY) is None
    assert store.get(KEY2) is not None, "a younger tombstone stays"
    assert store.get(KEY2).end_reason == "logged_out"
    sweep(store, ends, T0 + 500 + RETENTION + 1)
    assert store.get(KEY2) is None


def test_a_tombstone_is_pruned_exactly_when_retention_is_over(store, ends):
    """Both stores draw the retention line at the same second."""
    store.open(KEY, "1", T0)
    store.end(KEY, "logged_out", T0 + 10)
    sweep(store, ends, T0 + 10 + RETENTION)
    assert store.get(KEY) is None, "ended_at + retention <= now: pruned (as the memory store)"


def test_sweep_keeps_open_sessions_when_pruning(store, ends):
    store.open(KEY, "1", T0)
    store.end(KEY, "logged_out", T0)
    later = T0 + RETENTION + 5
    store.open(KEY2, "2", later)
    sweep(store, ends, later)
    assert store.get(KEY) is None
    assert store.get(KEY2) is not None and store.get(KEY2).is_open


def test_swept_session_keeps_a_tombstone_until_retention(store, ends):
    store.open(KEY, "1", T0)
    sweep(store, ends, T0 + IDLE)
    assert store.get(KEY).end_reason == "idle_timeout"
    sweep(store, ends, T0 + IDLE + RETENTION - 1)
    assert store.get(KEY).end_reason == "idle_timeout"
    sweep(store, ends, T0 + IDLE + RETENTION + 1)
    assert store.get(KEY) is None


def test_records_lists_open_sessions_and_tombstones(store):
    store.open(KEY, "1", T0)
    store.open(KEY2, "2", T0)
    store.end(KEY2, "revoked", T0 + 1)
    assert {(r.key, r.is_open) for r in store.records()} == {(KEY, True), (KEY2, False)}


# -- the sweep thread --------------------------------------------------------------------------

def test_sweep_thread_ends_an_overdue_session_by_itself_within_a_second(store, clock, ends):
    store.open(KEY, "42", T0)
    store.start(0.2)
    assert not ends.event.wait(0.25), "nothing is overdue yet"
    clock.advance(IDLE)
    passed = time.monotonic()
    assert ends.event.wait(2.0), "the sweep thread did not end the session"
    assert time.monotonic() - passed < 1.0
    assert ends.events == [SessionEnded(KEY, "42", "idle_timeout", T0 + IDLE, IDLE)]
    assert store.load_data(KEY) is None


@pytest.mark.parametrize("kind", ["memory"])
def test_memory_store_sweeps_by_itself_within_a_second_by_default(store, clock, ends):
    store.open(KEY, "42", T0)
    store.start()
    clock.advance(IDLE)
    passed = time.monotonic()
    assert ends.event.wait(2.0)
    assert time.monotonic() - passed < 1.0


def test_close_stops_the_sweep_thread(make):
    store = make()
    store.start(0.1)
    thread = store._sweeper._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
    assert store._sweeper is None


def test_sweep_thread_survives_a_failing_subscriber(make, clock):
    calls = []
    lock = threading.Lock()

    def flaky(event):
        with lock:
            calls.append(event.session_key)
            first = len(calls) == 1
        if first:
            raise RuntimeError("first report fails")

    store = make(on_end=flaky)
    store.open(KEY, "1", T0)
    store.start(0.1)
    clock.advance(IDLE)
    assert eventually(lambda: calls == [KEY])
    store.open(KEY2, "2", int(clock()))
    clock.advance(IDLE)
    assert eventually(lambda: calls == [KEY, KEY2]), \
        "the sweep thread stopped after a failing subscriber"
    assert store.get(KEY2).end_reason == "idle_timeout"


# -- races -------------------------------------------------------------------------------------

def race_ends_and_sweeps(store, keys, now, enders=5, sweepers=2, sweeps=10):
    """End ``keys`` from several threads while others sweep; what each caller learned."""
    ended_by_end, swept_counts = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(enders + sweepers)
    errors = []

    def ender(seed):
        order = keys[:]
        random.Random(seed).shuffle(order)
        barrier.wait()
        try:
            for key in order:
                record = store.end(key, "revoked", now)
                if record is not None:
                    with lock:
                        ended_by_end.append(record.key)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    def sweeper():
        barrier.wait()
        try:
            for _ in range(sweeps):
                result = store.sweep(now)
                count = result.total_ended if isinstance(result, SweepResult) else len(result)
                with lock:
                    swept_counts.append(count)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=ender, args=(seed,)) for seed in range(enders)]
    threads += [threading.Thread(target=sweeper) for _ in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    return ended_by_end, sum(swept_counts)


def test_concurrent_ends_and_sweeps_end_each_session_exactly_once(kind, store, clock, ends):
    count = 200 if kind == "memory" else 40
    keys = [session_key(f"race-{i}") for i in range(count)]
    for i, key in enumerate(keys):
        store.open(key, str(i), T0)
    now = int(clock.advance(IDLE + 1))
    ended_by_end, swept = race_ends_and_sweeps(store, keys, now)
    assert Counter(ends.keys) == Counter(dict.fromkeys(keys, 1)), "exactly one event each"
    assert len(ended_by_end) == len(set(ended_by_end))
    assert len(ended_by_end) + swept == count, "exactly one caller learns it ended each session"
    for key in keys:
        record = store.get(key)
        assert not record.is_open
        assert record.end_reason in ("revoked", "idle_timeout")
        assert store.load_data(key) is None


def test_concurrent_saves_and_end_never_resurrect(store, ends):
    store.open(KEY, "42", T0)
    stop = threading.Event()
    errors = []

    def writer(name):
        n = 0
        try:
            while not stop.is_set():
                loaded = store.load_data(KEY)
                if loaded is None:
                    return
                store.save_data(KEY, {**loaded.values(), name: n}, base=loaded)
                n += 1
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    store.end(KEY, "logged_out", T0 + 1)
    time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    assert errors == []
    assert store.load_data(KEY) is None
    assert store.save_data(KEY, {"n": -1}) is False
    assert not store.get(KEY).is_open
    assert len(ends.events) == 1


# -- merging concurrent writes of one session ----------------------------------------------------

def two_requests(store, initial: dict) -> tuple[SessionData, SessionData]:
    """Open a session holding ``initial`` and let two requests load it."""
    store.open(KEY, "42", T0)
    store.save_data(KEY, initial)
    first, second = store.load_data(KEY), store.load_data(KEY)
    assert first == second
    return first, second


def test_two_requests_changing_different_keys_both_keep_their_change(store, caplog):
    first, second = two_requests(store, {"a": 0, "b": 0, "keep": 1})
    with caplog.at_level(logging.WARNING, logger=MERGE_LOGGER):
        assert store.save_data(KEY, {**first.values(), "a": 1}, base=first) is True
        assert store.save_data(KEY, {**second.values(), "b": 2, "new": [2]}, base=second) is True
    assert values(store) == {"a": 1, "b": 2, "keep": 1, "new": [2]}
    assert merge_warnings(caplog) == [], "no conflict, nothing to warn about"
    assert store.load_data(KEY).version > second.version


def test_two_requests_changing_the_same_key_last_writer_wins_and_it_is_logged(store, caplog):
    first, second = two_requests(store, {"x": 0, "other": 1})
    with caplog.at_level(logging.WARNING, logger=MERGE_LOGGER):
        assert store.save_data(KEY, {**first.values(), "x": "first"}, base=first) is True
        assert store.save_data(KEY, {**second.values(), "x": "second"}, base=second) is True
    assert values(store) == {"x": "second", "other": 1}
    warnings = merge_warnings(caplog)
    assert len(warnings) == 1 and "'x'" in warnings[0], warnings
    assert KEY[:12] in warnings[0] and KEY not in warnings[0], "only a prefix of the key"


@pytest.mark.parametrize("deleter_first", [True, False], ids=["deleter-first", "deleter-last"])
def test_a_key_deleted_by_one_request_and_untouched_by_the_other_stays_deleted(
        store, deleter_first):
    first, second = two_requests(store, {"gone": "soon", "other": 0})
    deleting = (KEY, {"other": 0}, first)
    changing = (KEY, {"gone": "soon", "other": 1}, second)
    for key, new, base in ((deleting, changing) if deleter_first else (changing, deleting)):
        assert store.save_data(key, new, base=base) is True
    assert values(store) == {"other": 1}


def test_saving_unchanged_data_writes_nothing(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    loaded = store.load_data(KEY)
    assert store.save_data(KEY, {"a": 1}, base=loaded) is True
    assert store.load_data(KEY) == loaded, "version unchanged"


def test_a_request_that_changed_nothing_never_overwrites_another_ones_change(store, caplog):
    first, second = two_requests(store, {"a": 0})
    store.save_data(KEY, {"a": 1}, base=first)
    written = store.load_data(KEY)
    with caplog.at_level(logging.WARNING, logger=MERGE_LOGGER):
        assert store.save_data(KEY, dict(second.values()), base=second) is True
    assert store.load_data(KEY) == written
    assert merge_warnings(caplog) == []


@pytest.mark.parametrize("values", [
    {},
    {"greeting": "hello", "n": 1, "x": 1.5, "yes": True, "none": None},  # flat: kept decoded
    {"cart": [1, 2], "prefs": {"theme": "dark"}, "flat": "too"},  # nested: decoded each time
    {"long": "x" * 2000},  # longer than what is kept decoded
])
def test_session_data_values_are_fresh_for_every_caller(values):
    data = SessionData.of(values, 1)
    first, second = data.values(), data.values()
    assert first == second == values
    assert first is not second
    for name, value in first.items():
        if isinstance(value, (list, dict)):
            assert value is not second[name], name  # a nested value is not shared either
    first["added"] = True
    first.pop("greeting", None)
    if "cart" in first:
        first["cart"].append(3)
        first["prefs"]["theme"] = "light"
    assert data.values() == values, "what one caller changes, no other sees"
    assert SessionData.of(values, 1).values() == values


def test_loaded_values_are_the_requests_own_so_a_change_in_place_is_saved(store):
    """Pyramid's way to change a mutable value: change it in place, then ``changed()``.
    The base a save is measured from is the text as read, not the objects the request
    got: when it was those, the change looked like no change and was never written."""
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"cart": [1], "prefs": {"theme": "dark"}})
    loaded = store.load_data(KEY)
    mine = loaded.values()
    assert mine is not loaded.values() and mine["cart"] is not loaded.values()["cart"]
    mine["cart"].append(2)
    mine["prefs"]["theme"] = "light"
    assert store.save_data(KEY, mine, base=loaded) is True
    assert values(store) == {"cart": [1, 2], "prefs": {"theme": "light"}}
    assert store.load_data(KEY).version == loaded.version + 1


def test_a_change_in_place_is_merged_with_another_requests_change(store, caplog):
    first, second = two_requests(store, {"cart": [1], "b": 0})
    assert store.save_data(KEY, {**second.values(), "b": 2}, base=second) is True
    mine = first.values()
    mine["cart"].append(2)
    with caplog.at_level(logging.WARNING, logger=MERGE_LOGGER):
        assert store.save_data(KEY, mine, base=first) is True
    assert values(store) == {"cart": [1, 2], "b": 2}
    assert merge_warnings(caplog) == []


# -- the same events from every store -------------------------------------------------------------

def story_logout(store):
    store.open(KEY, "alice", T0)
    store.touch(KEY, T0 + 100)
    store.save_data(KEY, {"cart": [1]}, base=store.load_data(KEY))
    store.end(KEY, "logged_out", T0 + 300)


def story_revoke(store):
    store.open(KEY, "bob", T0)
    store.open(KEY2, "carol", T0 + 5)
    store.save_data(KEY, {"x": 1}, base=store.load_data(KEY))
    store.end(KEY, "revoked", T0 + 50)
    store.end(KEY2, "ended_by_user", T0 + 60)
    store.end(KEY, "logged_out", T0 + 70)  # too late: ended already


def story_idle(store):
    store.open(KEY, "alice", T0)
    store.touch(KEY, T0 + 500)
    store.save_data(KEY, {"draft": "text"}, base=store.load_data(KEY))
    store.sweep(T0 + 500 + IDLE - 1)
    store.sweep(T0 + 500 + IDLE)
    store.sweep(T0 + 500 + IDLE + 1)


def story_absolute(store):
    store.open(KEY, "alice", T0)
    store.open(KEY2, "bob", T0 + 100)
    for t in range(T0 + 900, T0 + ABSOLUTE, 900):
        store.touch(KEY, t)
        store.touch(KEY2, t)
        store.sweep(t)
    store.sweep(T0 + ABSOLUTE)
    store.sweep(T0 + ABSOLUTE + 100)


STORIES = {"logout": story_logout, "revoke": story_revoke, "idle": story_idle,
           "absolute": story_absolute}


@pytest.mark.parametrize("kind", SQL_KINDS)
@pytest.mark.parametrize("story", STORIES)
def test_memory_and_sql_stores_fire_the_same_events_for_the_same_story(make, clock, story):
    told = {}
    for name, build in (("memory", lambda on_end: MemoryStore(POLICY, clock, on_end=on_end)),
                        ("sql", lambda on_end: make(on_end=on_end))):
        ends = Ends()
        store = build(ends)
        try:
            STORIES[story](store)
        finally:
            store.close()
        told[name] = ends.events
    assert told["memory"], "the story ends a session"
    assert told["sql"] == told["memory"]


# == the SQL store only ==========================================================================

def beaker_session(store, session_id: str) -> JudgedSession:
    return JudgedSession({}, id=session_id, type="expiry:sql", store=store, data_serializer="json",
                   save_accessed_time=False, use_cookies=False)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_at_rest_the_data_is_readable_json_under_the_sha256_of_the_id(kind, store):
    raw_id = "0123456789abcdef0123456789abcdef"
    store.open(session_key(raw_id), "42", T0)
    session = beaker_session(store, raw_id)
    session["cart"] = [1, 2]
    session["name"] = "Zoë"
    session.save()

    cast = "data::text" if kind == "postgresql" else "data"
    [(key, text)] = raw(store, f"SELECT key, {cast} FROM sessions")  # noqa: S608 (fixed)
    assert key == hashlib.sha256(raw_id.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert isinstance(text, str)
    data = json.loads(text)
    assert data["cart"] == [1, 2] and data["name"] == "Zoë"
    assert "_accessed_time" not in data
    assert '"cart"' in text, "plain JSON, not base64 or pickle"
    every_column = raw(store, "SELECT * FROM sessions") + raw(store, "SELECT * FROM session_events")
    assert raw_id not in repr(every_column), "the raw id is stored nowhere"


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_at_rest_times_are_utc_whatever_the_local_time_zone(kind, store, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        store.open(KEY, "42", T0)
        store.end(KEY, "logged_out", T0 + 60)
        [(created, ended_at)] = raw(store, "SELECT created, at FROM session_events")
        if kind == "sqlite":
            assert created.startswith("2027-01-15 08:00:00")
            assert ended_at.startswith("2027-01-15 08:01:00")
        else:
            assert created == T0_UTC and ended_at == datetime.fromtimestamp(T0 + 60, UTC)
            [(wall,)] = raw(store, "SELECT to_char(created AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD HH24:MI:SS') FROM session_events")
            assert wall == "2027-01-15 08:00:00"
        assert store.get(KEY).created == T0 and store.get(KEY).ended_at == T0 + 60
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("kind", ["postgresql"])
def test_postgresql_keeps_every_time_as_timestamptz(store):
    types = raw(store, "SELECT table_name, column_name, data_type FROM information_schema.columns"
                       " WHERE table_name IN ('sessions', 'session_events')"
                       " AND data_type LIKE 'timestamp%'")
    record = ("created", "last_seen", "idle_deadline", "absolute_deadline")
    assert {(table, column) for table, column, _ in types} == {
        ("sessions", name) for name in (*record, "sweep_at")
    } | {("session_events", name) for name in (*record, "at")}
    assert {data_type for _, _, data_type in types} == {"timestamp with time zone"}

    store.open(KEY, "42", T0)
    with store.engine.connect() as conn:
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        created = conn.execute(sa.text("SELECT created FROM sessions")).scalar_one()
    assert created.utcoffset().total_seconds() == 0
    assert created == T0_UTC


@pytest.mark.parametrize("kind", ["postgresql"])
def test_a_store_whose_connections_run_in_another_time_zone_keeps_the_same_instants(
        make, url, ends):
    tokyo = make(on_end=ends, engine=engine_for(url + "?options=-c%20TimeZone%3DAsia%2FTokyo"))
    [(zone,)] = raw(tokyo, "SHOW TimeZone")
    assert zone == "Asia/Tokyo"
    record = tokyo.open(KEY, "42", T0)
    assert tokyo.get(KEY) == record
    assert tokyo.touch(KEY, T0 + 100).idle_deadline == T0 + 100 + IDLE
    assert sweep(tokyo, ends, T0 + 100 + IDLE) == [
        SessionEnded(KEY, "42", "idle_timeout", T0 + 100 + IDLE, 100 + IDLE)]
    utc = make()
    assert utc.get(KEY).created == T0


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_end_and_sweep_racing_in_threads_leave_exactly_one_event_row_each(store, clock, ends):
    keys = [session_key(f"rows-{i}") for i in range(30)]
    for i, key in enumerate(keys):
        store.open(key, str(i), T0)
    now = int(clock.advance(ABSOLUTE + 1))
    race_ends_and_sweeps(store, keys, now, enders=3, sweepers=3, sweeps=5)
    rows = raw(store, "SELECT session_key, count(*), min(reason), "
                      "sum(CASE WHEN id IN (SELECT event_id FROM session_outbox) "
                      "THEN 1 ELSE 0 END) FROM session_events GROUP BY session_key")
    assert {row[0] for row in rows} == set(keys)
    assert all(row[1] == 1 for row in rows), "one event row per ended session"
    assert all(row[3] == 0 for row in rows), "every event row notified"
    reasons = {row[0]: row[2] for row in rows}
    assert all(reasons[key] == store.get(key).end_reason for key in keys)
    assert Counter(ends.keys) == Counter(dict.fromkeys(keys, 1))


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_the_unique_constraint_refuses_a_second_ended_row(store):
    store.open(KEY, "42", T0)
    store.end(KEY, "logged_out", T0 + 1)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(session_events.insert().values(
            session_key=KEY, user_id="42", kind="ended", reason="idle_timeout",
            at=datetime.fromtimestamp(T0 + 2, UTC), duration=2))
    assert raw(store, "SELECT count(*) FROM session_events") == [(1,)]


def end_without_notifying(store, keys, reason, now):
    """End sessions as a sweeper does, then crash before sending the notifications."""
    with store.engine.begin() as conn:
        return store._end_rows(conn, sessions.c.key.in_(keys), reason, now)


def to_seconds(value: str | datetime) -> int:
    """A raw time column as epoch seconds (SQLite keeps naive UTC text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return int(value.timestamp())


def notified(store) -> dict:
    """{session key: whether its event was sent (is out of the outbox)}."""
    return {key: not pending for key, pending in raw(
        store, "SELECT session_key, id IN (SELECT event_id FROM session_outbox) "
               "FROM session_events")}


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_outbox_notifications_left_by_a_crash_are_sent_once_by_the_next_run(store, clock, ends):
    keys = [session_key(f"outbox-{i}") for i in range(3)]
    for i, key in enumerate(keys):
        store.open(key, f"u{i}", T0)
    assert len(end_without_notifying(store, keys, "revoked", T0 + 10)) == 3
    assert ends.events == [], "committed, not yet notified"
    assert set(notified(store).values()) == {False}

    clock.set(T0 + 20)
    assert store.notify_pending() == 3
    assert sorted(ends.events, key=lambda e: e.session_key) == sorted(
        (SessionEnded(key, f"u{i}", "revoked", T0 + 10, 10) for i, key in enumerate(keys)),
        key=lambda e: e.session_key)
    assert notified(store) == dict.fromkeys(keys, True)
    assert raw(store, "SELECT count(*) FROM session_outbox") == [(0,)], "sent: out of the outbox"

    assert store.notify_pending() == 0, "a second run sends nothing"
    assert len(ends.events) == 3


class Crash(BaseException):
    """The process dies in the middle of sending notifications."""


def dies_on_the_second():
    """A subscriber whose process dies (``Crash``) at the second notification."""
    sent = []

    def subscriber(event):
        sent.append(event.session_key)
        if len(sent) == 2:
            raise Crash

    return subscriber


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_outbox_a_crash_while_notifying_leaves_the_events_for_the_next_run(make):
    store = make(on_end=dies_on_the_second())
    keys = [session_key(f"crash-{i}") for i in range(3)]
    for key in keys:
        store.open(key, "42", T0)
    end_without_notifying(store, keys, "revoked", T0 + 10)
    with pytest.raises(Crash):
        store.notify_pending()
    assert set(notified(store).values()) == {False}, "nothing marked as sent"

    again = Ends()
    store.on_end = again
    assert store.notify_pending() == 3, "at least once: all of them again"
    assert sorted(again.keys) == sorted(keys)
    assert store.notify_pending() == 0


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sweep_sends_the_notifications_a_crash_left_behind(store, ends):
    store.open(KEY, "42", T0)
    store.open(KEY2, "43", T0)
    end_without_notifying(store, [KEY], "logged_out", T0 + 10)
    result = store.sweep(T0 + IDLE)
    assert result.ended == Counter({"idle_timeout": 1})
    assert result.notified == 2
    assert sorted((e.session_key, e.reason) for e in ends.events) == sorted(
        [(KEY, "logged_out"), (KEY2, "idle_timeout")])


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_sweep_that_dies_while_sending_leaves_each_end_to_be_sent_once_more(make):
    store = make(on_end=dies_on_the_second())
    keys = sorted(session_key(f"sweep-crash-{i}") for i in range(3))
    for key in keys:
        store.open(key, "42", T0)
    with pytest.raises(Crash):
        store.sweep(T0 + IDLE)
    # Sent after the commit: the sessions are ended, their events wait in the outbox.
    assert raw(store, "SELECT count(*) FROM sessions") == [(0,)]
    assert raw(store, "SELECT count(*) FROM session_events") == [(3,)]
    assert set(notified(store).values()) == {False}

    again = Ends()
    store.on_end = again
    result = store.sweep(T0 + IDLE + 5)
    assert result.notified == 3 and not result.ended
    assert sorted(again.keys) == keys, "every end sent again, once"
    assert set(notified(store).values()) == {True}
    assert store.sweep(T0 + IDLE + 10).notified == 0


def sweep_at(store, key) -> int:
    [(value,)] = raw(store, "SELECT sweep_at FROM sessions WHERE key = :key", key=key)
    return to_seconds(value)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sweep_claims_only_overdue_sessions_and_refreshes_touched_ones(store, ends):
    idle, touched, later = (session_key(name) for name in ("idle", "touched", "later"))
    store.open(idle, "1", T0)
    store.open(touched, "2", T0)
    store.open(later, "3", T0 + 300)
    store.touch(touched, T0 + 600)
    assert sweep_at(store, touched) == T0 + IDLE, "a touch leaves sweep_at alone"
    assert store.due_count(T0 + IDLE) == 2

    swept = sweep(store, ends, T0 + IDLE)
    assert [(e.session_key, e.reason) for e in swept] == [(idle, "idle_timeout")]
    assert store.get(touched).is_open and store.get(later).is_open
    assert sweep_at(store, touched) == T0 + 600 + IDLE, "refreshed to its real deadline"
    assert sweep_at(store, later) == T0 + 300 + IDLE, "not due, not claimed"
    assert store.due_count(T0 + IDLE) == 0


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sweep_works_in_batches(store, ends):
    keys = [session_key(f"batch-{i}") for i in range(7)]
    for i, key in enumerate(keys):
        store.open(key, str(i), T0 + i)
    looked = []
    result = store.sweep(T0 + IDLE + 10, batch=3,
                         progress=lambda done, due: looked.append((done, due)))
    assert result.total_ended == 7 and result.notified == 7
    assert looked == [(3, 7), (6, 7), (7, 7)]
    assert sorted(ends.keys) == sorted(keys)
    assert "ended=7 (idle_timeout=7)" in result.summary()


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_due_count_counts_open_sessions_whose_sweep_time_has_come(store):
    assert store.due_count(T0) == 0
    for i in range(4):
        store.open(session_key(f"due-{i}"), str(i), T0 + 100 * i)
    store.end(session_key("due-0"), "logged_out", T0 + 1)
    assert store.due_count(T0 + IDLE - 1) == 0
    assert store.due_count(T0 + IDLE + 100) == 1, "due-0 ended, due-1 due"
    assert store.due_count(T0 + IDLE + 300) == 3


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_prune_deletes_old_notified_events_with_their_tombstones_in_batches(store):
    old = [session_key(f"old-{i}") for i in range(5)]
    for key in old:
        store.open(key, "1", T0)
        store.end(key, "logged_out", T0 + 10)
    store.open(KEY, "young", T0)
    store.end(KEY, "logged_out", T0 + 1000)
    store.open(KEY2, "unnotified", T0)
    end_without_notifying(store, [KEY2], "revoked", T0 + 10)
    store.open(session_key("open"), "open", T0 + RETENTION)

    deletes = []

    def count_deletes(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement.split()[2])

    sa.event.listen(store.engine, "before_cursor_execute", count_deletes)
    try:
        pruned = store.prune(T0 + 10 + RETENTION + 1, batch=2)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count_deletes)

    # the 5 old notified events (each its session's tombstone); KEY2's waits to be sent
    assert pruned == 5
    # and one statement forgets old password failures (none here)
    assert Counter(deletes) == {"session_events": 3, "session_failures": 1}, \
        "batches of at most 2"
    assert all(store.get(key) is None for key in old)
    assert store.get(KEY) is not None, "a younger tombstone stays"
    assert store.get(session_key("open")).is_open
    events_left = dict(raw(store, "SELECT session_key, reason FROM session_events"))
    assert events_left == {KEY: "logged_out", KEY2: "revoked"}, \
        "young and unnotified events stay"


# -- an unreachable database ----------------------------------------------------------------------

CALLS = {
    "get": lambda store: store.get(KEY),
    "open": lambda store: store.open(KEY, "1", T0),
    "load_data": lambda store: store.load_data(KEY),
    "save_data": lambda store: store.save_data(KEY, {"a": 1}),
    "touch": lambda store: store.touch(KEY, T0),
    "end": lambda store: store.end(KEY, "logged_out", T0),
    "sweep": lambda store: store.sweep(T0),
    "due_count": lambda store: store.due_count(T0),
    "notify_pending": lambda store: store.notify_pending(),
    "prune": lambda store: store.prune(T0),
    "records": lambda store: store.records(),
}


@pytest.fixture(scope="module")
def closed_port_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"


@pytest.mark.parametrize("call", CALLS)
def test_a_store_whose_postgresql_is_down_raises_store_unavailable(call, closed_port_url, clock):
    store = SqlStore(engine_for(closed_port_url), POLICY, clock)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            CALLS[call](store)
        assert not isinstance(raised.value, sa.exc.SQLAlchemyError)
        assert isinstance(raised.value.__cause__, sa.exc.SQLAlchemyError)
        assert time.monotonic() - started < 5
    finally:
        store.close()


@pytest.mark.parametrize("call", ["get", "open", "touch", "end", "sweep"])
def test_a_store_whose_sqlite_file_cannot_be_opened_raises_store_unavailable(
        call, tmp_path, clock):
    store = SqlStore(engine_for(f"sqlite:///{tmp_path}/missing/dir/db.sqlite"), POLICY, clock)
    try:
        with pytest.raises(StoreUnavailable):
            CALLS[call](store)
    finally:
        store.close()


# -- subscribers that use the store --------------------------------------------------------

def test_a_subscriber_may_end_another_session_from_inside_the_notification(make, clock):
    """"End this user's other sessions" from a SessionEnded subscriber: no deadlock."""
    ended = []
    store = None

    def end_the_others(event):
        ended.append(event.session_key)
        if event.session_key == "a" * 64:
            store.end("b" * 64, "ended_by_user", int(clock()))

    store = make(on_end=end_the_others)
    store.open("a" * 64, "7", T0)
    store.open("b" * 64, "7", T0)
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (store.end("a" * 64, "logged_out", T0 + 1),
                                              finished.set()), daemon=True)
    worker.start()
    assert finished.wait(5), "ending a session from a subscriber deadlocked"
    assert ended == ["a" * 64, "b" * 64]
    assert store.get("b" * 64).end_reason == "ended_by_user"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_missing_tables_are_a_clear_store_unavailable(kind, request, tmp_path):
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    else:
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database(f"empty_{random.randrange(10**9)}")
    store = SqlStore(engine_for(url), POLICY, clock=FrozenClock(T0))
    try:
        with pytest.raises(StoreUnavailable, match=r"session tables are missing: run "
                                                   r"`session-expiry-db <your ini> upgrade`, "
                                                   r"or `alembic upgrade heads` where"):
            store.get(KEY)
    finally:
        store.close()


# -- one read for the record and the data (SQL) ----------------------------------------------

@pytest.fixture
def reads(kind, url):
    """``reads()``: how many statements reading ``sessions`` the database ran since the test
    began, counted by the database's side: on PostgreSQL by the server itself
    (``pg_stat_statements``; the store reads through the driver there), on SQLite as
    SQLAlchemy sends them."""
    if kind == "postgresql":
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.exec_driver_sql("SELECT pg_stat_statements_reset()")

        def count() -> int:
            with engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND query ILIKE :reading"), {"reading": "select%from sessions%"}).scalar()

        yield count
        engine.dispose()
        return
    sent: list[str] = []

    def listener(conn, cursor, statement, *_):
        if str(conn.engine.url) == url and statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", listener)
    yield lambda: len(sent)
    sa.event.remove(sa.Engine, "before_cursor_execute", listener)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_request_that_reads_its_session_makes_one_read(store, reads):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"cart": [1, 2]})
    before = reads()

    assert store.get(KEY).is_open
    assert store.load_data(KEY) == SessionData.of({"cart": [1, 2]}, 1)

    assert reads() - before == 1
    assert store.load_data(KEY) == SessionData.of({"cart": [1, 2]}, 1), "then from the database"
    assert reads() - before == 2


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_a_write_after_the_read_sends_load_data_to_the_database(store, clock):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"cart": [1]})
    store.get(KEY)
    store.end(KEY, "logged_out", T0 + 1)
    assert store.load_data(KEY) is None, "ended in this thread after the read: no data"

    store.open(KEY2, "43", T0)
    store.get(KEY2)
    store.save_data(KEY2, {"theme": "dark"}, base=None)
    assert store.load_data(KEY2) == SessionData.of({"theme": "dark"}, 1), "what is there now"


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_the_read_serves_only_its_key_and_its_thread(store):
    store.open(KEY, "42", T0)
    store.open(KEY2, "43", T0)
    store.save_data(KEY, {"who": "one"})
    store.save_data(KEY2, {"who": "two"})

    store.get(KEY)
    assert store.load_data(KEY2).values() == {"who": "two"}, "another key: read on its own"

    store.get(KEY)
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(
        (store.load_data(KEY), store.save_data(KEY, {"who": "changed"}, base=None))))
    thread.start()
    thread.join()
    assert elsewhere[0][0].values() == {"who": "one"}
    # This thread's read is older than the other thread's write; the data it hands out is
    # that of the read (the request's snapshot), and a save still merges by version.
    assert store.load_data(KEY) == SessionData.of({"who": "one"}, 1)
    assert store.load_data(KEY) == SessionData.of({"who": "changed"}, 2)


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_a_tombstone_read_serves_no_data(store):
    store.open(KEY, "42", T0)
    store.end(KEY, "logged_out", T0 + 1)
    assert store.get(KEY).end_reason == "logged_out"
    assert store.load_data(KEY) is None


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_a_subscriber_may_use_the_store_from_inside_a_sweeps_notification(make, clock):
    """The sweeper's subscribers see the end committed: the tombstone is there to read, and
    ending another session (one the same sweep ends too) waits on nothing."""
    seen = []
    store = None

    def look_and_end_the_other(event):
        seen.append((event.session_key, store.get(event.session_key).end_reason))
        if event.session_key == "a" * 64:
            store.end("b" * 64, "ended_by_user", int(clock()))

    store = make(on_end=look_and_end_the_other)
    store.open("a" * 64, "7", T0)
    store.open("b" * 64, "7", T0 + 1)
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (store.sweep(T0 + IDLE + 1), finished.set()),
                              daemon=True)
    worker.start()
    assert finished.wait(5), "a subscriber using the store deadlocked the sweep"
    assert seen[0] == ("a" * 64, "idle_timeout"), "the subscriber reads the tombstone"
    assert {key for key, _ in seen} == {"a" * 64, "b" * 64}
    assert all(reason is not None for _, reason in seen)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_subscriber_may_end_a_session_of_the_batch_being_ended_meanwhile(make, clock):
    """PostgreSQL ends the next batch while this one's notifications go out: a subscriber
    that ends a session of that batch waits at most for its commit, never deadlocks, and
    each session still ends once, with one event, sent once."""
    keys = [session_key(f"next-{i}") for i in range(6)]
    seen = []
    store = None

    def end_the_next(event):
        seen.append(event.session_key)
        if event.session_key == keys[0]:
            for key in keys[1:3]:  # in the batches after this one
                store.end(key, "ended_by_user", int(clock()))

    store = make(on_end=end_the_next)
    for i, key in enumerate(keys):
        store.open(key, "7", T0 + i)  # sweep_at in this order: one batch each
    done = []
    worker = threading.Thread(target=lambda: done.append(store.sweep(T0 + IDLE + 10, batch=1)),
                              daemon=True)
    worker.start()
    worker.join(10)
    assert done, "a subscriber ending a session of the next batch deadlocked the sweep"
    assert Counter(seen) == Counter(dict.fromkeys(keys, 1)), "each end sent once"
    assert raw(store, "SELECT count(*), count(DISTINCT session_key) FROM session_events") == [
        (6, 6)]
    assert raw(store, "SELECT count(*) FROM session_outbox") == [(0,)]
    assert all(not store.get(key).is_open for key in keys)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_sweep_whose_subscriber_dies_stops_ending_and_leaves_the_rest_to_the_next(make):
    """The sweep stops with its caller: what it ended and did not send waits in the outbox
    (at most the batch waiting and the one being ended meanwhile), and nothing is sent
    twice."""
    store = make(on_end=dies_on_the_second())
    keys = [session_key(f"stop-{i}") for i in range(8)]
    for i, key in enumerate(keys):
        store.open(key, "42", T0 + i)
    with pytest.raises(Crash):
        store.sweep(T0 + IDLE + 10, batch=1)
    [(ended,)] = raw(store, "SELECT count(*) FROM session_events")
    assert 2 <= ended <= 4, "the batch sent, the one that died, at most two more"
    assert raw(store, "SELECT count(*) FROM session_outbox") == [(ended - 1,)], (
        "only the first end was sent (and taken out of the outbox)")

    again = Ends()
    store.on_end = again
    result = store.sweep(T0 + IDLE + 10, batch=1)
    assert result.total_ended == 8 - ended and result.notified == 8 - 1
    assert sorted(again.keys) == sorted(keys[1:]), "every end not sent before, once"


@pytest.mark.parametrize("kind", ["postgresql"])
@pytest.mark.parametrize("take", ["swept", "oldest"])
def test_a_take_from_the_outbox_looks_its_entries_up_by_key_however_empty_it_looks(
        store, take):
    """The outbox is a queue: its deleted rows stay until a vacuum, and its statistics say
    it is nearly empty. A take must still look its entries up by primary key: given
    ``IN (claim)`` the planner ran the claim once per row of the table (a nested loop),
    270 to 480 ms a batch after 700,000 ends. The plan checked is the generic one, which
    psycopg's prepared statements get."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO session_outbox SELECT generate_series(1, 20000)")
        conn.exec_driver_sql("DELETE FROM session_outbox WHERE event_id > 500")
    statement = TAKE_SWEPT if take == "swept" else take_claimed(
        sa.select(session_outbox.c.event_id).order_by(session_outbox.c.event_id).limit(
            sa.bindparam("ids", type_=sa.Integer)))
    sql = str(statement.compile(dialect=store.engine.dialect)).replace("%(ids)s", "$1")
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE session_outbox")
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(f"PREPARE take AS {sql}")
        argument = "'{1,2,3}'" if take == "swept" else "3"
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(
            f"EXPLAIN EXECUTE take({argument})"))
        conn.exec_driver_sql("DEALLOCATE take")
    assert "Join" not in plan and "Nested Loop" not in plan, plan
    assert "Index Cond: (event_id = ANY" in plan, plan


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_each_batch_of_a_sweep_claims_from_where_the_last_one_reached(make):
    """The sessions a sweep ends leave entries at the front of the ``sweep_at`` index until
    a vacuum; a claim that started at the front stepped over all of them (9,500 buffers a
    batch after 300,000 ends). Each batch starts where the last one's claim reached."""
    store = make()
    keys = [session_key(f"cursor-{i}") for i in range(4)]
    for i, key in enumerate(keys):
        store.open(key, "7", T0 + 10 * i)
    claims = []  # (where a batch started, where its claim reached)
    sweep_batch = store._sweep_batch

    def recorded(conn, now, batch, after):
        result = sweep_batch(conn, now, batch, after)
        claims.append((after, result[1]))
        return result

    store._sweep_batch = recorded
    result = store.sweep(T0 + 30 + IDLE, batch=1)
    assert result.total_ended == 4 and all(not store.get(key).is_open for key in keys)
    reached = [datetime.fromtimestamp(T0 + 10 * i + IDLE, UTC) for i in range(4)]
    assert [end for _, end in claims] == [*reached, None]
    assert [start for start, _ in claims] == [datetime.fromtimestamp(0, UTC), *reached]


# -- password throttling: the counts the farm shares ----------------------------------------

def throttle_keys(free_tries=3, account="alice", address="192.0.2.7"):
    policy = Policy(secret="x" * 40, throttle_free_tries=free_tries)
    return keys_for(policy, account=account, address=address)


def test_claims_count_tries_until_the_account_must_wait(store):
    keys = throttle_keys()
    answers = [store.claim_try(keys, T0 + i) for i in range(5)]
    assert [answer.wait for answer in answers] == [0, 0, 0, 14, 13]  # 15 s from T0 + 2
    assert answers[3].scope == "account"
    assert answers[2].counts == answers[4].counts == {key.name: 3 for key in keys}, \
        "a throttled claim counts nothing"
    assert store.claim_try(keys, T0 + 2 + 15).allowed


def test_a_right_password_gives_back_the_accounts_run_and_the_addresss_try(store):
    keys = throttle_keys()
    for i in range(3):
        store.claim_try(keys, T0 + i)
    store.release_try(keys)
    answer = store.claim_try(keys, T0 + 3)
    account, address = keys
    assert answer.allowed and answer.counts == {account.name: 1, address.name: 3}


def test_another_account_from_the_same_address_is_not_throttled_by_the_first(store):
    for i in range(3):
        store.claim_try(throttle_keys(), T0 + i)
    assert not store.claim_try(throttle_keys(), T0 + 3).allowed
    assert store.claim_try(throttle_keys(account="bob"), T0 + 3).allowed


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_two_stores_on_one_database_count_the_same_tries(make):
    one, two = make(), make()
    keys = throttle_keys()
    for i, store in enumerate((one, two, one)):
        assert store.claim_try(keys, T0 + i).allowed
    assert two.claim_try(keys, T0 + 3).wait == 14  # the third try was counted at T0 + 2


def test_tries_claimed_at_once_are_each_counted(make, kind):
    """A hundred guesses sent at once are a hundred tries, not one (on SQL: sent to two
    app servers)."""
    stores = [make() for _ in range(1 if kind == "memory" else 2)]
    keys = throttle_keys(free_tries=100)
    barrier = threading.Barrier(8)
    answers, errors = [], []

    def guesser(store):
        barrier.wait()
        try:
            for _ in range(3):
                answers.append(store.claim_try(keys, T0))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=guesser, args=(stores[i % len(stores)],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(answer.counts[keys[0].name] for answer in answers) == list(range(1, 25))


def failures_kept(store) -> int:
    """How many keys' failures the store holds."""
    if isinstance(store, MemoryStore):
        return len(store._failures)
    if isinstance(store, RedisStore):
        return store.redis.client.hlen(store.layout.failures)
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM session_failures")).scalar()


def test_a_sweep_forgets_failures_past_throttle_forget_after(make, ends):
    store = make(on_end=ends, policy=replace(POLICY, throttle_forget_after=600))
    store.claim_try(throttle_keys(account="alice"), T0)
    store.claim_try(throttle_keys(account="bob", address="192.0.2.8"), T0 + 100)
    store.sweep(T0 + 599)
    assert failures_kept(store) == 4
    store.sweep(T0 + 600)
    assert failures_kept(store) == 2, "alice's account and address are forgotten"
    store.sweep(T0 + 700)
    assert failures_kept(store) == 0


def test_a_policy_at_the_top_of_every_range_holds_in_the_store(make, ends):
    """Every deadline a setting in range can make is a date every store holds."""
    _, policy = load({"session.type": "expiry:memory", "session_expiry.secret": "x" * 40,
                      **{f"session_expiry.{name}": str(high)
                         for name, (_, high) in RANGES.items()}}, environ={})
    store = make(on_end=ends, policy=policy)
    store.open(KEY, "42", T0)
    store.touch(KEY, T0 + policy.touch_interval)
    assert store.claim_try(throttle_keys(), T0).allowed
    ended = sweep(store, ends, T0 + policy.absolute_timeout)
    assert [event.reason for event in ended] == ["absolute_timeout"]
    store.sweep(T0 + policy.absolute_timeout + policy.retention)
    assert store.get(KEY) is None
