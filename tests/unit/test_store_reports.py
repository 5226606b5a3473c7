"""The store contract for the session report: ending a user's sessions, listing them, the
figures of the last 24 hours, the keyset-paginated lists, and the refused-request counts.

Runs on the memory store, the SQL store on SQLite, and the SQL store on PostgreSQL, with the
fixtures of ``test_stores`` (``kind``, ``make``, ``store``, ``ends``, ``clock``).
"""
from __future__ import annotations

import shutil
import time

import pytest
import sqlalchemy as sa

from session_expiry.events import SessionEnded
from session_expiry.stores import session_key
from session_expiry.stores.readmodel import (
    END_REASONS,
    HOUR,
    HOURS,
    WINDOW,
    ActiveQuery,
    ActiveSort,
    Cursor,
    EndsQuery,
    Summary,
)
from tests.conftest import clear_sessions, migrate
from tests.unit import test_stores
from tests.unit.test_stores import ABSOLUTE, IDLE, SQL_KINDS, T0, raw

# The store contract's fixtures, reused (``url`` and ``postgres_url`` have versions of
# this module's own, below).
kind = test_stores.kind
clock = test_stores.clock
ends = test_stores.ends
make = test_stores.make
store = test_stores.store
sqlite_template = test_stores.sqlite_template


def key(name) -> str:
    return session_key(f"report-{name}")


@pytest.fixture(scope="module")
def postgres_url(postgres) -> str:
    """A migrated PostgreSQL database of this module's own (test_stores has its own)."""
    url = postgres.create_database("unit_store_reports")
    migrate(url)
    return url


@pytest.fixture
def url(kind, request, tmp_path) -> str | None:
    """As test_stores' ``url``, and the refused-request counts are cleared too."""
    if kind == "memory":
        return None
    if kind in test_stores.REDIS_KINDS:
        return test_stores.redis_url(kind, request)
    if kind == "sqlite":
        path = tmp_path / "sessions.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    clear_sessions(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM session_refusals"))
    engine.dispose()
    return url


def open_keys(store) -> set[str]:
    return {record.key for record in store.records() if record.is_open}


# -- end_user_sessions ----------------------------------------------------------------------

def test_end_user_sessions_ends_every_open_session_of_that_user_only(store, ends):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0 + 10)
    store.open(key(3), "8", T0 + 20)
    ended = store.end_user_sessions("7", "revoked", T0 + 100)
    assert sorted(record.key for record in ended) == sorted([key(1), key(2)])
    assert open_keys(store) == {key(3)}
    for name in (1, 2):
        tombstone = store.get(key(name))
        assert (tombstone.ended_at, tombstone.end_reason) == (T0 + 100, "revoked")
        assert store.load_data(key(name)) is None


def test_end_user_sessions_returns_the_tombstones(store):
    store.open(key(1), "7", T0, ip="10.0.0.1", user_agent="UA")
    [tombstone] = store.end_user_sessions("7", "revoked", T0 + 100)
    assert tombstone == store.get(key(1))
    assert tombstone.key == key(1)
    assert tombstone.user_id == "7"
    assert tombstone.created == T0
    assert (tombstone.ended_at, tombstone.end_reason) == (T0 + 100, "revoked")
    assert (tombstone.ip, tombstone.user_agent) == ("10.0.0.1", "UA")


def test_end_user_sessions_fires_one_event_per_session_with_reason_and_length(store, ends):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0 + 40)
    store.end_user_sessions("7", "ended_by_user", T0 + 100)
    assert sorted(ends.events, key=lambda event: event.session_key) == sorted([
        SessionEnded(key(1), "7", "ended_by_user", T0 + 100, 100),
        SessionEnded(key(2), "7", "ended_by_user", T0 + 100, 60),
    ], key=lambda event: event.session_key)


def test_end_user_sessions_keeps_the_session_it_is_told_to_keep(store, ends):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0)
    store.open(key(3), "7", T0)
    ended = store.end_user_sessions("7", "ended_by_user", T0 + 5, keep=key(2))
    assert sorted(record.key for record in ended) == sorted([key(1), key(3)])
    assert open_keys(store) == {key(2)}
    assert sorted(ends.keys) == sorted([key(1), key(3)])


def test_end_user_sessions_a_second_time_ends_nothing_and_fires_nothing(store, ends):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0)
    store.end_user_sessions("7", "revoked", T0 + 10)
    fired = len(ends.events)
    assert store.end_user_sessions("7", "revoked", T0 + 20) == []
    assert len(ends.events) == fired == 2
    assert store.get(key(1)).ended_at == T0 + 10


def test_end_user_sessions_leaves_sessions_ended_before_with_their_own_reason(store, ends):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0)
    store.end(key(1), "logged_out", T0 + 5)
    ended = store.end_user_sessions("7", "revoked", T0 + 10)
    assert [record.key for record in ended] == [key(2)]
    assert store.get(key(1)).end_reason == "logged_out"
    assert [event.reason for event in ends.events] == ["logged_out", "revoked"]


def test_end_user_sessions_of_an_unknown_user_ends_nothing(store, ends):
    store.open(key(1), "7", T0)
    assert store.end_user_sessions("nobody", "revoked", T0 + 10) == []
    assert open_keys(store) == {key(1)}
    assert ends.events == []


def test_end_user_sessions_takes_the_user_id_as_text(store):
    store.open(key(1), 7, T0)  # remember() may be given an int
    assert [record.key for record in store.end_user_sessions(7, "revoked", T0 + 1)] == [key(1)]


def test_an_ended_session_of_a_user_is_told_by_end_too(store):
    store.open(key(1), "7", T0)
    store.end_user_sessions("7", "revoked", T0 + 10)
    assert store.end(key(1), "logged_out", T0 + 20) is None
    assert store.get(key(1)).end_reason == "revoked"


def test_end_user_sessions_leaves_no_session_of_the_user_writable(store):
    store.open(key(1), "7", T0)
    store.end_user_sessions("7", "revoked", T0 + 10)
    assert store.save_data(key(1), {"late": True}, base=None) is False
    assert store.touch(key(1), T0 + 20) is None
    assert store.get(key(1)).is_open is False


# -- user_sessions -------------------------------------------------------------------------------

def test_user_sessions_lists_open_sessions_of_that_user_most_recently_seen_first(store):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0 + 10)
    store.open(key(3), "7", T0 + 20)
    store.open(key(4), "8", T0 + 30)
    store.touch(key(1), T0 + 50)
    store.end(key(3), "logged_out", T0 + 60)
    sessions = store.user_sessions("7", T0 + 60)
    assert [record.key for record in sessions] == [key(1), key(2)]
    assert sessions[0] == store.get(key(1))
    assert sessions[0].last_seen == T0 + 50


def test_user_sessions_seen_at_the_same_moment_come_in_key_order(store):
    names = range(6)
    for name in names:
        store.open(key(name), "7", T0)
    assert [record.key for record in store.user_sessions("7", T0)] == sorted(map(key, names))


def test_user_sessions_of_an_unknown_user_or_a_user_with_none_open_is_empty(store):
    store.open(key(1), "7", T0)
    store.end(key(1), "revoked", T0 + 1)
    assert store.user_sessions("7", T0 + 1) == []
    assert store.user_sessions("nobody", T0 + 1) == []


def test_user_sessions_leave_out_sessions_past_their_deadline_not_swept_yet(store):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0 + IDLE)
    assert [record.key for record in store.user_sessions("7", T0 + IDLE)] == [key(2)]


def test_ending_a_session_past_its_deadline_ends_it_for_its_timeout_whatever_the_caller_says(
        store):
    store.open(key(1), "7", T0)
    store.open(key(2), "7", T0 + 100)
    ended = store.end_user_sessions("7", "revoked", T0 + IDLE + 50)
    assert {record.key: record.end_reason for record in ended} == {
        key(1): "idle_timeout", key(2): "revoked"}
    store.open(key(3), "8", T0)
    assert store.end(key(3), "revoked", T0 + IDLE).end_reason == "idle_timeout"


# -- summary ---------------------------------------------------------------------------------------

NOW = T0 + 2 * 86400  # far enough from T0 to script a whole day before it


def tell_story(store) -> None:
    """Sessions started, ended and refused over the last 30 hours before ``NOW``."""
    since = NOW - WINDOW
    # outside the window: started 30 h ago, ended 25 h ago
    store.open(key("old"), "1", NOW - 30 * HOUR)
    store.end(key("old"), "logged_out", NOW - 25 * HOUR)
    # started exactly 24 h ago (not "in the last 24 h"), ended 100 s later (in it)
    store.open(key("edge"), "1", since)
    store.end(key("edge"), "revoked", since + 100)
    # ended within the last 24 h, of known lengths
    store.open(key("k1"), "2", NOW - 7200)
    store.end(key("k1"), "logged_out", NOW - 7200 + 30)
    store.open(key("k2"), "2", NOW - 3000)
    store.end(key("k2"), "idle_timeout", NOW - 3000 + 600)
    store.open(key("k3"), "3", NOW - 1000)
    store.end(key("k3"), "ended_by_user", NOW - 100)
    store.open(key("k4"), "3", NOW - 5000)
    for touched in (1100, 2200, 3300):  # active to the end: past its idle deadline never
        store.touch(key("k4"), NOW - 5000 + touched)
    store.end(key("k4"), "absolute_timeout", NOW - 5000 + ABSOLUTE)
    # active now
    store.open(key("a1"), "4", NOW - 600)
    store.open(key("a2"), "4", NOW - 60)
    # open but past their idle deadline, not swept yet: not active; the sweeper is late
    store.open(key("late1"), "5", NOW - IDLE - 100)
    store.open(key("late2"), "5", NOW - IDLE - 50)
    # refused requests
    store.count_refusal("ticket_mismatch", NOW - 10)
    store.count_refusal("ticket_mismatch", NOW - 3000)
    store.count_refusal("session_lost", NOW - 3 * HOUR)
    store.count_refusal("ticket_expired", NOW - 25 * HOUR)  # older than the window


def expected_summary() -> Summary:
    per_hour = [dict.fromkeys(map(str, END_REASONS), 0) for _ in range(HOURS)]
    per_hour[23]["revoked"] = 1  # edge: ended 86300 s ago
    per_hour[1]["logged_out"] = 1  # k1: 7170 s ago
    per_hour[0]["idle_timeout"] = 1  # k2: 2400 s ago
    per_hour[0]["ended_by_user"] = 1  # k3: 100 s ago
    per_hour[0]["absolute_timeout"] = 1  # k4: 1400 s ago
    return Summary(
        now=NOW, active=2, started=8,
        ended_by_reason={"idle_timeout": 1, "absolute_timeout": 1, "logged_out": 1,
                         "revoked": 1, "ended_by_user": 1, "reauth_failed": 0},
        refused_by_reason={"ticket_mismatch": 2, "ticket_expired": 0, "session_lost": 1},
        ends_per_hour=per_hour,
        # lengths 30, 100, 600, 900, 3600
        length_histogram=[1, 1, 2, 0, 1, 0, 0, 0],
        median_length=600, p90_length=3600,
        sweeper_lag=100)


def test_summary_of_an_empty_store_is_all_zeros(store):
    summary = store.summary(NOW)
    assert (summary.active, summary.started, summary.ended, summary.refused) == (0, 0, 0, 0)
    assert (summary.median_length, summary.p90_length) == (None, None)
    assert summary.sweeper_lag == 0
    assert summary.length_histogram == [0] * 8


def test_summary_of_a_scripted_story_is_the_same_on_every_store(store):
    tell_story(store)
    assert store.summary(NOW) == expected_summary()


def test_summary_does_not_change_what_it_reads(store):
    tell_story(store)
    records = sorted(store.records(), key=lambda record: record.key)
    store.summary(NOW)
    assert store.summary(NOW) == expected_summary()  # refusals flushed once, not twice
    assert sorted(store.records(), key=lambda record: record.key) == records


def test_summary_an_hour_later_moves_every_end_one_column_and_drops_the_oldest(store):
    tell_story(store)
    summary = store.summary(NOW + HOUR)
    assert summary.ended_by_reason["revoked"] == 0  # the edge end is now older than 24 h
    assert summary.ends_per_hour[2]["logged_out"] == 1
    assert summary.ends_per_hour[1]["ended_by_user"] == 1
    assert summary.ended == 4


def test_summary_counts_an_end_exactly_24_hours_ago_out_and_a_second_later_in(store):
    store.open(key(1), "1", NOW - WINDOW - 10)
    store.end(key(1), "revoked", NOW - WINDOW)
    store.open(key(2), "1", NOW - WINDOW - 10)
    store.end(key(2), "revoked", NOW - WINDOW + 1)
    summary = store.summary(NOW)
    assert summary.ended_by_reason["revoked"] == 1
    assert summary.ends_per_hour[23]["revoked"] == 1


def test_summary_sweeper_lag_is_the_age_of_the_oldest_overdue_session(store):
    store.open(key(1), "1", NOW - ABSOLUTE - 500)  # absolute deadline NOW - 500
    for moment in range(NOW - ABSOLUTE - 500 + 600, NOW, 600):
        store.touch(key(1), moment)  # so idle never runs out first
    store.open(key(2), "1", NOW - IDLE - 20)  # idle deadline NOW - 20
    assert store.summary(NOW).sweeper_lag == 500
    assert store.summary(NOW).active == 0


def test_summary_sweeper_lag_is_zero_once_the_overdue_sessions_are_swept(store):
    store.open(key(1), "1", NOW - IDLE - 100)
    assert store.summary(NOW).sweeper_lag == 100
    store.sweep(NOW)
    summary = store.summary(NOW)
    assert summary.sweeper_lag == 0
    assert summary.ended_by_reason["idle_timeout"] == 1


def test_summary_counts_a_session_ending_at_its_deadline_as_not_active(store):
    store.open(key(1), "1", NOW - IDLE)  # idle deadline: NOW
    store.open(key(2), "1", NOW - IDLE + 1)
    summary = store.summary(NOW)
    assert summary.active == 1
    assert summary.sweeper_lag == 0


# -- active_sessions ----------------------------------------------------------------------------

def open_crowd(store, count: int = 23) -> list:
    """``count`` sessions of two users with ties in every sort value; a few ended or overdue."""
    for index in range(count):
        created = NOW - 900 + (index // 3) * 60  # groups of three start together
        store.open(key(index), "7" if index % 2 else "8", created)
        if index % 4 == 0:
            store.touch(key(index), created + 120 + (index % 8) * 10)
    store.end(key(5), "revoked", NOW - 10)
    store.open(key("late"), "7", NOW - IDLE - 1)  # overdue: not in the list
    return [record for record in store.records() if record.is_open and record.deadline > NOW]


def walk(store, query) -> list:
    rows, pages = [], 0
    while True:
        page = store.active_sessions(query)
        rows.extend(page.rows)
        pages += 1
        assert len(page.rows) <= query.limit
        if page.next is None:
            return rows
        assert page.next == Cursor({"started": page.rows[-1].created,
                                    "last_seen": page.rows[-1].last_seen,
                                    "remaining": page.rows[-1].deadline}[query.sort],
                                   page.rows[-1].key)
        query = ActiveQuery(now=query.now, sort=query.sort, user_id=query.user_id,
                            after=page.next, limit=query.limit)
        assert pages < 100, "the pages never end"


def expected_order(records, sort: ActiveSort) -> list[str]:
    value = {ActiveSort.STARTED: lambda record: record.created,
             ActiveSort.LAST_SEEN: lambda record: record.last_seen,
             ActiveSort.REMAINING: lambda record: record.deadline}[sort]
    return [record.key for record in sorted(records, key=lambda record: (value(record), record.key),
                                            reverse=sort.descending)]


@pytest.mark.parametrize("sort", list(ActiveSort))
def test_active_sessions_pages_walk_every_active_session_once_in_sort_order(store, sort):
    active = open_crowd(store)
    rows = walk(store, ActiveQuery(now=NOW, sort=sort, limit=4))
    assert [row.key for row in rows] == expected_order(active, sort)
    assert len({row.key for row in rows}) == len(active) == 22


@pytest.mark.parametrize("sort", list(ActiveSort))
def test_active_sessions_filtered_by_user_list_only_theirs(store, sort):
    active = open_crowd(store)
    rows = walk(store, ActiveQuery(now=NOW, sort=sort, user_id="7", limit=3))
    theirs = [record for record in active if record.user_id == "7"]
    assert [row.key for row in rows] == expected_order(theirs, sort)
    assert {row.user_id for row in rows} == {"7"}


def test_active_sessions_of_an_unknown_user_is_an_empty_last_page(store):
    open_crowd(store)
    page = store.active_sessions(ActiveQuery(now=NOW, user_id="nobody"))
    assert (page.rows, page.next) == ([], None)


def test_active_sessions_rows_are_the_records(store):
    store.open(key(1), "7", NOW - 100, ip="192.0.2.1", user_agent="Firefox")
    [row] = store.active_sessions(ActiveQuery(now=NOW)).rows
    assert row == store.get(key(1))


def test_active_sessions_leave_out_ended_and_overdue_sessions(store):
    store.open(key(1), "7", NOW - 100)
    store.open(key(2), "7", NOW - 100)
    store.end(key(2), "logged_out", NOW - 50)
    store.open(key(3), "7", NOW - IDLE)  # deadline is now
    assert [row.key for row in store.active_sessions(ActiveQuery(now=NOW)).rows] == [key(1)]


def test_active_sessions_page_of_exactly_the_limit_has_no_next(store):
    for index in range(5):
        store.open(key(index), "7", NOW - index)
    page = store.active_sessions(ActiveQuery(now=NOW, limit=5))
    assert len(page.rows) == 5
    assert page.next is None


def test_active_sessions_one_more_than_the_limit_is_on_the_next_page(store):
    for index in range(6):
        store.open(key(index), "7", NOW - index)
    first = store.active_sessions(ActiveQuery(now=NOW, limit=5))
    assert [row.key for row in first.rows] == [key(index) for index in range(5)]
    assert first.next == Cursor(NOW - 4, key(4))
    second = store.active_sessions(ActiveQuery(now=NOW, limit=5, after=first.next))
    assert [row.key for row in second.rows] == [key(5)]
    assert second.next is None


def test_active_sessions_after_the_last_row_is_empty(store):
    store.open(key(1), "7", NOW - 1)
    page = store.active_sessions(ActiveQuery(now=NOW, after=Cursor(0, "0" * 64)))
    assert page.rows == []
    ascending = store.active_sessions(ActiveQuery(now=NOW, sort=ActiveSort.REMAINING,
                                                  after=Cursor(NOW + 10 * IDLE, "f" * 64)))
    assert ascending.rows == []


def test_active_sessions_cursor_of_a_session_that_ended_meanwhile_still_works(store):
    for index in range(6):
        store.open(key(index), "7", NOW - index)
    first = store.active_sessions(ActiveQuery(now=NOW, limit=3))
    store.end(first.rows[-1].key, "revoked", NOW)  # the cursor's own row is gone
    second = store.active_sessions(ActiveQuery(now=NOW, limit=3, after=first.next))
    assert [row.key for row in second.rows] == [key(3), key(4), key(5)]


def test_active_sessions_touched_after_the_first_page_is_not_shown_twice(store):
    for index in range(4):
        store.open(key(index), "7", NOW - 100 + index)
    first = store.active_sessions(ActiveQuery(now=NOW, sort=ActiveSort.STARTED, limit=2))
    store.touch(first.rows[0].key, NOW)  # started never changes: a safe order to page by
    second = store.active_sessions(ActiveQuery(now=NOW, sort=ActiveSort.STARTED, limit=2,
                                               after=first.next))
    assert {row.key for row in first.rows} | {row.key for row in second.rows} == {
        key(index) for index in range(4)}
    assert not {row.key for row in first.rows} & {row.key for row in second.rows}


# -- recent_ends ---------------------------------------------------------------------------------

def end_crowd(store) -> list[SessionEnded]:
    """15 ended sessions of two users and three reasons, with ties on ended_at."""
    reasons = ("revoked", "logged_out", "idle_timeout")
    for index in range(15):
        store.open(key(index), "7" if index % 2 else "8", NOW - 1100)
        store.end(key(index), reasons[index % 3], NOW - 1000 + (index // 4) * 100)
    store.open(key("open"), "7", NOW - 10)  # open: never in the list
    return [SessionEnded(record.key, record.user_id, record.end_reason, record.ended_at,
                         record.ended_at - record.created)
            for record in store.records() if not record.is_open]


def walk_ends(store, query: EndsQuery) -> list[SessionEnded]:
    rows = []
    while True:
        page = store.recent_ends(query)
        rows.extend(page.rows)
        assert len(page.rows) <= query.limit
        if page.next is None:
            return rows
        assert page.next == Cursor(page.rows[-1].ended_at, page.rows[-1].session_key)
        query = EndsQuery(reason=query.reason, user_id=query.user_id, after=page.next,
                          limit=query.limit)
        assert len(rows) < 1000, "the pages never end"


def newest_first(events) -> list[SessionEnded]:
    return sorted(events, key=lambda event: (event.ended_at, event.session_key), reverse=True)


def test_recent_ends_pages_walk_every_end_once_newest_first(store):
    ended = end_crowd(store)
    assert walk_ends(store, EndsQuery(limit=4)) == newest_first(ended)


@pytest.mark.parametrize("reason", ["revoked", "logged_out", "idle_timeout", "ended_by_user"])
def test_recent_ends_filtered_by_reason_list_only_that_reason(store, reason):
    ended = end_crowd(store)
    rows = walk_ends(store, EndsQuery(reason=reason, limit=2))
    assert rows == newest_first(event for event in ended if event.reason == reason)
    assert len(rows) == {"ended_by_user": 0}.get(reason, 5)


def test_recent_ends_filtered_by_user_and_reason_list_both(store):
    ended = end_crowd(store)
    rows = walk_ends(store, EndsQuery(reason="revoked", user_id="7", limit=1))
    assert rows == newest_first(event for event in ended
                                if event.reason == "revoked" and event.user_id == "7")
    assert rows


def test_recent_ends_rows_carry_user_reason_time_and_length(store):
    store.open(key(1), "7", NOW - 500)
    store.end(key(1), "ended_by_user", NOW - 20)
    assert store.recent_ends(EndsQuery()).rows == [
        SessionEnded(key(1), "7", "ended_by_user", NOW - 20, 480)]


def test_recent_ends_page_of_exactly_the_limit_has_no_next_and_one_more_has(store):
    for index in range(3):
        store.open(key(index), "7", NOW - 100)
        store.end(key(index), "revoked", NOW - 50 + index)
    assert store.recent_ends(EndsQuery(limit=3)).next is None
    first = store.recent_ends(EndsQuery(limit=2))
    assert [row.session_key for row in first.rows] == [key(2), key(1)]
    second = store.recent_ends(EndsQuery(limit=2, after=first.next))
    assert [row.session_key for row in second.rows] == [key(0)]
    assert second.next is None


def test_recent_ends_of_an_empty_store_is_an_empty_last_page(store):
    page = store.recent_ends(EndsQuery())
    assert (page.rows, page.next) == ([], None)


# -- count_refusal -------------------------------------------------------------------------------

def test_refusals_are_counted_by_reason(store):
    for _ in range(3):
        store.count_refusal("ticket_mismatch", NOW - 5)
    store.count_refusal("session_lost", NOW - 2 * HOUR)
    assert store.summary(NOW).refused_by_reason == {
        "ticket_mismatch": 3, "ticket_expired": 0, "session_lost": 1}


def test_refusals_older_than_24_hours_are_not_shown(store):
    store.count_refusal("ticket_expired", NOW - 25 * HOUR)
    store.count_refusal("ticket_expired", NOW - WINDOW - 1)
    store.count_refusal("ticket_expired", NOW - 23 * HOUR)
    assert store.summary(NOW).refused_by_reason["ticket_expired"] == 1
    assert store.summary(NOW + 2 * HOUR).refused_by_reason["ticket_expired"] == 0


def test_refusals_counted_after_a_summary_add_to_those_before_it(store):
    store.count_refusal("session_lost", NOW - 10)
    assert store.summary(NOW).refused_by_reason["session_lost"] == 1
    store.count_refusal("session_lost", NOW - 5)  # the same hour: one row, added to
    store.count_refusal("session_lost", NOW - 2 * HOUR)
    assert store.summary(NOW).refused_by_reason["session_lost"] == 3


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sql_store_buffers_refusals_in_the_process_until_a_summary_flushes_them(store):
    store.count_refusal("ticket_mismatch", NOW - 10)
    store.count_refusal("ticket_mismatch", NOW - 20)
    assert raw(store, "SELECT reason, count FROM session_refusals") == []
    assert store.summary(NOW).refused_by_reason["ticket_mismatch"] == 2
    assert [tuple(row) for row in raw(store, "SELECT reason, count FROM session_refusals")] == [
        ("ticket_mismatch", 2)]


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sql_store_refusals_of_one_process_reach_another_once_flushed(make):
    first, second = make(), make()
    first.count_refusal("session_lost", NOW - 10)
    second.count_refusal("session_lost", NOW - 10)
    first.flush_refusals()
    second.flush_refusals()
    assert first.summary(NOW).refused_by_reason["session_lost"] == 2
    assert second.summary(NOW).refused_by_reason["session_lost"] == 2


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sql_store_writes_buffered_refusals_by_itself_after_the_flush_interval(make):
    first, second = make(), make()
    first.refusals_flush_interval = 0.05  # seconds; ten in production
    first.count_refusal("ticket_mismatch", NOW - 10)
    first.count_refusal("ticket_mismatch", NOW - 5)
    deadline = time.monotonic() + 5
    while not raw(second, "SELECT count FROM session_refusals") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [tuple(row) for row in raw(second, "SELECT reason, count FROM session_refusals")] \
        == [("ticket_mismatch", 2)], "no refusal waits for another one to be written"


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sql_store_closing_writes_the_buffered_refusals(make):
    first, second = make(), make()
    first.count_refusal("ticket_expired", NOW - 10)
    first.close()
    assert second.summary(NOW).refused_by_reason["ticket_expired"] == 1


@pytest.mark.parametrize("kind", ["memory"])
def test_memory_store_forgets_refusals_past_retention_when_it_sweeps(store):
    store.count_refusal("session_lost", NOW - 10)
    store.sweep(NOW + 2 * 86400)
    assert store.summary(NOW).refused_by_reason["session_lost"] == 0

