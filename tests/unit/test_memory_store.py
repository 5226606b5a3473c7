"""The memory store: one record per session, ended exactly once, swept by itself."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from session_expiry.clock import FrozenClock
from session_expiry.settings import Policy
from session_expiry.stores import session_key
from session_expiry.stores.memory import MemoryStore

T0 = 1_800_000_000
IDLE = 1200
ABSOLUTE = 3600
RETENTION = 86400
POLICY = Policy(idle_timeout=IDLE, absolute_timeout=ABSOLUTE, warn_before=120,
                touch_interval=120, retention=RETENTION, secret="x" * 40)
KEY = session_key("session-one")
KEY2 = session_key("session-two")


class Ends:
    """An ``on_end`` that records every report (thread-safe)."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        self.event = threading.Event()

    def __call__(self, record):
        with self.lock:
            self.records.append(record)
        self.event.set()

    @property
    def keys(self):
        with self.lock:
            return [record.key for record in self.records]


@pytest.fixture
def clock():
    return FrozenClock(T0)


@pytest.fixture
def ends():
    return Ends()


@pytest.fixture
def store(clock, ends):
    store = MemoryStore(POLICY, clock, on_end=ends)
    yield store
    store.close()


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


def test_new_session_has_empty_data(store):
    store.open(KEY, "42", T0)
    assert store.load_data(KEY) == {}


def test_saved_data_loads_back(store):
    store.open(KEY, "42", T0)
    data = {"cart": [1, 2, 3], "name": "Zoë", "nested": {"a": None, "b": True}}
    assert store.save_data(KEY, data) is True
    assert store.load_data(KEY) == data


def test_save_replaces_the_whole_data(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    store.save_data(KEY, {"b": 2})
    assert store.load_data(KEY) == {"b": 2}


def test_unknown_key_is_unknown_everywhere(store, ends):
    assert store.get("nope") is None
    assert store.load_data("nope") is None
    assert store.save_data("nope", {"a": 1}) is False
    assert store.get("nope") is None, "saving must not create an entry"
    assert store.touch("nope", T0) is None
    assert store.end("nope", "logged_out", T0) is None
    assert ends.records == []


def test_sessions_are_kept_apart(store):
    store.open(KEY, "1", T0)
    store.open(KEY2, "2", T0)
    store.save_data(KEY, {"who": "one"})
    store.save_data(KEY2, {"who": "two"})
    store.end(KEY2, "logged_out", T0)
    assert store.load_data(KEY) == {"who": "one"}
    assert store.get(KEY).is_open


def test_mutating_a_loaded_dict_does_not_change_the_store(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"items": [1], "n": 1})
    loaded = store.load_data(KEY)
    loaded["items"].append(2)
    loaded["n"] = 99
    loaded["new"] = True
    assert store.load_data(KEY) == {"items": [1], "n": 1}


def test_mutating_a_saved_dict_afterwards_does_not_change_the_store(store):
    store.open(KEY, "42", T0)
    data = {"items": [1]}
    store.save_data(KEY, data)
    data["items"].append(2)
    data["later"] = 1
    assert store.load_data(KEY) == {"items": [1]}


def test_two_loads_do_not_share_objects(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"items": [1]})
    first, second = store.load_data(KEY), store.load_data(KEY)
    assert first == second and first is not second
    assert first["items"] is not second["items"]


def test_unserialisable_data_is_refused_and_leaves_the_data_as_it_was(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    with pytest.raises(TypeError):
        store.save_data(KEY, {"when": object()})
    assert store.load_data(KEY) == {"a": 1}


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
    assert store.load_data(KEY) == {"a": 1}


# -- end -------------------------------------------------------------------------------------

def test_end_returns_the_tombstone_and_reports_it_once(store, ends):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    tombstone = store.end(KEY, "logged_out", T0 + 30)
    assert tombstone is not None
    assert tombstone.ended_at == T0 + 30
    assert tombstone.end_reason == "logged_out"
    assert not tombstone.is_open
    assert ends.records == [tombstone]


def test_second_end_returns_none_and_does_not_report_again(store, ends):
    store.open(KEY, "42", T0)
    first = store.end(KEY, "logged_out", T0 + 30)
    assert store.end(KEY, "revoked", T0 + 40) is None
    assert store.end(KEY, "idle_timeout", T0 + 5000) is None
    assert ends.records == [first]
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
    store.end(KEY, "logged_out", T0 + 1)
    assert store.save_data(KEY, {"back": "again"}) is False
    assert store.load_data(KEY) is None
    assert not store.get(KEY).is_open


def test_touch_after_end_returns_none_and_keeps_the_tombstone(store):
    store.open(KEY, "42", T0)
    tombstone = store.end(KEY, "logged_out", T0 + 1)
    assert store.touch(KEY, T0 + 2) is None
    assert store.get(KEY) == tombstone


def test_failing_on_end_subscriber_does_not_undo_the_end(clock):
    def explode(record):
        raise RuntimeError("subscriber broke")

    store = MemoryStore(POLICY, clock, on_end=explode)
    try:
        store.open(KEY, "42", T0)
        tombstone = store.end(KEY, "logged_out", T0 + 1)
        assert tombstone is not None and tombstone.end_reason == "logged_out"
        assert store.load_data(KEY) is None
    finally:
        store.close()


# -- sweep -----------------------------------------------------------------------------------

def test_sweep_before_any_deadline_ends_nothing(store, ends):
    store.open(KEY, "42", T0)
    assert store.sweep(T0 + IDLE - 1) == []
    assert store.get(KEY).is_open
    assert ends.records == []


def test_sweep_ends_an_idle_session_at_its_idle_deadline(store, ends):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 1})
    swept = store.sweep(T0 + IDLE)
    assert [(r.key, r.end_reason, r.ended_at) for r in swept] == [
        (KEY, "idle_timeout", T0 + IDLE)]
    assert ends.records == swept
    assert store.load_data(KEY) is None


def test_sweep_ends_an_active_session_at_its_absolute_deadline(store, ends):
    store.open(KEY, "42", T0)
    for t in range(T0 + 1000, T0 + ABSOLUTE, 1000):  # active all along
        store.touch(KEY, t)
        assert store.sweep(t) == []
    swept = store.sweep(T0 + ABSOLUTE)
    assert [(r.key, r.end_reason) for r in swept] == [(KEY, "absolute_timeout")]
    assert ends.keys == [KEY]


def test_sweep_gives_each_session_its_own_reason(store):
    store.open(KEY, "idle", T0)
    store.open(KEY2, "active", T0)
    store.touch(KEY2, T0 + 3000)
    swept = store.sweep(T0 + ABSOLUTE + 10)
    assert {r.key: r.end_reason for r in swept} == {
        KEY: "idle_timeout", KEY2: "absolute_timeout"}


def test_sweep_ignores_stale_deadlines_of_touched_sessions(store, ends):
    store.open(KEY, "42", T0)
    store.touch(KEY, T0 + 600)  # the heap still holds the old deadline T0 + IDLE
    assert store.sweep(T0 + IDLE) == []
    assert store.sweep(T0 + IDLE + 599) == []
    assert store.get(KEY).is_open
    assert ends.records == []
    swept = store.sweep(T0 + 600 + IDLE)
    assert [(r.key, r.end_reason) for r in swept] == [(KEY, "idle_timeout")]


def test_sweep_does_not_end_a_session_ended_already(store, ends):
    store.open(KEY, "42", T0)
    store.end(KEY, "logged_out", T0 + 10)
    assert store.sweep(T0 + ABSOLUTE + 10) == []
    assert [r.end_reason for r in ends.records] == ["logged_out"]
    assert store.get(KEY).end_reason == "logged_out"


def test_repeated_sweeps_end_each_session_once(store, ends):
    for i in range(5):
        store.open(session_key(f"s{i}"), str(i), T0)
    first = store.sweep(T0 + IDLE)
    assert len(first) == 5
    assert store.sweep(T0 + IDLE + 1) == []
    assert store.sweep(T0 + ABSOLUTE) == []
    assert len(ends.records) == 5


def test_sweep_prunes_tombstones_older_than_retention(store):
    store.open(KEY, "1", T0)
    store.open(KEY2, "2", T0)
    store.end(KEY, "logged_out", T0 + 10)
    store.end(KEY2, "logged_out", T0 + 500)
    store.sweep(T0 + 10 + RETENTION - 1)
    assert store.get(KEY) is not None, "kept until retention has passed"
    store.sweep(T0 + 10 + RETENTION)
    assert store.get(KEY) is None
    assert store.get(KEY2) is not None, "a younger tombstone stays"
    assert store.get(KEY2).end_reason == "logged_out"
    store.sweep(T0 + 500 + RETENTION + 1)
    assert store.get(KEY2) is None


def test_sweep_keeps_open_sessions_when_pruning(store):
    store.open(KEY, "1", T0)
    store.end(KEY, "logged_out", T0)
    later = T0 + RETENTION + 5
    store.open(KEY2, "2", later)
    store.sweep(later)
    assert store.get(KEY) is None
    assert store.get(KEY2) is not None and store.get(KEY2).is_open


def test_swept_session_keeps_a_tombstone_until_retention(store):
    store.open(KEY, "1", T0)
    store.sweep(T0 + IDLE)
    assert store.get(KEY).end_reason == "idle_timeout"
    store.sweep(T0 + IDLE + RETENTION - 1)
    assert store.get(KEY).end_reason == "idle_timeout"
    store.sweep(T0 + IDLE + RETENTION)
    assert store.get(KEY) is None


def test_records_lists_open_sessions_and_tombstones(store):
    store.open(KEY, "1", T0)
    store.open(KEY2, "2", T0)
    store.end(KEY2, "revoked", T0 + 1)
    assert {(r.key, r.is_open) for r in store.records()} == {(KEY, True), (KEY2, False)}


# -- the sweep thread --------------------------------------------------------------------------

def test_sweep_thread_ends_an_overdue_session_by_itself_within_a_second(store, clock, ends):
    assert store.sweep_every <= 0.25
    store.open(KEY, "42", T0)
    store.start()
    assert not ends.event.wait(0.3), "nothing is overdue yet"
    clock.advance(IDLE)
    passed = time.monotonic()
    assert ends.event.wait(2.0), "the sweep thread did not end the session"
    assert time.monotonic() - passed < 1.0
    assert [(r.key, r.end_reason, r.ended_at) for r in ends.records] == [
        (KEY, "idle_timeout", T0 + IDLE)]
    assert store.load_data(KEY) is None


def test_close_stops_the_sweep_thread(clock, ends):
    store = MemoryStore(POLICY, clock, on_end=ends)
    store.start()
    thread = store._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
    assert store._thread is None


def test_sweep_thread_survives_a_failing_subscriber(clock):
    calls = []
    reported = threading.Event()

    def flaky(record):
        calls.append(record.key)
        if len(calls) == 1:
            raise RuntimeError("first report fails")
        reported.set()

    store = MemoryStore(POLICY, clock, on_end=flaky)
    try:
        store.open(KEY, "1", T0)
        store.start()
        clock.advance(IDLE)
        deadline = time.monotonic() + 2.0
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls == [KEY]
        store.open(KEY2, "2", int(clock()))
        clock.advance(IDLE)
        assert reported.wait(2.0), "the sweep thread stopped after a failing subscriber"
        assert calls == [KEY, KEY2]
    finally:
        store.close()


# -- races -------------------------------------------------------------------------------------

def test_concurrent_ends_and_sweeps_end_each_session_exactly_once(clock, ends):
    store = MemoryStore(POLICY, clock, on_end=ends)
    try:
        keys = [session_key(f"race-{i}") for i in range(200)]
        for i, key in enumerate(keys):
            store.open(key, str(i), T0)
        now = int(clock.advance(IDLE + 1))
        returned = []
        returned_lock = threading.Lock()
        barrier = threading.Barrier(7)
        errors = []

        def ender(seed):
            order = keys[:]
            random.Random(seed).shuffle(order)
            barrier.wait()
            try:
                for key in order:
                    record = store.end(key, "revoked", now)
                    if record is not None:
                        with returned_lock:
                            returned.append(record)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        def sweeper():
            barrier.wait()
            try:
                for _ in range(20):
                    swept = store.sweep(now)
                    with returned_lock:
                        returned.extend(swept)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=ender, args=(seed,)) for seed in range(5)]
        threads += [threading.Thread(target=sweeper) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=5)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert len(ends.records) == 200
        assert Counter(ends.keys) == Counter(dict.fromkeys(keys, 1))
        assert sorted(r.key for r in returned) == sorted(keys), \
            "exactly one caller learns it ended each session"
        for key in keys:
            record = store.get(key)
            assert not record.is_open
            assert record.end_reason in ("revoked", "idle_timeout")
            assert store.load_data(key) is None
    finally:
        store.close()


def test_concurrent_saves_and_end_never_resurrect(clock, ends):
    store = MemoryStore(POLICY, clock, on_end=ends)
    try:
        store.open(KEY, "42", T0)
        stop = threading.Event()

        def writer():
            n = 0
            while not stop.is_set():
                store.save_data(KEY, {"n": n})
                n += 1

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.02)
        store.end(KEY, "logged_out", T0 + 1)
        time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        assert store.load_data(KEY) is None
        assert store.save_data(KEY, {"n": -1}) is False
        assert len(ends.records) == 1
    finally:
        store.close()
