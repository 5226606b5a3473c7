"""Sessions written fast into the Redis store, through its own scripts: what the Redis
benchmarks (``redis_sweeper``, ``redis_report``, ``redis_memory``) load before they measure.

Each session is written as the store writes it, step by step, at a clock of our choosing
(in the past): the store's scripts ``open``, ``touch``, ``save`` and ``end``
(``lua/*.lua``, by ``EVALSHA``) with the same arguments ``RedisStore`` gives them, only
pipelined, thousands to a round trip, instead of one request's round trips. An ended
session's event is then acknowledged in the stream's consumer group, as the store does once
it has told it. So the keys, sorted sets, tombstones and streams are the store's own, not a
copy of its layout.

Session ``i``'s key is a SHA-256-like hex text that ends in ``i`` (:func:`key_of`), so a
check can tell from a key which session it is (:func:`index_of`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

from session_expiry.settings import Policy
from session_expiry.stores.data import encode
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.redis.layout import GROUP
from session_expiry.stores.redis.lifecycle import SAFETY

#: Sessions per pipeline (each a handful of commands).
CHUNK = 2_000
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
)


def key_of(i: int) -> str:
    """Session ``i``'s key: 64 hex digits, the last 10 of them ``i``."""
    return hashlib.sha256(b"bench-%d" % i).hexdigest()[:54] + f"{i:010x}"


def index_of(key: str) -> int:
    return int(key[54:], 16)


def ip_of(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def data_of(i: int) -> dict:
    """Data like a real session's (the HTTP page's value, a small cart, a draft)."""
    return {"greeting": "hello", "cart": [i % 97, i % 13], "theme": "dark",
            "draft": "x" * (i % 200)}


def policy(idle: int = 1200, absolute: int = 8 * 3600) -> Policy:
    return Policy(store_type="expiry:redis", idle_timeout=idle, absolute_timeout=absolute,
                  sweep_interval=None)


def chunks(first: int, last: int, size: int = CHUNK) -> Iterator[range]:
    """``range(first, last)`` in pieces of ``size``."""
    for start in range(first, last, size):
        yield range(start, min(start + size, last))


class Loader:
    """The store's scripts, queued on a pipeline: ``open``, ``touch``, ``save``, ``end``."""

    def __init__(self, store: RedisStore):
        self.store = store
        self.layout = store.layout
        self.client = store.redis.client
        self.scripts = {name: store.redis.script(name)
                        for name in ("open", "touch", "save", "end")}
        self.pipe = self.client.pipeline(transaction=False)

    def _run(self, name: str, key: str, args: list) -> None:
        self.scripts[name](keys=[self.layout.partition(key).base], args=args, client=self.pipe)

    def open(self, key: str, user_id: str, now: int, ip: str, user_agent: str) -> None:
        """``RedisStore.open``'s script."""
        policy = self.store.policy
        self._run("open", key, [key, user_id, now, now + policy.idle_timeout,
                                now + policy.absolute_timeout, ip, user_agent,
                                policy.absolute_timeout + policy.retention + SAFETY])

    def touch(self, key: str, now: int) -> None:
        """``RedisStore.touch`` with no interval: the deadline moves to ``now``'s."""
        self._run("touch", key, [key, now, 0, self.store.policy.idle_timeout])

    def save(self, key: str, values: dict) -> None:
        """``RedisStore.save_data`` of a session's first data (its version as opened)."""
        self._run("save", key, [key, encode(values), 0])

    def end(self, key: str, reason: str, now: int) -> None:
        """``RedisStore.end``'s script; :meth:`told` tells the events it returns."""
        self._run("end", key, [key, reason, now, self.store.consumer,
                               self.store.policy.retention + SAFETY])

    def execute(self) -> list:
        try:
            return self.pipe.execute()
        finally:
            self.pipe = self.client.pipeline(transaction=False)

    def told(self, rows: list) -> None:
        """What ``RedisStore._notify`` does with the events the ``end`` scripts returned,
        once it has told them: each acknowledged."""
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            event_id, key = row[0], row[1]
            pipe.xack(self.layout.partition(key).events, GROUP, event_id)
        pipe.execute()
