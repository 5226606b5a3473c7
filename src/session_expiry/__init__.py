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
- serves the expired page, ``/session/status``, ``/session/extend`` and logout.
"""
from __future__ import annotations

from beaker.util import coerce_session_params
from pyramid.csrf import CookieCSRFStoragePolicy
from pyramid.tweens import INGRESS
from pyramid_beaker import BeakerSessionFactoryConfig

from . import settings as settings_module
from .clock import resolve_clock
from .events import SessionEnded, log_session_ended
from .ticket import derive_secret
from .tween import Expiry, session_expiry, session_touch_deriver


def main(global_config, **settings):
    """The Paste app factory of the demo application (``pserve development.ini``)."""
    from .app import make_app

    return make_app(global_config, **settings)


def build_store(policy, clock, on_end):
    """The store ``session.type`` names, with its sweep thread if ``sweep_interval`` is on."""
    if policy.store_type == "expiry:sql":
        from .stores.sql import SqlStore, engine_for

        store = SqlStore(engine_for(policy.store_url), policy, clock, on_end=on_end)
    else:
        from .stores.memory import MemoryStore

        store = MemoryStore(policy, clock, on_end=on_end)
    if policy.sweep_interval:
        store.start(policy.sweep_interval)
    return store


def includeme(config):
    settings, policy = settings_module.load(config.get_settings())
    config.registry.settings.update(settings)
    clock = resolve_clock(settings.get("session_expiry.clock"))
    registry = config.registry

    def on_end(event):
        registry.notify(event)

    store = build_store(policy, clock, on_end)
    beaker_options = {k[len("session."):]: v for k, v in settings.items()
                      if k.startswith("session.")}
    beaker_options = coerce_session_params(beaker_options)
    cookie_secret = derive_secret(policy.secret, "session-cookie")
    beaker_options["secret"] = cookie_secret
    beaker_options["store"] = store
    registry.session_expiry = Expiry(
        policy=policy, store=store, clock=clock,
        ticket_secret=derive_secret(policy.secret, "auth-ticket"),
        cookie_secret=cookie_secret,
        session_cookie=beaker_options.get("key", "beaker.session.id"),
    )

    config.include("pyramid_jinja2")
    config.set_session_factory(BeakerSessionFactoryConfig(**beaker_options))
    config.set_csrf_storage_policy(CookieCSRFStoragePolicy(
        secure=policy.cookie_secure, httponly=True, samesite=policy.cookie_samesite))
    from .security import SessionSecurityPolicy

    config.set_security_policy(SessionSecurityPolicy())
    config.add_request_method(session_expiry, "session_expiry", reify=True)
    # Outermost: the verdict exists before any other tween (pyramid_tm asks who is signed in).
    config.add_tween("session_expiry.tween.expiry_tween_factory", under=INGRESS)
    config.add_view_deriver(session_touch_deriver)
    config.add_subscriber(log_session_ended, SessionEnded)

    config.add_route("session_expiry.expired", policy.expired_url)
    config.add_route("session_expiry.status", "/session/status")
    config.add_route("session_expiry.extend", "/session/extend")
    config.add_route("session_expiry.logout", "/logout")
    config.add_static_view("session-expiry-static", "session_expiry:static")
    config.scan(".views")
