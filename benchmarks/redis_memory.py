"""Redis memory per open session: ``expiry:redis`` beside pyramid_session_redis.

    .venv/bin/python -m benchmarks.redis_memory [--sessions 100000]
    .venv/bin/python -m benchmarks.redis_memory --smoke

Each side gets a fresh ``redis-server`` of its own (``tests.redis_server``) and opens
``--sessions`` sessions with the data of ``benchmarks.memory_scale`` (the HTTP page's
value, a small cart, a theme, a draft of up to 200 characters):

- ours through the store's own steps (``benchmarks.redis_load``: the user's index, the
  ``open`` script with an address and a browser's user agent, the ``save`` script of the
  data), 10,000 users: the session's hash, its entries in the partition's sorted sets
  (``due``, ``seen``, ``born``, ``started``) and in its user's index;
- pyramid_session_redis through its own session factory (its defaults, ``timeout`` 1200,
  as ``benchmarks.http_apps`` builds it), each session made and saved as a sign-in's
  request does: one pickled value per session, with its TTL. Its users' identity is in
  ``AuthTktCookieHelper``'s cookie, not in Redis.

The figure is Redis's own count of the memory it holds (``INFO memory``,
``used_memory``) after, less before, over the number of sessions.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

from tests.redis_server import RedisServer

from benchmarks.figures import Figure, report
from benchmarks.redis_load import USER_AGENTS, Loader, chunks, data_of, ip_of, key_of, policy
from session_expiry.stores.redis import RedisStore

SESSIONS = 100_000
SMOKE_SESSIONS = 2_000
USERS = 10_000
IDLE = 1200


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def _expiry(server: RedisServer, sessions: int) -> int:
    """Sessions opened and given their data, as the store does; keys written."""
    now = int(time.time())
    store = RedisStore(server.url, policy(IDLE), clock=time.time)
    try:
        loader = Loader(store)
        for numbers in chunks(1, sessions + 1):
            for i in numbers:
                key = key_of(i)
                loader.open(key, str(1 + i % USERS), now, ip_of(i),
                            USER_AGENTS[i % len(USER_AGENTS)])
                loader.save(key, data_of(i))
            answers = loader.execute()
            if answers[0::2].count(1) != len(numbers) or answers[1::2].count(1) != len(numbers):
                raise SystemExit("the store did not open and save every session")
    finally:
        store.close()
    return sessions


def _classic(server: RedisServer, sessions: int) -> int:
    """Sessions made and saved by pyramid_session_redis's own factory, one request each."""
    from pyramid import testing
    from pyramid_session_redis import RedisSessionFactory

    factory = RedisSessionFactory("benchmark-secret-0123456789", timeout=IDLE,
                                  redis_url=server.url)
    config = testing.setUp()
    try:
        for i in range(1, sessions + 1):
            request = testing.DummyRequest()
            session = factory(request)
            session.update(data_of(i))
            request._process_finished_callbacks()  # where it saves what changed
    finally:
        testing.tearDown()
        del config
    return sessions


SIDES = {"expiry": _expiry, "classic": _classic}


def per_session(side: str, sessions: int) -> tuple[float, int]:
    """(bytes of Redis memory per session, keys) of ``side``, on a fresh server."""
    server = RedisServer().start()
    try:
        with server.client() as client:
            before = used_memory(client)
            SIDES[side](server, sessions)
            after, keys = used_memory(client), client.dbsize()
    finally:
        server.stop()
    if keys < sessions:
        raise SystemExit(f"{side}: {keys} keys for {sessions} sessions")
    return (after - before) / sessions, keys


def measure(smoke: bool = False, sessions: int | None = None) -> list[Figure]:
    """The Redis memory figures for ``make bench``'s table (``benchmarks.__main__``)."""
    sessions = sessions or (SMOKE_SESSIONS if smoke else SESSIONS)
    ours, our_keys = per_session("expiry", sessions)
    classic, classic_keys = per_session("classic", sessions)
    scale = f"{sessions:,} open sessions"
    return [
        Figure("Memory, Redis", "Redis memory per session, session-expiry Redis store",
               ours, "bytes", f"{ours / classic:.2f}x pyramid_session_redis's; "
                              f"{our_keys:,} keys; {scale}"),
        Figure("Memory, Redis", "Redis memory per session, pyramid_session_redis",
               classic, "bytes", f"{classic_keys:,} keys; {scale}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None,
                        help=f"open sessions (default {SESSIONS:,}; smoke {SMOKE_SESSIONS:,})")
    parser.add_argument("--smoke", action="store_true", help="toy size")
    args = parser.parse_args(argv)
    return report(measure(args.smoke, args.sessions))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
