"""A farm on one machine: app servers and sweepers as real processes, one real PostgreSQL
(the users, and the sessions of ``expiry:sql``), and for ``expiry:redis`` the sessions in one
real Redis or a Redis Cluster of three masters.

A test picks the farm's session store by parametrizing ``backend`` (indirectly) over
:data:`BACKENDS` (and ``"redis-cluster"``); left alone, it is ``"postgresql"``."""
from __future__ import annotations

import collections
import fcntl
import http.cookiejar
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from session_expiry.settings import Policy
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.redis.layout import GROUP
from session_expiry.stores.sql import SqlStore, engine_for
from tests.conftest import ROOT, SECRET, clear_redis, migrate, seed_users
from tests.postgres import free_port

BIN = Path(sys.executable).parent
_databases = itertools.count(1)

#: The session stores every farm test runs on: ``expiry:sql`` on the PostgreSQL app database,
#: ``expiry:redis`` on one Redis. (``"redis-cluster"``: on the three-master cluster.)
BACKENDS = ("postgresql", "redis")
#: The suite's Redis fixture of each Redis backend.
REDIS_FIXTURES = {"redis": "redis_server", "redis-cluster": "redis_cluster"}


@pytest.fixture
def backend(request) -> str:
    """The farm's session store: the test's (indirect) parameter, else ``"postgresql"``."""
    return getattr(request, "param", "postgresql")


def users_database(postgres, name: str) -> str:
    """A new migrated PostgreSQL database ``name`` with the test users."""
    url = postgres.create_database(name)
    migrate(url)
    seed_users(url)
    return url


@pytest.fixture(scope="session")
def farm_users_url(postgres) -> str:
    """The app database of the Redis farms: the users only, their sessions live in Redis (so
    one database serves every such test)."""
    return users_database(postgres, "farm_users")


@pytest.fixture
def farm_url(backend, request) -> str:
    """The farm's app database (``sqlalchemy.url``) with the test users: a fresh one when the
    sessions live in it too (``postgresql``)."""
    if backend in REDIS_FIXTURES:
        return request.getfixturevalue("farm_users_url")
    return users_database(request.getfixturevalue("postgres"), f"farm_{next(_databases)}")


@pytest.fixture
def redis_url(backend, request) -> str | None:
    """The farm's Redis (server or cluster), emptied; None when the sessions live in SQL."""
    if backend not in REDIS_FIXTURES:
        return None
    url = request.getfixturevalue(REDIS_FIXTURES[backend]).url
    clear_redis(url)
    return url


@pytest.fixture
def open_store(farm_url, redis_url):
    """Make a store on the farm's sessions in the test process (``store(on_end=...)``), as a
    script or another app server would: the system clock, the default policy. Closed after."""
    built = []

    def make(on_end=lambda event: None):
        if redis_url is not None:
            store = RedisStore(redis_url, Policy(), clock=time.time, on_end=on_end)
        else:
            store = SqlStore(engine_for(farm_url), Policy(), clock=time.time, on_end=on_end)
        built.append(store)
        return store

    yield make
    for store in built:
        store.close()


def write_ini(directory: Path, url: str, port: int = 0, *, redis_url: str | None = None,
              **settings) -> Path:
    """testing.ini with the app database at ``url``, the sessions in it (the SQL store) or in
    the Redis at ``redis_url`` (the Redis store), listening on ``port``."""
    text = (ROOT / "testing.ini").read_text()
    store = "expiry:sql" if redis_url is None else "expiry:redis"
    text = text.replace("session.type = expiry:memory", f"session.type = {store}")
    text = text.replace("listen = 127.0.0.1:6544", f"listen = 127.0.0.1:{port}")
    overrides = {"sqlalchemy.url": url, "session_expiry.secret": SECRET}
    if redis_url is not None:
        overrides["session.url"] = redis_url
    overrides.update({f"session_expiry.{key}": value for key, value in settings.items()})
    lines = [f"{key} = {value}" for key, value in overrides.items()]
    text = "\n".join(line for line in text.splitlines()
                     if line.partition("=")[0].strip() not in overrides)
    text = text.replace("[app:main]", "[app:main]\n" + "\n".join(lines), 1)
    path = directory / f"farm-{port or 'sweeper'}.ini"
    path.write_text(text)
    return path


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode()[-2000:] if process.stderr else ""
            raise RuntimeError(f"the server exited with {process.returncode}:\n{errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds}s")


class Servers:
    """App servers (``pserve``) of the farm's store on free loopback ports: ``servers()``
    starts one, ``servers.pair()`` two at once; each call returns their base URLs."""

    def __init__(self, directory: Path, url: str, redis_url: str | None):
        self.directory, self.url, self.redis_url = directory, url, redis_url
        self.started: list[subprocess.Popen] = []

    def __call__(self, **settings) -> str:
        return self.start(1, **settings)[0]

    def pair(self, **settings) -> tuple[str, str]:
        """Two servers with the same settings, started side by side."""
        first, second = self.start(2, **settings)
        return first, second

    def start(self, count: int, **settings) -> list[str]:
        launched = []
        for _ in range(count):
            port = free_port()
            ini = write_ini(self.directory, self.url, port, redis_url=self.redis_url,
                            **settings)
            process = subprocess.Popen([str(BIN / "pserve"), str(ini)], cwd=self.directory,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.started.append(process)
            launched.append((port, process))
        for port, process in launched:
            wait_for_port(port, process)
        return [f"http://127.0.0.1:{port}" for port, _ in launched]

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            process.wait(timeout=10)


@pytest.fixture
def servers(tmp_path, farm_url, redis_url):
    """Start app servers of the farm's store (:class:`Servers`); stop them afterwards."""
    started = Servers(tmp_path, farm_url, redis_url)
    yield started
    started.stop()


class Browser:
    """One browser: a cookie jar shared by every server it talks to, no redirects followed."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def request(self, url, data=None, headers=None):
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        request = urllib.request.Request(url, data=body, headers={
            "Accept": "application/json", **(headers or {})})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, url, **kw):
        status, headers, body = self.request(url, **kw)
        return status, headers, json.loads(body) if body else None

    def login(self, base, username="alice"):
        self.request(base + "/login", headers={"Accept": "text/html"})
        status, _, _ = self.request(base + "/login", data={
            "username": username, "password": username + "-password",
            "csrf_token": self.cookie("csrf_token")}, headers={"Accept": "text/html"})
        assert status == 303

    def logout(self, base):
        status, _, _ = self.request(base + "/logout", data={
            "csrf_token": self.cookie("csrf_token")}, headers={"Accept": "text/html"})
        assert status == 303


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


#: The capacity of a sweeper's log pipe (Linux's default where pages are 4 KiB): a sweeper
#: whose log is not read blocks some 450 "session ended" lines in.
LOG_PIPE_BYTES = 64 * 1024


def run_sweeper(ini: Path, *args: str, **kwargs) -> subprocess.Popen:
    process = subprocess.Popen([str(BIN / "session-sweeper"), str(ini), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)
    # Set, not assumed: a system of larger pages has larger pipes. (Before the sweeper logs
    # anything: starting up takes it a second.)
    fcntl.fcntl(process.stderr.fileno(), fcntl.F_SETPIPE_SZ, LOG_PIPE_BYTES)
    return process


# -- the Redis store's streams ------------------------------------------------------------------

#: A "session ended" line of a process's log: the first 12 hex digits of the session key.
ENDED_LINE = re.compile(r"session ended: session=([0-9a-f]{12}) ")


def ended_lines(log: str) -> list[str]:
    """The sessions (their keys' first 12 digits) a log says ended, in its order."""
    return ENDED_LINE.findall(log)


def stream_entries(store: RedisStore) -> list[dict]:
    """Every end event in the streams of every partition (their fields)."""
    client = store.redis.client
    return [fields for partition in store.layout.partitions
            for _, fields in client.xrange(partition.events)]


def pending(store: RedisStore) -> dict[str, int]:
    """The events delivered and not yet acknowledged, by consumer, over every partition's
    group (``XPENDING``)."""
    client, counts = store.redis.client, collections.Counter()
    for partition in store.layout.partitions:
        if client.exists(partition.events):
            for consumer in client.xpending(partition.events, GROUP)["consumers"]:
                counts[consumer["name"]] += int(consumer["pending"])
    return dict(counts)


def due(store: RedisStore) -> int:
    """Open sessions left in the partitions' deadline sets."""
    client = store.redis.client
    return sum(client.zcard(partition.due) for partition in store.layout.partitions)
