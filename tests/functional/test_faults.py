"""Faults: the database (or Redis) stops under a running app, the store fails at the save, a
memory store restarts. Each ends in an answer the client can use (a 503, the expired page),
never a 500 or a traceback, nothing is half-written, and the service comes back by itself.

The PostgreSQL tests run on a server of their own (this module's), not the suite's shared
one: they stop it, restart it and lock its rows. The Redis tests likewise run on a Redis of
their own, which they kill and restart on the same port (its append-only file, fsynced at
every write, brings the sessions back as they were).
"""
from __future__ import annotations

import logging
import subprocess
import time

import pytest
import sqlalchemy as sa
from pyramid.paster import get_appsettings
from webtest import TestApp

from tests.conftest import (
    FETCH,
    HTMX,
    PAGE,
    ROOT,
    SECRET,
    Apps,
    csrf_token,
    login,
    migrate,
    query,
    seed_users,
    session_key_of,
)
from tests.postgres import PostgresServer
from tests.redis_server import RedisServer

#: What PostgresServer.start passes to the server; a restart uses the same.
SERVER_OPTIONS = ("-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
#: The app's own lock_timeout in the lock test (milliseconds): a blocked save fails fast.
LOCK_TIMEOUT_MS = 200
#: The Redis test's like of it: the app's socket timeout (seconds), and how long Redis
#: holds every write back (milliseconds), far longer.
REDIS_TIMEOUT, PAUSE_MS = 0.3, 20_000


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    """This module's PostgreSQL: stopped and restarted by the outage test."""
    server = PostgresServer().start()
    yield server
    server.stop()


def pg_ctl(server: PostgresServer, *args: str):
    return server._run("pg_ctl", "-D", str(server.data), *args)


def is_running(server: PostgresServer) -> bool:
    try:
        pg_ctl(server, "status")
    except subprocess.CalledProcessError:  # pg_ctl status exits 3 when no server runs
        return False
    return True


def stop(server: PostgresServer) -> None:
    pg_ctl(server, "-m", "fast", "-w", "-t", "15", "stop")


def start_again(server: PostgresServer) -> None:
    """The same data directory, port and options as PostgresServer.start."""
    options = SERVER_OPTIONS.format(port=server.port, root=server.root)
    pg_ctl(server, "-o", options, "-l", str(server.root / "server.log"), "-w", "-t", "15",
           "start")


@pytest.fixture
def running(pg):
    """``pg``, and running again after the test whatever happened in it."""
    yield pg
    if not is_running(pg):
        start_again(pg)


def fresh_database(server: PostgresServer, name: str) -> str:
    url = server.create_database(name)
    migrate(url)
    seed_users(url)
    return url


@pytest.fixture
def settings(clock) -> dict:
    """The testing ini's settings; each test names its store and database."""
    values = dict(get_appsettings(str(ROOT / "testing.ini")))
    values.update({
        "session_expiry.secret": SECRET,
        "session_expiry.clock": clock,
        "session_expiry.idle_timeout": "20m",
        "session_expiry.absolute_timeout": "8h",
        "session_expiry.warn_before": "2m",
    })
    return values


@pytest.fixture
def build(settings):
    built = Apps(settings)
    yield built
    built.close()


# -- helpers --------------------------------------------------------------------------------

def draft(browser: TestApp, field: str, value: str, status: int | str = 200):
    return browser.post_json("/api/draft", {"field": field, "value": value},
                             headers={**FETCH, "X-CSRF-Token": csrf_token(browser)},
                             status=status)


def rows_of(url: str, user: str) -> list:
    """The open session rows of ``user``, read straight from the database (ending a
    session moves it out of ``sessions``)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT s.key, s.data, s.version FROM sessions s "
                "JOIN users u ON s.user_id = CAST(u.id AS VARCHAR) WHERE u.username = :name"),
                {"name": user}).all()
    finally:
        engine.dispose()


def event_count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM session_events")).scalar_one()
    finally:
        engine.dispose()


def drafts_in(data: dict) -> dict:
    return {name: value for name, value in data.items() if not name.startswith("_")}


def assert_page_503(answer) -> None:
    assert answer.status_int == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.content_type == "text/html"
    assert "briefly unavailable" in answer.text
    assert "no-store" in answer.headers["Cache-Control"]
    for leak in ("Traceback", "psycopg", "OperationalError", "sqlalchemy", "StoreUnavailable",
                 "redis", "Redis", "ConnectionError", "Connection refused"):
        assert leak not in answer.text


def assert_json_503(answer) -> None:
    assert answer.status_int == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.content_type == "application/json"
    assert answer.json == {"error": "unavailable"}
    assert "no-store" in answer.headers["Cache-Control"]


def every_request_is_503(alice, alice_csrf, admin, stranger, stranger_csrf) -> None:
    """During an outage: every request that needs the store (signed-in pages, JSON, a draft,
    a form post, sign-in, logout, the report) is a 503 of its kind."""
    assert_page_503(alice.get("/workspace", headers=PAGE, status="*"))
    assert_json_503(alice.get("/api/notes", headers=FETCH, status="*"))
    assert_json_503(draft(alice, "title", "during the outage", status="*"))
    assert_json_503(alice.get("/session/status", headers=FETCH, status="*"))
    assert_page_503(alice.post("/workspace", {"title": "typed during the outage",
                                              "csrf_token": alice_csrf},
                               headers=PAGE, status="*"))
    assert_page_503(alice.get("/login", headers=PAGE, status="*"))
    assert_page_503(alice.post("/login", {"username": "alice", "password": "alice-password",
                                          "csrf_token": alice_csrf},
                               headers=PAGE, status="*"))
    assert_page_503(alice.post("/logout", {"csrf_token": alice_csrf}, headers=PAGE,
                               status="*"))
    assert_page_503(admin.get("/admin/sessions", headers=PAGE, status="*"))
    # A visitor with no session needs no store to see the form; signing in needs it (the
    # users' database on SQL, the store to open the session in on either).
    assert stranger.get("/login", headers=PAGE).status_int == 200
    assert_page_503(stranger.post("/login", {"username": "bob", "password": "bob-password",
                                             "csrf_token": stranger_csrf},
                                  headers=PAGE, status="*"))


# -- 1. the database stops while the app runs -----------------------------------------------

def test_the_database_stopping_under_a_running_app_gets_503s_and_it_comes_back_by_itself(
        running, build):
    url = fresh_database(running, "outage")
    alice = build(session__type="expiry:sql", sqlalchemy__url=url)
    login(alice)
    assert draft(alice, "title", "before the outage").json == {"saved": "draft_title"}
    admin = TestApp(alice.app)
    login(admin, "admin")
    assert admin.get("/admin/sessions", headers=PAGE).status_int == 200
    [before] = rows_of(url, "alice")
    alice_csrf = csrf_token(alice)
    stranger = TestApp(alice.app)
    stranger_csrf = csrf_token(stranger)  # the login form was loaded before the outage

    stop(running)
    assert not is_running(running)

    every_request_is_503(alice, alice_csrf, admin, stranger, stranger_csrf)

    start_again(running)  # the same data directory and port; the app is not rebuilt
    # (The stranger's sign-in above met the application database's dead pooled connection,
    # so SQLAlchemy dropped that pool; the next test restarts with no request in between.)

    notes = alice.get("/api/notes", headers=FETCH)
    assert notes.json["user"] == "alice", "the same browser's next request is served"
    assert "Session-Expires-In" in notes.headers
    [after] = rows_of(url, "alice")
    assert after.key == before.key, "the same session, still open, not a new one"
    assert event_count(url) == 0, "the outage ended nothing"
    assert drafts_in(after.data) == {"draft_title": "before the outage"}, \
        "the draft written before the outage is kept, nothing attempted during it was written"
    assert after.version == before.version
    assert admin.get("/admin/sessions", headers=PAGE).status_int == 200
    assert draft(alice, "body", "after the outage").json == {"saved": "draft_body"}
    [last] = rows_of(url, "alice")
    assert drafts_in(last.data) == {"draft_title": "before the outage",
                                    "draft_body": "after the outage"}
    login(stranger, "bob")
    assert stranger.get("/api/notes", headers=FETCH).json["user"] == "bob"


def test_a_database_restart_between_two_requests_costs_the_next_request_nothing(
        running, build):
    """Nobody asked while the database was down: the connections pooled before it are
    stale, and the first request after it must not be the one that finds out."""
    url = fresh_database(running, "restart")
    alice = build(session__type="expiry:sql", sqlalchemy__url=url)
    login(alice)
    assert alice.get("/api/notes", headers=FETCH).json["user"] == "alice"
    stop(running)
    start_again(running)
    notes = alice.get("/api/notes", headers=FETCH, status="*")
    assert notes.status_int == 200, notes.text
    assert notes.json["user"] == "alice"
    assert alice.get("/workspace", headers=PAGE).status_int == 200


# -- 1b. Redis stops while the app runs -----------------------------------------------------

@pytest.fixture(scope="module")
def own_redis():
    """This module's Redis: killed and restarted by the outage tests. Every write is in its
    append-only file before Redis answers, so a restart loses nothing."""
    with RedisServer(appendonly=True, appendfsync="always") as server:
        yield server


@pytest.fixture
def redis_running(own_redis):
    """``own_redis``, emptied, and running again after the test whatever happened in it."""
    with own_redis.client() as client:
        client.flushall()
    yield own_redis
    if not own_redis.running:
        own_redis.restart()


def user_id_of(url: str, user: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT id FROM users WHERE username = :name"),
                                    {"name": user}).scalar_one())
    finally:
        engine.dispose()


def redis_sessions_of(app: TestApp, url: str, user: str) -> list:
    """(record, (data, version) or None) of each of ``user``'s sessions that Redis holds
    (open or ended), found by a scan of Redis itself; ``url``: the users' database."""
    store = app.app.registry.session_expiry.store
    user_id = user_id_of(url, user)
    found = []
    for record in store.records():
        if record.user_id == user_id:
            data = store.load_data(record.key)
            found.append((record, None if data is None else (dict(data.values()),
                                                             data.version)))
    return found


def redis_ended_count(server: RedisServer) -> int:
    """How many end events Redis holds, in every partition's stream."""
    with server.client() as client:
        return sum(client.xlen(name) for name in client.scan_iter(match="*events", count=1000))


def test_redis_stopping_under_a_running_app_gets_503s_and_it_comes_back_by_itself(
        redis_running, build, database_url):
    alice = build(session__type="expiry:redis", session__url=redis_running.url,
                  sqlalchemy__url=database_url)
    login(alice)
    assert draft(alice, "title", "before the outage").json == {"saved": "draft_title"}
    admin = TestApp(alice.app)
    login(admin, "admin")
    assert admin.get("/admin/sessions", headers=PAGE).status_int == 200
    [(before, (before_data, before_version))] = redis_sessions_of(alice, database_url, "alice")
    assert before.is_open and before.key == session_key_of(alice)
    alice_csrf = csrf_token(alice)
    stranger = TestApp(alice.app)
    stranger_csrf = csrf_token(stranger)  # the login form was loaded before the outage

    redis_running.kill()  # kill -9: no shutdown, nothing more written
    assert not redis_running.running

    started = time.monotonic()
    every_request_is_503(alice, alice_csrf, admin, stranger, stranger_csrf)
    assert time.monotonic() - started < 30, "a Redis that is down is a quick 503, not a hang"

    redis_running.restart()  # the same port and append-only file; the app is not rebuilt

    notes = alice.get("/api/notes", headers=FETCH)
    assert notes.json["user"] == "alice", "the same browser's next request is served"
    assert "Session-Expires-In" in notes.headers
    [(after, (after_data, after_version))] = redis_sessions_of(alice, database_url, "alice")
    assert after.key == before.key and after.is_open, "the same session, still open"
    assert redis_ended_count(redis_running) == 0, "the outage ended nothing"
    assert drafts_in(after_data) == {"draft_title": "before the outage"}, \
        "the draft written before the outage is kept, nothing attempted during it was written"
    assert after_version == before_version
    assert drafts_in(before_data) == drafts_in(after_data)
    assert admin.get("/admin/sessions", headers=PAGE).status_int == 200
    assert draft(alice, "body", "after the outage").json == {"saved": "draft_body"}
    [(_, (last_data, _))] = redis_sessions_of(alice, database_url, "alice")
    assert drafts_in(last_data) == {"draft_title": "before the outage",
                                    "draft_body": "after the outage"}
    login(stranger, "bob")
    assert stranger.get("/api/notes", headers=FETCH).json["user"] == "bob"


def test_a_redis_restart_between_two_requests_costs_the_next_request_nothing(
        redis_running, build, database_url):
    """Nobody asked while Redis was down: the connections pooled before it are stale, and
    the first request after it must not be the one that finds out."""
    alice = build(session__type="expiry:redis", session__url=redis_running.url,
                  sqlalchemy__url=database_url)
    login(alice)
    assert alice.get("/api/notes", headers=FETCH).json["user"] == "alice"
    redis_running.restart()  # SIGTERM, then started again on the same port and file
    notes = alice.get("/api/notes", headers=FETCH, status="*")
    assert notes.status_int == 200, notes.text
    assert notes.json["user"] == "alice"
    assert alice.get("/workspace", headers=PAGE).status_int == 200


# -- 2. a store failure inside the save still ends as that 503 ------------------------------

class RowLock:
    """Another connection holding the row of one session ``FOR UPDATE``."""

    def __init__(self, url: str, key: str):
        self.engine = sa.create_engine(url)
        self.conn = self.engine.connect()
        self.transaction = self.conn.begin()
        locked = self.conn.execute(sa.text(
            "SELECT key FROM sessions WHERE key = :key FOR UPDATE NOWAIT"), {"key": key}).all()
        assert len(locked) == 1

    def release(self):
        self.transaction.rollback()
        self.conn.close()
        self.engine.dispose()


def test_a_store_failure_at_the_save_answers_503_and_writes_nothing(
        running, build, caplog):
    url = fresh_database(running, "locks")
    app_url = f"{url}?options=-c%20lock_timeout%3D{LOCK_TIMEOUT_MS}"
    alice = build(session__type="expiry:sql", sqlalchemy__url=app_url)
    login(alice)
    draft(alice, "title", "saved before")
    csrf = csrf_token(alice)
    [before] = rows_of(url, "alice")

    lock = RowLock(url, session_key_of(alice))
    try:
        with caplog.at_level(logging.ERROR, logger="session_expiry.tween"):
            started = time.monotonic()
            fetch = draft(alice, "title", "written while locked", status="*")
            page = alice.post("/workspace", {"title": "typed while locked",
                                             "csrf_token": csrf}, headers=PAGE, status="*")
            elapsed = time.monotonic() - started
        # Judging the request read the row (a plain read waits for no lock): only the save,
        # after the view ran, met the lock.
        status = alice.get("/session/status", headers=FETCH).json
        assert status["state"] == "active"
    finally:
        lock.release()

    assert_json_503(fetch)
    assert_page_503(page)
    assert "Set-Cookie" not in fetch.headers and "Set-Cookie" not in page.headers
    saves_failed = [r for r in caplog.records
                    if r.getMessage().startswith("session store unavailable, session data "
                                                 "not saved")]
    assert len(saves_failed) == 2, [r.getMessage() for r in caplog.records]
    assert elapsed < 10, "the app's lock_timeout, not a long wait, ended the save"
    [after] = rows_of(url, "alice")
    assert drafts_in(after.data) == {"draft_title": "saved before"}
    assert after.version == before.version
    assert event_count(url) == 0, "the lock ended nothing"
    # The lock gone, the same write goes through.
    assert draft(alice, "title", "written after").json == {"saved": "draft_title"}
    [last] = rows_of(url, "alice")
    assert drafts_in(last.data) == {"draft_title": "written after"}


def test_a_redis_that_stops_answering_at_the_save_answers_503_and_writes_nothing(
        redis_running, build, database_url, caplog):
    """Redis pauses every write (``CLIENT PAUSE … WRITE``; reads go on): the save, after the
    view ran, is the only step that waits, and the app's own socket timeout ends it."""
    alice = build(session__type="expiry:redis",
                  session__url=f"{redis_running.url}?socket_timeout={REDIS_TIMEOUT}",
                  sqlalchemy__url=database_url)
    login(alice)
    draft(alice, "title", "saved before")
    csrf = csrf_token(alice)
    [(before, (_, before_version))] = redis_sessions_of(alice, database_url, "alice")

    with redis_running.client() as admin_client:
        admin_client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        try:
            with caplog.at_level(logging.ERROR, logger="session_expiry.tween"):
                started = time.monotonic()
                fetch = draft(alice, "title", "written while paused", status="*")
                page = alice.post("/workspace", {"title": "typed while paused",
                                                 "csrf_token": csrf}, headers=PAGE, status="*")
                elapsed = time.monotonic() - started
            # Judging the request reads the session (a read is not paused): only the save,
            # after the view ran, met the pause.
            status = alice.get("/session/status", headers=FETCH).json
            assert status["state"] == "active"
        finally:
            admin_client.execute_command("CLIENT", "UNPAUSE")

    assert_json_503(fetch)
    assert_page_503(page)
    assert "Set-Cookie" not in fetch.headers and "Set-Cookie" not in page.headers
    saves_failed = [r for r in caplog.records
                    if r.getMessage().startswith("session store unavailable, session data "
                                                 "not saved")]
    assert len(saves_failed) == 2, [r.getMessage() for r in caplog.records]
    assert elapsed < PAUSE_MS / 1000, "the app's socket timeout, not the pause, ended the save"
    # The scripts that waited were dropped with their connections: nothing lands late.
    time.sleep(0.2)
    [(after, (after_data, after_version))] = redis_sessions_of(alice, database_url, "alice")
    assert after.key == before.key and after.is_open
    assert drafts_in(after_data) == {"draft_title": "saved before"}
    assert after_version == before_version
    assert redis_ended_count(redis_running) == 0, "the pause ended nothing"
    # The pause over, the same write goes through.
    assert draft(alice, "title", "written after").json == {"saved": "draft_title"}
    [(_, (last_data, _))] = redis_sessions_of(alice, database_url, "alice")
    assert drafts_in(last_data) == {"draft_title": "written after"}


# -- 4. a memory store restart --------------------------------------------------------------

def test_a_memory_store_restart_sends_every_kind_of_client_to_session_lost(
        build, database_url):
    first = build(session__type="expiry:memory", sqlalchemy__url=database_url)
    login(first)
    draft(first, "title", "kept in the old process")
    restarted = build.wsgi(session__type="expiry:memory", sqlalchemy__url=database_url)

    def returning_browser() -> TestApp:
        """The browser's cookies as they are (same names, domain and path), at the new
        process; one fresh copy per request, as the first answer drops the ticket."""
        browser = TestApp(restarted)
        for cookie in first.cookiejar:
            browser.cookiejar.set_cookie(cookie)
        return browser

    page = returning_browser().get("/workspace?tab=2", headers=PAGE, status=303)
    assert query(page.location) == {"reason": "session_lost", "came_from": "/workspace?tab=2"}
    expired = returning_browser().get(page.location, headers=PAGE)
    assert "The server lost your session" in expired.text

    fetch = returning_browser().get("/api/notes", headers=FETCH, status=401)
    assert fetch.json["error"] == "session_expired"
    assert fetch.json["reason"] == "session_lost"
    htmx = returning_browser().get("/api/notes", headers=HTMX, status=401)
    assert query(htmx.headers["HX-Redirect"])["reason"] == "session_lost"
    write = returning_browser().post_json(
        "/api/draft", {"field": "title", "value": "into a lost session"},
        headers={**FETCH, "X-CSRF-Token": csrf_token(first)}, status=401)
    assert write.json["reason"] == "session_lost"

    # Signing in again starts a new, empty session: nothing of the old one comes back.
    again = returning_browser()
    login(again)
    assert again.cookies["session"] != first.cookies["session"]
    assert again.get("/api/notes", headers=FETCH).json["user"] == "alice"
