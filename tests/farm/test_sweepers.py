"""Sweepers against one PostgreSQL: exactly one event row per session, every one notified."""
import re
import signal
import time

import sqlalchemy as sa

from tests.farm.conftest import run_sweeper, write_ini

SESSIONS = 10_000

OVERDUE = sa.text("""
    INSERT INTO sessions (key, user_id, data, version, created, last_seen, idle_deadline,
                          absolute_deadline, sweep_at)
    SELECT encode(sha256(convert_to('session-' || g, 'UTF8')), 'hex'), (g % 3 + 1)::text,
           '{}'::json, 0, now() - interval '2 hours', now() - interval '2 hours',
           now() - interval '1 hour' - g * interval '1 millisecond',
           now() + interval '6 hours', now() - interval '1 hour'
    FROM generate_series(1, :count) AS g
""")


def fill(url: str, count: int = SESSIONS) -> sa.Engine:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(OVERDUE, {"count": count})
    return engine


def events(engine) -> dict:
    with engine.connect() as conn:
        row = conn.execute(sa.text("""
            SELECT count(*) AS rows, count(DISTINCT session_key) AS sessions,
                   count(*) - (SELECT count(*) FROM session_outbox) AS notified
            FROM session_events""")).one()
        still_open = conn.execute(sa.text(
            "SELECT count(*) FROM sessions")).scalar()
    return {"rows": row.rows, "sessions": row.sessions, "notified": row.notified,
            "open": still_open}


def ended_in(output: str) -> int:
    return int(re.search(r"ended=(\d+)", output).group(1))


def test_four_sweepers_at_once_leave_exactly_one_event_row_per_session(tmp_path, farm_url):
    engine = fill(farm_url)
    ini = write_ini(tmp_path, farm_url)
    sweepers = [run_sweeper(ini, "--once", "--batch", "200") for _ in range(4)]
    outputs = [sweeper.communicate(timeout=240) for sweeper in sweepers]
    assert [sweeper.returncode for sweeper in sweepers] == [0, 0, 0, 0], outputs
    assert sum(ended_in(out) for out, _ in outputs) == SESSIONS
    assert events(engine) == {"rows": SESSIONS, "sessions": SESSIONS, "notified": SESSIONS,
                              "open": 0}
    engine.dispose()


def wait_until_still(engine, seconds: float = 60, quiet: float = 1.0) -> dict:
    """The events once their count has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + seconds
    last, since = events(engine), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = events(engine)
        if now != last:
            last, since = now, time.monotonic()
        elif last["rows"] and time.monotonic() - since >= quiet:
            return last
    raise AssertionError(f"the sweeper never stopped mid-run: {last}")


def test_a_sweeper_killed_mid_run_leaves_nothing_twice_and_nothing_unsent(tmp_path, farm_url):
    engine = fill(farm_url)
    ini = write_ini(tmp_path, farm_url)
    # Its log is never read: once the pipe is full, the sweeper blocks writing a
    # "session ended" line, that is while sending a batch whose sessions are ended
    # and logged (committed) and whose sending is not (its transaction is open).
    sweeper = run_sweeper(ini, "--once", "--batch", "10")
    frozen = wait_until_still(engine)
    sweeper.send_signal(signal.SIGKILL)
    sweeper.wait(timeout=10)
    at_kill = events(engine)
    assert at_kill == frozen
    assert 0 < at_kill["rows"] < SESSIONS, "the kill did not land mid-run"
    assert at_kill["notified"] < at_kill["rows"], "the batch being sent stays unsent"

    again = run_sweeper(ini, "--once", "--batch", "500")
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    assert f"notified={SESSIONS - at_kill['notified']}" in out
    assert events(engine) == {"rows": SESSIONS, "sessions": SESSIONS, "notified": SESSIONS,
                              "open": 0}
    engine.dispose()
