"""Shared fixtures: a migrated SQLite database with the demo users, the frozen
clock, and the app under WebTest built from the testing ini's settings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from pyramid.paster import get_appsettings
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from webtest import TestApp

from session_expiry.clock import FrozenClock
from session_expiry.inputs import read_session_key
from session_expiry_demo import make_app
from session_expiry_demo.models import User
from tests.postgres import PostgresServer
from tests.redis_server import RedisCluster, RedisServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789-0123456789-0123456789"
PAGE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FETCH = {"Sec-Fetch-Mode": "cors", "Accept": "*/*"}
HTMX = {"HX-Request": "true", "Sec-Fetch-Mode": "cors", "Accept": "*/*"}
JSON = {"Accept": "application/json"}


def alembic_config(url: str) -> Config:
    """The demo's Alembic configuration, as its ini files give it: its own revisions (users)
    and the add-on's (``session_expiry:migrations/versions``), on the database at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("path_separator", "space")
    config.set_main_option("version_locations", f"{ROOT / 'migrations' / 'versions'} "
                                                "session_expiry:migrations/versions")
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(url), revision)


def seed_users(url: str) -> None:
    """alice, bob and admin, each with the password ``<name>-password``."""
    engine = create_engine(url)
    with Session(engine) as db, db.begin():
        for name, admin in (("alice", False), ("bob", False), ("admin", True)):
            user = User(username=name, is_admin=admin)
            user.set_password(name + "-password")
            db.add(user)
    engine.dispose()


def clear_sessions(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("session_outbox", "session_events", "sessions",
                      "session_refusals", "session_failures"):
            conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (fixed names)
    engine.dispose()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server, started for this test run and stopped after it; it counts
    the statements it runs (``pg_stat_statements``) for the tests that count round trips."""
    server = PostgresServer(shared_preload_libraries="pg_stat_statements").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis server, started for this test run and stopped after it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster():
    """A real Redis Cluster of three masters, started for this test run."""
    with RedisCluster() as cluster:
        yield cluster


def clear_redis(url: str) -> None:
    """Forget everything the Redis server (or every master of the cluster) at ``url`` holds."""
    from session_expiry.stores.redis.connection import Connection

    connection = Connection(url)
    try:
        for server in connection.primaries():
            server.flushall()
    finally:
        connection.close()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """The SQLite application database, migrated, with the test users."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'app.sqlite'}"
    migrate(url)
    seed_users(url)
    return url


@pytest.fixture(scope="session")
def postgres_database_url(postgres) -> str:
    """The PostgreSQL application database, migrated, with the test users."""
    url = postgres.create_database("app")
    migrate(url)
    seed_users(url)
    return url


#: The functional suite runs against each store: memory, SQL on SQLite, SQL on PostgreSQL,
#: and Redis (its users in the SQLite application database).
STORE_KINDS = ("memory", "sqlite", "postgresql", "redis")
#: The ``session.type`` of each store kind.
STORE_TYPES = {"memory": "expiry:memory", "sqlite": "expiry:sql", "postgresql": "expiry:sql",
               "redis": "expiry:redis"}


@pytest.fixture(scope="session", params=STORE_KINDS)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def app_database_url(store_kind, request) -> str:
    """The application database for this test's store (the users; the SQL store's sessions
    too), with no sessions in it; on the Redis store, the Redis server is emptied as well."""
    url = request.getfixturevalue(
        "postgres_database_url" if store_kind == "postgresql" else "database_url")
    clear_sessions(url)
    if store_kind == "redis":
        clear_redis(request.getfixturevalue("redis_server").url)
    return url


@pytest.fixture
def session_url(store_kind, app_database_url, request) -> str | None:
    """``session.url`` of this test's store: the Redis server (emptied by
    ``app_database_url``), else None (the SQL store's sessions live in ``sqlalchemy.url``)."""
    if store_kind == "redis":
        return request.getfixturevalue("redis_server").url
    return None


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000)


@pytest.fixture
def base_settings(app_database_url, session_url, store_kind, clock) -> dict:
    settings = dict(get_appsettings(str(ROOT / "testing.ini")))
    if session_url is not None:
        settings["session.url"] = session_url
    settings.update({
        "session.type": STORE_TYPES[store_kind],
        "sqlalchemy.url": app_database_url,
        "session_expiry.secret": SECRET,
        "session_expiry.clock": clock,
        "session_expiry.idle_timeout": "20m",
        "session_expiry.absolute_timeout": "8h",
        "session_expiry.warn_before": "2m",
    })
    return settings


class Apps:
    """Builds apps and closes their stores' sweep threads afterwards."""

    def __init__(self, base_settings):
        self.base_settings = base_settings
        self.built = []

    def wsgi(self, **overrides):
        settings = dict(self.base_settings)
        settings.update({k.replace("__", "."): v for k, v in overrides.items()})
        app = make_app({}, **settings)
        self.built.append(app)
        return app

    def __call__(self, **overrides) -> TestApp:
        return TestApp(self.wsgi(**overrides))

    def close(self):
        for app in self.built:
            app.registry.session_expiry.store.close()


@pytest.fixture
def apps(base_settings):
    built = Apps(base_settings)
    yield built
    built.close()


@pytest.fixture
def app(apps) -> TestApp:
    return apps()


def store_of(testapp: TestApp):
    return testapp.app.registry.session_expiry.store


def csrf_token(testapp: TestApp) -> str:
    """The CSRF token, from its cookie (fetching the login page sets it)."""
    token = testapp.cookies.get("csrf_token")
    if token is None:
        testapp.get("/login")
        token = testapp.cookies["csrf_token"]
    return token.strip('"')  # WebTest quotes cookie values set with set_cookie


def login(testapp: TestApp, username: str = "alice", came_from: str | None = None):
    params = {"username": username, "password": username + "-password",
              "csrf_token": csrf_token(testapp)}
    if came_from is not None:
        params["came_from"] = came_from
    response = testapp.post("/login", params, headers=PAGE)
    assert response.status_int == 303, response.text
    return response


def session_key_of(testapp: TestApp) -> str:
    """The store key of the session whose cookie ``testapp`` holds."""
    expiry = testapp.app.registry.session_expiry
    return read_session_key(expiry.cookie_secret, testapp.cookies["session"])


def ticket_of(testapp: TestApp):
    from session_expiry.ticket import read_ticket

    expiry = testapp.app.registry.session_expiry
    return read_ticket(expiry.ticket_secret, testapp.cookies.get("auth_tkt"))


def query(location: str) -> dict:
    from urllib.parse import parse_qs, urlsplit

    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def ended_events(apps):
    """Every ``SessionEnded`` fired by apps built after this fixture (via the log subscriber)."""
    import logging

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("session_expiry.events")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def reason_in(line: str) -> str:
    return re.search(r"reason=(\w+)", line).group(1)
