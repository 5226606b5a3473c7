"""The Redis store's benchmarks at toy size: the HTTP peers (every variant serves, signs in,
is loaded by wrk for a second, and has its Redis commands counted), the sweeper (the real
``session-sweeper``, one process and four, checked after each sweep), the report and the
memory per session; every figure is reported. Nothing here is about speed: the full runs
(``python -m benchmarks.redis_peers``, ``redis_sweeper``, ``redis_report``,
``redis_memory``) are not part of the suite. Every Redis is a real ``redis-server``."""
from __future__ import annotations

import time

import pytest
from benchmarks import redis_memory, redis_peers, redis_report
from benchmarks.redis_load import index_of, key_of, policy
from benchmarks.redis_sweeper import PROCESSES, Bench, figures
from benchmarks.report_scale import NOW, SMOKE, Timing

from session_expiry.stores.readmodel import EndsQuery
from session_expiry.stores.redis import RedisStore
from tests.redis_server import RedisServer

SESSIONS = 400


def test_the_http_smoke_run_measures_every_variant_and_counts_redis_writes():
    found = redis_peers.measure(smoke=True)

    rates = {figure.name: figure.value for figure in found if figure.section == "HTTP, Redis"}
    assert set(rates) == {redis_peers.LABELS[name] for name in redis_peers.ORDER}
    assert all(rate > 0 for rate in rates.values()), rates
    assert all(figure.met is None for figure in found), "a smoke run judges nothing"
    ratios = [figure for figure in found if figure.section == "HTTP ratio, Redis"]
    assert len(ratios) == len(redis_peers.RATIOS) and all(r.value > 0 for r in ratios)
    writes = {figure.name: figure for figure in found if figure.section == "Redis writes"}
    ours = writes[redis_peers.LABELS["expiry_redis"]]
    classic = writes[redis_peers.LABELS["classic_redis"]]
    ceiling = writes[redis_peers.LABELS["bare_get"]]
    # session-expiry touches at most once per touch_interval (two minutes here); the count
    # starts after a request that made any touch due. pyramid_session_redis refreshes its
    # key's TTL on every request.
    assert ours.value == 0, ours
    assert classic.value >= 10, classic
    assert ceiling.value == 0, ceiling
    # What a read-only request sends: ours one HGETALL (one round trip), the ceiling a GET.
    assert "every command a request: HGETALL 1.00" in ours.comparison, ours
    assert "every command a request: GET 1.00" in ceiling.comparison, ceiling


def test_a_redis_writes_count_names_each_command_per_request():
    assert redis_peers.per_request({"expire": 1000, "setex": 3}, 1000) == \
        "EXPIRE 1.00, SETEX 3 in all"
    assert redis_peers.per_request({}, 1000) == "none"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    server = RedisServer().start()  # its own: the bench saves snapshots and restarts it
    bench = Bench(server, SESSIONS, tmp_path_factory.mktemp("redis-sweeper"))
    bench.load()
    yield bench
    server.stop()


def test_the_loaded_keys_tell_which_session_they_are():
    assert [index_of(key_of(i)) for i in (1, 999_999, 10**12)] == [1, 999_999, 10**12]
    assert len(key_of(7)) == 64 and key_of(7) != key_of(8)


def test_every_redis_sweeper_run_ends_each_session_once_and_the_figures_are_reported(bench):
    runs = {"bare": [bench.bare()], "writes": [bench.same_writes()]}  # checked
    runs.update({f"{n}": [bench.sweepers(n)] for n in PROCESSES})  # each run is checked

    found = {figure.name: figure for figure in figures(runs, SESSIONS, smoke=True)}

    assert set(found) == {"bare script: ZREM/ZREMRANGEBYSCORE per partition (floor)",
                          "bare script with the same writes, no notification (no target)",
                          "session-sweeper on Redis, 1 process",
                          "session-sweeper on Redis, 4 processes",
                          "peak RSS of a sweeper process on Redis"}
    assert all(figure.value > 0 for figure in found.values()), found
    assert all(figure.met is None for figure in found.values()), "a smoke run judges nothing"
    assert 20 < found["peak RSS of a sweeper process on Redis"].value < 1000, "MB, from wait4"


def test_the_redis_check_refuses_a_sweep_that_left_sessions_open(bench):
    client = bench.fresh()  # nothing swept
    try:
        with pytest.raises(SystemExit, match="'still_open': 1200"):  # due, seen and born
            bench.check(client, log_lines=0)
    finally:
        client.close()


def test_the_redis_check_refuses_a_sweep_whose_log_lines_do_not_match(bench):
    client = bench.fresh()
    try:
        store = RedisStore(bench.server.url, policy(), clock=time.time)
        assert store.sweep(int(time.time())).total_ended == SESSIONS
        store.close()
        bench.check(client, log_lines=SESSIONS)  # Redis is right
        with pytest.raises(SystemExit, match="log lines"):
            bench.check(client, log_lines=SESSIONS - 1)
    finally:
        client.close()


def test_the_redis_report_smoke_run_times_every_operation_on_the_loaded_data():
    server = RedisServer().start()
    try:
        timings: list[Timing] = []
        assert redis_report.run(server.url, SMOKE, 1, True, timings) == 0
        store = RedisStore(server.url, policy(), clock=lambda: NOW)
        summary = store.summary(NOW)
        ends = store.recent_ends(EndsQuery())
        store.close()
    finally:
        server.stop()
    assert {timing.name for timing in timings} >= {
        "summary", "active last_seen first page", "ends first page", "report page total"}
    assert all(timing.median > 0 for timing in timings)
    # The data is the report benchmark's: every open session active, ends over 30 days.
    assert summary.active == SMOKE.active
    assert 0 < summary.ended < SMOKE.tombstones
    assert ends.rows and ends.rows[0].ended_at <= NOW


def test_the_redis_report_figures_are_the_bench_tables():
    found = redis_report.figures(smoke=True)
    assert [figure.name for figure in found] == [
        "summary", "active started first page", "active started next page",
        "ends first page", "ends by user", "report page total"]
    assert all(figure.value > 0 and figure.met is None for figure in found)


def test_the_redis_memory_smoke_run_reports_both_sides():
    found = {figure.name: figure for figure in redis_memory.measure(smoke=True, sessions=500)}

    ours = found["Redis memory per session, session-expiry Redis store"]
    classic = found["Redis memory per session, pyramid_session_redis"]
    assert 100 < ours.value < 20_000, ours  # bytes
    assert 100 < classic.value < 20_000, classic
    assert all(figure.met is None for figure in found.values())
