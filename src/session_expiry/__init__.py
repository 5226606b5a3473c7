"""session-expiry: web sessions that end correctly and humanely.

``config.include("session_expiry")`` wires the whole add-on:

- reads and validates the ``session_expiry.*`` and ``session.*`` settings
  (a contradiction stops start-up with a ``ConfigurationError``);
- builds the store named by ``session.type`` once and keeps it on the
  registry; the Beaker session factory hands it to the ``expiry:*`` backend;
- adds the tween that judges every request, ends overdue sessions, touches and
  reissues, and tells the browser the seconds left;
- keeps the login form's CSRF token in a cookie, so strangers get no session;
- answers a request that needs a session it lacks per kind of client
  (page load: 303; htmx: 401 + ``HX-Redirect``; anything else: 401 JSON);
- fires ``SessionEnded`` exactly once per session and logs it;
- serves the expired page, ``/session/status``, ``/session/extend`` and logout;
- serves the session report, revoke, "your sessions" and ``/metrics``
  (``session_expiry.reports``), and a 404 page in the same layout.

- throttles password checks (the host's sign-in through ``check_password``,
  the add-on's re-authentication) per account and per address, in the store
  the farm shares: ``429`` with ``Retry-After`` (``TooManyTries``).

The host app brings the login view at ``session_expiry.login_url``, checks the
password there through ``session_expiry.check_password`` and calls
``pyramid.security.remember(request, userid)``.
"""
from __future__ import annotations

import logging

from beaker.util import coerce_session_params
from pyramid.csrf import CookieCSRFStoragePolicy
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import PHASE3_CONFIG, ITweens
from pyramid.tweens import INGRESS

from . import settings as settings_module
from ._version import __version__
from .clock import resolve_clock
from .events import announcer
from .inputs import CookieReader
from .metrics import Metrics
from .passwords import TooManyTries, check_password
from .security import SessionSecurityPolicy
from .stores.beaker import session_factory
from .ticket import derive_secret
from .tween import ExpirySetup, session_expiry, session_touch_deriver

log = logging.getLogger("session_expiry")

__all__ = ("TooManyTries", "__version__", "check_password", "includeme")


class TextCSRFStoragePolicy(CookieCSRFStoragePolicy):
    """Pyramid's cookie CSRF storage, answering "no" to a token that is not text
    (a multipart file field), instead of raising."""

    def check_csrf_token(self, request, supplied_token):
        return isinstance(supplied_token, str) and super().check_csrf_token(
            request, supplied_token)


#: The extra that brings the client package a store needs, by that package's module.
EXTRAS = {"redis": "redis", "psycopg": "postgresql"}


def build_store(policy, clock, on_end):
    """The store ``session.type`` names (its sweep thread is started by ``includeme``)."""
    try:
        if policy.store_type == "expiry:sql":
            from .stores.sql import SqlStore, engine_for

            return SqlStore(engine_for(policy.store_url), policy, clock, on_end=on_end)
        if policy.store_type == "expiry:redis":
            from .stores.redis import RedisStore

            return RedisStore(policy.store_url, policy, clock, on_end=on_end)
    except ModuleNotFoundError as error:
        extra = EXTRAS.get((error.name or "").partition(".")[0])
        if extra is None:
            raise
        raise ConfigurationError(
            f"session.type = {policy.store_type}: the package {error.name!r} is not "
            f"installed; install the add-on with its [{extra}] extra: "
            f"pip install 'session-expiry[{extra}]'") from None
    from .stores.memory import MemoryStore

    return MemoryStore(policy, clock, on_end=on_end)


#: The add-on's tween (its dotted name is its name in the tween chain and in ``ptweens``).
TWEEN = "session_expiry.tween.expiry_tween_factory"


def keep_outermost(registry) -> None:
    """Put the add-on's tween above every implicitly ordered tween (those added after it,
    which Pyramid would put above it, included), once all are added; a tween that asked by
    name to be over it stays there, with a warning. An explicit ``pyramid.tweens`` list must
    name it first: anything above it would read the Cookie header before it is bounded."""
    tweens = registry.queryUtility(ITweens)
    if tweens.explicit:
        if tweens.explicit[0][0] != TWEEN:
            raise ConfigurationError(
                f"pyramid.tweens: {TWEEN} must come first; a tween above it reads the Cookie "
                "header before the add-on bounds it (docs/security.md)")
        return
    names = [name for name, _ in tweens.implicit()]
    above = names[:names.index(TWEEN)]
    if not above:
        return
    asked = [name for name in above if TWEEN in tweens.sorter.name2before.get(name, ())]
    for name in asked:
        log.warning("tween %s asked to be over %s: it sees the Cookie header before the "
                    "add-on bounds it", name, TWEEN)
    factory = dict(tweens.sorter.name2val)[TWEEN]
    moved = [name for name in above if name not in asked]
    if moved:
        tweens.add_implicit(TWEEN, factory, under=INGRESS, over=moved)


def includeme(config):
    settings, policy = settings_module.load(config.get_settings())
    config.registry.settings.update(settings)
    registry = config.registry
    clock = resolve_clock(settings.get("session_expiry.clock"))
    store = build_store(policy, clock, on_end=announcer(registry))
    metrics = Metrics(store, clock)
    if policy.sweep_interval:
        store.start(policy.sweep_interval, observe=metrics.observe_sweep)

    cookie_secret = derive_secret(policy.secret, "session-cookie")
    ticket_secret = derive_secret(policy.secret, "auth-ticket")
    beaker = coerce_session_params(settings_module.beaker_options(settings))
    registry.session_expiry = ExpirySetup(
        policy=policy, store=store, clock=clock,
        ticket_secret=ticket_secret,
        cookie_secret=cookie_secret,
        session_cookie=policy.session_cookie,
        metrics=metrics,
        cookies=CookieReader(policy.ticket_cookie, policy.session_cookie, ticket_secret,
                             cookie_secret, policy.max_cookie_header),
    )
    config.set_session_factory(session_factory(session_expiry, **beaker, secret=cookie_secret,
                                              store=store))
    config.set_csrf_storage_policy(TextCSRFStoragePolicy(
        cookie_name=policy.csrf_cookie, secure=policy.cookie_secure, httponly=True,
        samesite=policy.cookie_samesite, domain=policy.cookie_domain, path=policy.cookie_path))
    config.set_security_policy(SessionSecurityPolicy())

    config.include("pyramid_jinja2")
    # Outermost: the Cookie header is bounded and the verdict made before any other tween
    # runs (a host's tween that reads request.cookies, pyramid_tm asking who is signed in),
    # those the host adds after this include too.
    config.add_tween(TWEEN, under=INGRESS)
    config.action(None, keep_outermost, args=(config.registry,), order=PHASE3_CONFIG + 1)
    config.add_view_deriver(session_touch_deriver)

    config.add_route("session_expiry.expired", policy.expired_url)
    config.add_route("session_expiry.status", "/session/status")
    config.add_route("session_expiry.extend", "/session/extend")
    config.add_route("session_expiry.logout", "/logout")
    config.add_static_view("session-expiry-static", "session_expiry:static")
    config.scan(".views")
    config.include(".reports")
