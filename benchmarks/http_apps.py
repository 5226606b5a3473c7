"""The WSGI apps ``benchmarks.http_peers`` compares, each served by waitress in its own process.

    .venv/bin/python -m benchmarks.http_apps VARIANT PORT

Every variant serves the same trivial authenticated page, ``GET /page``, which
reads one value from the session (as a real page reads its flash messages or a
draft) and answers ``200 ok``; anonymous requests are refused. ``GET
/login?user=NAME`` signs in the way each setup's users write it and stores
that value. The peers are built as their users build them: Pyramid's
``AuthTktCookieHelper`` and pyramid_beaker, with Beaker's own ``timeout``.

Settings come from the environment: ``BENCH_SECRET``, and ``BENCH_DATABASE_URL``
(PostgreSQL, ``postgresql+psycopg://``) or ``BENCH_SQLITE_URL`` where a variant
needs a database. ``BENCH_SESSION_KEY`` is the key the one-SELECT ceiling reads.
The Redis variants (``benchmarks.redis_peers``) read ``BENCH_REDIS_URL``, their
Redis, and the one-GET ceiling ``BENCH_REDIS_KEY``, the key it reads.
"""
from __future__ import annotations

import logging
import os
import sys

from pyramid.authentication import AuthTktCookieHelper
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPForbidden
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED, Allowed, Denied, remember
from pyramid_beaker import session_factory_from_settings
from waitress import serve

#: waitress's threads, as the issue's measurements used.
THREADS = 4
IDLE_TIMEOUT = 1200
GREETING = "hello"


def _page(request):
    request.session.get("greeting")
    return Response("ok")


def _bare_page(request):
    return Response("ok")


def _configurator(settings=None) -> Configurator:
    config = Configurator(settings=settings or {})
    config.add_route("page", "/page")
    config.add_route("login", "/login")
    return config


# -- the ceilings ---------------------------------------------------------------------------

def bare():
    """No session, no authentication: the most a Pyramid page can do here."""
    config = _configurator()
    config.add_view(_bare_page, route_name="page")
    return config.make_wsgi_app()


def bare_select():
    """Bare Pyramid plus one pooled psycopg ``SELECT`` of a session row by key: the most a
    page that reads its session from PostgreSQL can do (no pre-ping, autocommit)."""
    from psycopg_pool import ConnectionPool

    url = os.environ["BENCH_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    pool = ConnectionPool(url, min_size=THREADS, max_size=THREADS, open=True,
                          kwargs={"autocommit": True})
    key = os.environ["BENCH_SESSION_KEY"]

    def page(request):
        with pool.connection() as conn:
            conn.execute("SELECT data, version, idle_deadline FROM sessions WHERE key = %s",
                         (key,)).fetchone()
        return Response("ok")

    config = _configurator()
    config.add_view(page, route_name="page")
    return config.make_wsgi_app()


def bare_get():
    """Bare Pyramid plus one pooled Redis ``GET`` of a session's text by key: the most a page
    that reads its session from Redis can do (redis-py's pool and its hiredis parser)."""
    import redis

    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    key = os.environ["BENCH_REDIS_KEY"]

    def page(request):
        if client.get(key) is None:
            raise RuntimeError(f"the ceiling's key {key} is not in Redis")
        return Response("ok")

    config = _configurator()
    config.add_view(page, route_name="page")
    return config.make_wsgi_app()


# -- the classic setup: AuthTktCookieHelper and pyramid_beaker ------------------------------

class ClassicSecurityPolicy:
    """The security policy Pyramid's documentation shows, on ``AuthTktCookieHelper``."""

    def __init__(self, secret: str):
        self.helper = AuthTktCookieHelper(secret, hashalg="sha512", timeout=IDLE_TIMEOUT,
                                          reissue_time=IDLE_TIMEOUT // 10, http_only=True)

    def identity(self, request):
        return self.helper.identify(request)

    def authenticated_userid(self, request):
        identity = self.identity(request)
        return identity["userid"] if identity else None

    def permits(self, request, context, permission):
        return Allowed("signed in") if self.authenticated_userid(request) else Denied("no")

    def remember(self, request, userid, **kw):
        return self.helper.remember(request, userid, **kw)

    def forget(self, request, **kw):
        return self.helper.forget(request)


def _classic_app(config: Configurator, secret: str):
    """The classic sign-in and page on ``config`` (its session factory set), the auth
    ticket by ``AuthTktCookieHelper``."""
    config.set_security_policy(ClassicSecurityPolicy(secret))

    def login(request):
        request.session["greeting"] = GREETING
        return Response("signed in", headers=remember(request, request.params["user"]))

    config.add_view(login, route_name="login")
    config.add_view(_page, route_name="page", permission="view")
    config.add_forbidden_view(lambda request: HTTPForbidden())
    return config.make_wsgi_app()


def _classic(beaker_settings: dict):
    secret = os.environ["BENCH_SECRET"]
    settings = {"session.key": "session", "session.secret": secret, "session.httponly": "true",
                "session.timeout": str(IDLE_TIMEOUT), **beaker_settings}
    config = _configurator(settings)
    config.set_session_factory(session_factory_from_settings(settings))
    return _classic_app(config, secret)


def classic_memory():
    return _classic({"session.type": "memory"})


def classic_database():
    """pyramid_beaker's ``ext:database``: Beaker writes the session on every request."""
    return _classic({"session.type": "ext:database",
                     "session.url": os.environ["BENCH_DATABASE_URL"]})


def classic_redis():
    """pyramid_session_redis as its users write it: ``config.include`` with its settings
    (``redis.sessions.*``), its defaults otherwise (pickle, a TTL set, the expiry kept in
    the payload and refreshed on every access), beside the same ``AuthTktCookieHelper``."""
    secret = os.environ["BENCH_SECRET"]
    config = _configurator({"redis.sessions.secret": secret,
                            "redis.sessions.timeout": str(IDLE_TIMEOUT),
                            "redis.sessions.redis_url": os.environ["BENCH_REDIS_URL"]})
    config.include("pyramid_session_redis")
    return _classic_app(config, secret)


# -- session-expiry ---------------------------------------------------------------------------

def _expiry(session_settings: dict):
    settings = {"session.key": "session", "session.httponly": "true", "session.secure": "false",
                "session_expiry.idle_timeout": f"{IDLE_TIMEOUT}s",
                "session_expiry.secret": os.environ["BENCH_SECRET"], **session_settings}
    config = _configurator(settings)
    config.include("session_expiry")

    def login(request):
        headers = remember(request, request.params["user"])
        request.session["greeting"] = GREETING
        return Response("signed in", headers=headers)

    config.add_view(login, route_name="login", permission=NO_PERMISSION_REQUIRED)
    config.add_view(_page, route_name="page", permission="view")
    return config.make_wsgi_app()


def expiry_memory():
    return _expiry({"session.type": "expiry:memory"})


def expiry_postgresql():
    return _expiry({"session.type": "expiry:sql",
                    "session.url": os.environ["BENCH_DATABASE_URL"]})


def expiry_sqlite():
    return _expiry({"session.type": "expiry:sql", "session.url": os.environ["BENCH_SQLITE_URL"]})


def expiry_redis():
    return _expiry({"session.type": "expiry:redis", "session.url": os.environ["BENCH_REDIS_URL"]})


VARIANTS = {factory.__name__: factory for factory in (
    bare, bare_select, classic_memory, expiry_memory, classic_database, expiry_postgresql,
    expiry_sqlite, bare_get, classic_redis, expiry_redis)}


def main(argv=None) -> None:
    variant, port = (argv or sys.argv[1:])[:2]
    logging.basicConfig(level=logging.WARNING)
    serve(VARIANTS[variant](), host="127.0.0.1", port=int(port), threads=THREADS,
          connection_limit=200, _quiet=True)


if __name__ == "__main__":
    main()
