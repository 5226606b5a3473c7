"""``session-sweeper``: what it prints and how it exits."""
import io
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from session_expiry.scripts.sweeper import (
    STOP_SIGNALS,
    ProgressBar,
    stop_signals_held,
    sweep_once,
    until_stopped,
)
from session_expiry.settings import Policy
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.sql import SqlStore, engine_for
from tests.conftest import ROOT, SECRET, clear_redis, migrate
from tests.postgres import free_port

BIN = Path(sys.executable).parent


def ini_for(tmp_path, url, store="expiry:sql", session_url=None) -> Path:
    """testing.ini on ``store``, the application database at ``url``; ``session_url``: the
    store's own (the Redis store's server)."""
    text = (ROOT / "testing.ini").read_text()
    line = f"session.type = {store}"
    if session_url is not None:
        line += f"\nsession.url = {session_url}"
    text = text.replace("session.type = expiry:memory", line)
    text = "\n".join(
        f"sqlalchemy.url = {url}" if line.startswith("sqlalchemy.url") else
        f"session_expiry.secret = {SECRET}" if line.startswith("session_expiry.secret") else line
        for line in text.splitlines())
    path = tmp_path / "sweeper.ini"
    path.write_text(text)
    return path


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    migrate(url)
    return url


@pytest.fixture
def redis_url(redis_server) -> str:
    """The suite's Redis server, emptied."""
    clear_redis(redis_server.url)
    return redis_server.url


def store_at(url, policy):
    """The store that keeps its sessions at ``url``: Redis, or SQL."""
    if url.startswith("redis://"):
        return RedisStore(url, policy, clock=time.time)
    return SqlStore(engine_for(url), policy, clock=time.time)


def overdue_sessions(url, idle=2, absolute=1):
    """Sessions whose idle (or absolute) deadline passed an hour ago."""
    now = int(time.time())
    policy = Policy(idle_timeout=1200, absolute_timeout=8 * 3600)
    store = store_at(url, policy)
    for n in range(idle):
        store.open(f"{n:064x}", "1", now - 3600 - 1200)
    short = store_at(url, Policy(idle_timeout=1200, absolute_timeout=1200))
    for n in range(absolute):
        short.open(f"{n + 100:064x}", "2", now - 3600 - 1200)
    store.close()
    short.close()


def sweeper(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "session-sweeper"), *map(str, args)], check=False,
                          capture_output=True,
                          text=True, timeout=timeout)


def test_once_ends_overdue_sessions_and_prints_a_summary(tmp_path, sqlite_url):
    overdue_sessions(sqlite_url)
    done = sweeper(ini_for(tmp_path, sqlite_url), "--once")
    assert done.returncode == 0, done.stderr
    assert "session-sweeper: ended=3 (absolute_timeout=1, idle_timeout=2) notified=3" in done.stdout
    assert done.stderr.count("session ended:") == 3  # the log line of each SessionEnded
    again = sweeper(ini_for(tmp_path, sqlite_url), "--once")
    assert "ended=0 notified=0" in again.stdout


def test_once_ends_the_redis_stores_overdue_sessions_and_prints_a_summary(
        tmp_path, sqlite_url, redis_url):
    overdue_sessions(redis_url)
    ini = ini_for(tmp_path, sqlite_url, store="expiry:redis", session_url=redis_url)
    done = sweeper(ini, "--once")
    assert done.returncode == 0, done.stderr
    assert "session-sweeper: ended=3 (absolute_timeout=1, idle_timeout=2) notified=3" in done.stdout
    assert done.stderr.count("session ended:") == 3  # the log line of each SessionEnded
    store = RedisStore(redis_url, Policy(), clock=time.time)
    try:
        ended = {record.key: record.end_reason for record in store.records()}
        assert store.due_count(int(time.time())) == 0
    finally:
        store.close()
    assert ended == {f"{0:064x}": "idle_timeout", f"{1:064x}": "idle_timeout",
                     f"{100:064x}": "absolute_timeout"}
    again = sweeper(ini, "--once")
    assert again.returncode == 0, again.stderr
    assert "ended=0 notified=0" in again.stdout


def test_the_memory_store_is_refused_with_exit_code_2(tmp_path, sqlite_url):
    done = sweeper(ini_for(tmp_path, sqlite_url, store="expiry:memory"), "--once")
    assert done.returncode == 2
    assert "for expiry:sql and expiry:redis" in done.stderr


def test_a_database_that_is_down_exits_1_with_a_clear_message(tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    done = sweeper(ini_for(tmp_path, url), "--once")
    assert done.returncode == 1
    assert "cannot be reached" in done.stderr and "Traceback" not in done.stderr


def test_a_redis_that_is_down_exits_1_with_a_clear_message(tmp_path, sqlite_url):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    done = sweeper(ini_for(tmp_path, sqlite_url, store="expiry:redis", session_url=down),
                   "--once")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "session-sweeper: the session store cannot be reached: Redis: " in done.stderr
    assert "Traceback" not in done.stderr and "ended=" not in done.stdout
    assert time.monotonic() - started < 30, "a Redis that is down is found out quickly"


@pytest.mark.parametrize(("args", "says"), [
    (["--once", "--batch", "0"], "is not a whole number from 1 to 10,000"),
    (["--once", "--batch", "10001"], "is not a whole number from 1 to 10,000"),
    (["--once", "--batch", "9" * 5000], "is not a whole number from 1 to 10,000"),
    (["--every", "soon"], "is not a duration"),
    (["--every", "0s"], "must be 1 second to 1 day"),
    (["--every", "1000000000000d"], "must be 1 second to 1 day"),
    (["--every", "1" * 5000], "is too long"),
    ([], "one of the arguments --once --every is required")])
def test_bad_arguments_exit_2_saying_what_is_wrong(tmp_path, sqlite_url, args, says):
    done = sweeper(ini_for(tmp_path, sqlite_url), *args)
    assert done.returncode == 2 and "usage:" in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_contradictory_ini_exits_2_naming_the_key(tmp_path, sqlite_url):
    ini = ini_for(tmp_path, sqlite_url)
    ini.write_text(ini.read_text().replace("[app:main]", "[app:main]\nsession.timeout = 60"))
    done = sweeper(ini, "--once")
    assert done.returncode == 2 and "session.timeout" in done.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_every_runs_until_a_stop_signal_then_exits_0(tmp_path, sqlite_url, stop):
    overdue_sessions(sqlite_url, idle=1, absolute=0)
    process = subprocess.Popen([str(BIN / "session-sweeper"), str(ini_for(tmp_path, sqlite_url)),
                                "--every", "1s"], stdout=subprocess.PIPE, text=True)
    runs = []
    deadline = time.monotonic() + 30  # a busy machine may take seconds to start it
    while len(runs) < 2 and time.monotonic() < deadline and process.poll() is None:
        if select.select([process.stdout], [], [], 0.5)[0]:
            line = process.stdout.readline()
            if line.startswith("session-sweeper: ended="):
                runs.append(line)
    process.send_signal(stop)
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    runs += [line for line in out.splitlines() if line.startswith("session-sweeper: ended=")]
    assert len(runs) >= 2 and runs[0].startswith("session-sweeper: ended=1 ")


def stop_main_thread(signum=signal.SIGTERM) -> None:
    """Sent to the main thread, which holds it: never to a thread that would die of it."""
    signal.pthread_kill(threading.main_thread().ident, signum)


def test_a_stop_signal_sent_during_a_pass_ends_the_loop_once_that_pass_is_done():
    passes = []

    def work():
        assert not passes, "a second pass: the signal sent during the first was lost"
        stop_main_thread()
        time.sleep(0.05)  # the rest of the pass, after the signal
        passes.append("done")

    with stop_signals_held():
        until_stopped(5, work)
    assert passes == ["done"]


def test_a_stop_signal_at_any_moment_of_the_loop_ends_it():
    """A pass and a wait alternate every millisecond; each signal lands wherever it
    lands (inside a wait's own bookkeeping too), ends its loop and is taken by it."""
    rng = random.Random(9)
    with stop_signals_held():
        for _ in range(200):
            sender = threading.Timer(rng.uniform(0, 0.005), stop_main_thread)
            sender.start()
            until_stopped(0.001, lambda: None)
            sender.join()
            assert not signal.sigpending() & STOP_SIGNALS


def test_signals_held_are_let_go_afterwards_and_a_second_stop_is_not_delivered_late():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with stop_signals_held():
        assert STOP_SIGNALS.issubset(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        stop_main_thread(signal.SIGTERM)
        stop_main_thread(signal.SIGINT)  # both came: the loop takes one
        until_stopped(5, lambda: None)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert not signal.sigpending() & STOP_SIGNALS


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request) -> str:
    """Where a shared store keeps its sessions: a migrated SQLite file, the Redis server."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "redis_url")


def test_a_progress_bar_is_drawn_on_a_terminal_and_cleared(shared_url):
    overdue_sessions(shared_url, idle=5, absolute=0)
    store = store_at(shared_url, Policy())
    terminal = Terminal()
    try:
        assert sweep_once(store, batch=2, out=terminal) == 0
    finally:
        store.close()
    shown = terminal.getvalue()
    bar, cleared, summary = shown.rpartition("\r" + " " * 60 + "\r")
    assert "sweeping [" in bar and bar.endswith("5/5")
    assert cleared and summary.startswith("session-sweeper: ended=5 (idle_timeout=5) notified=5")


def test_no_progress_bar_when_not_on_a_terminal(shared_url):
    overdue_sessions(shared_url, idle=2, absolute=0)
    store = store_at(shared_url, Policy())
    out = io.StringIO()
    try:
        sweep_once(store, batch=1, out=out)
    finally:
        store.close()
    assert "sweeping [" not in out.getvalue() and "ended=2" in out.getvalue()


def test_progress_bar_fills_in_proportion():
    stream = io.StringIO()
    ProgressBar(stream)(15, 30)
    assert stream.getvalue() == "\rsweeping [" + "#" * 15 + "." * 15 + "] 15/30"


def test_production_ini_as_shipped_sweeps_postgresql(postgres):
    url = postgres.create_database("production_sweep")
    migrate(url)
    overdue_sessions(url, idle=3, absolute=2)
    done = subprocess.run([str(BIN / "session-sweeper"), str(ROOT / "production.ini"), "--once"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "SQLALCHEMY_URL": url,
                               "SESSION_EXPIRY_SECRET": "s" * 48})
    assert done.returncode == 0, done.stderr
    assert "ended=5 (absolute_timeout=2, idle_timeout=3) notified=5" in done.stdout


def test_a_missing_ini_exits_2(tmp_path):
    done = sweeper(tmp_path / "nowhere.ini", "--once")
    assert done.returncode == 2 and "no such ini file" in done.stderr


def test_an_unmigrated_database_says_what_to_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    done = sweeper(ini_for(tmp_path, url), "--once")
    assert done.returncode == 1
    assert "session tables are missing" in done.stderr and "session-expiry-db" in done.stderr
