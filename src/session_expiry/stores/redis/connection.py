"""The Redis store's connection: one client per store (a pool, timeouts, one quick retry),
a plain server or a cluster (asked of the server, once it answers), the scripts, and the
errors that mean "Redis cannot be reached" turned into ``StoreUnavailable``."""
from __future__ import annotations

import functools
import threading
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from ..contract import StoreUnavailable

#: Timeouts (seconds) unless the URL sets its own (``?socket_timeout=…``): a Redis that
#: does not answer is a 503 within about this long, not a hung request.
CONNECT_TIMEOUT, SOCKET_TIMEOUT = 1.0, 2.0
#: What means "Redis cannot serve the sessions now" (down, restarting, loading its AOF,
#: failing over, full under ``noeviction``, refusing this ACL user), as opposed to a mistake
#: of ours: a 503 that names it, never a 500.
UNREACHABLE = (ConnectionError, TimeoutError, BusyLoadingError, ClusterDownError,
               ClusterError, MasterDownError, ReadOnlyError, TryAgainError, OutOfMemoryError,
               NoPermissionError, RedisClusterUnreachableError, SlotNotCoveredError)

_LUA = files(__package__) / "lua"
_COMMON = (_LUA / "common.lua").read_text(encoding="utf-8")
#: The scripts whose sessions may end in them get the shared ``finish``.
_ENDING = ("end", "sweep")


def script_text(name: str) -> str:
    body = (_LUA / f"{name}.lua").read_text(encoding="utf-8")
    return _COMMON + body if name in _ENDING else \
        "local base = KEYS[1]\n" + body


def hgetall_command(name: str) -> bytes:
    """``HGETALL name`` as the protocol sends it (redis-py's packer takes longer)."""
    encoded = name.encode()
    return b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(encoded), encoded)


def unavailable(method):
    """Turn "cannot reach Redis" into ``StoreUnavailable`` (a 503, and the next request
    tries again)."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except UNREACHABLE as error:
            raise StoreUnavailable(f"Redis: {error}") from error

    return guarded


def _options(url: str) -> dict:
    """The client's options: the defaults, less what the URL sets itself."""
    given = parse_qs(urlsplit(url).query)
    options = {"decode_responses": True, "health_check_interval": 30,
               "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
               "retry_on_error": [ConnectionError, TimeoutError]}
    if "socket_connect_timeout" not in given:
        options["socket_connect_timeout"] = CONNECT_TIMEOUT
    if "socket_timeout" not in given:
        options["socket_timeout"] = SOCKET_TIMEOUT
    return options


class Connection:
    """The store's client, made at the first use that reaches Redis (a server that is down
    at start-up delays nothing but that), and its scripts."""

    def __init__(self, url: str):
        self.url = url
        self._client = None
        self._lock = threading.Lock()
        self._scripts: dict[str, object] = {}
        #: Every request's read, on a connection of its thread's own (below): one per
        #: thread that reads, the app server's worker threads.
        self._reader = threading.local()
        self._readers: list = []

    @property
    def client(self):
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        return client

    def _connect(self):
        options = _options(self.url)
        plain = redis.Redis.from_url(self.url, **options)
        if urlsplit(self.url).scheme == "unix":
            return plain
        try:
            clustered = plain.info("cluster").get("cluster_enabled") == 1
        except BaseException:
            plain.close()
            raise
        if not clustered:
            return plain
        plain.close()
        options.pop("health_check_interval")
        return RedisCluster.from_url(self.url, **options)

    def hgetall(self, name: str) -> dict:
        """``HGETALL name``: every request's read, so on one server sent on a connection kept
        by this thread (the pool's checkout and return cost more than the round trip), and
        sent once more on a fresh connection when the kept one turns out to be dead (Redis
        restarted since)."""
        client = self.client
        if isinstance(client, RedisCluster):
            return client.hgetall(name)
        for attempt in (1, 2):
            connection = self._thread_connection(client)
            try:
                connection.send_packed_command([hgetall_command(name)])
                found = connection.read_response()
            except (ConnectionError, TimeoutError):
                connection.disconnect()
                if attempt == 2:
                    raise
                continue
            if isinstance(found, dict):  # RESP3 (the client's default since redis-py 8)
                return found
            pairs = iter(found)  # RESP2: field, value, field, value, ...
            return dict(zip(pairs, pairs, strict=False))
        raise AssertionError("unreachable")

    def _thread_connection(self, client):
        connection = getattr(self._reader, "connection", None)
        if connection is None:
            pool = client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            self._reader.connection = connection
            with self._lock:
                self._readers.append(connection)
        return connection

    @property
    def clustered(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def script(self, name: str):
        """The script ``lua/<name>.lua``, registered once (sent by hash; loaded on demand)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(script_text(name))
        return script

    def run(self, name: str, keys: list, args: list):
        return self.script(name)(keys=keys, args=args)

    def run_each(self, name: str, calls: list[tuple[list, list]]) -> list:
        """The script ``name`` run once per (keys, args) of ``calls``, in one round trip on
        one server (a pipeline); a cluster's partitions are on several, one call each."""
        script = self.script(name)
        if self.clustered:
            return [script(keys=keys, args=args) for keys, args in calls]
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute()

    def primaries(self) -> list:
        """A client per server holding sessions: the one, or each master of a cluster."""
        client = self.client
        if isinstance(client, RedisCluster):
            return [client.get_redis_connection(node) for node in client.get_primaries()]
        return [client]

    def close(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, []
        for connection in readers:
            connection.disconnect()
        if self._client is not None:
            self._client.close()
