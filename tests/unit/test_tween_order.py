"""The add-on's tween is the outermost one, whatever the host adds after its include: a
host's tween that reads ``request.cookies`` (WebOb's parser) never sees a Cookie header
the add-on has not bounded. Before: Pyramid puts a tween added later above an earlier one,
so such a tween read the whole header (up to the server's limit) first."""
from __future__ import annotations

import logging

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import ITweens
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.tweens import EXCVIEW, INGRESS
from webtest import TestApp

from session_expiry import TWEEN

SECRET = "a-test-secret-that-is-long-enough-0123456789"
HERE = __name__
#: What the host's tweens saw: (tween, length of the Cookie header it read).
SEEN: list[tuple[str, int]] = []


def _reader(name):
    def factory(handler, registry):
        def tween(request):
            SEEN.append((name, sum(map(len, request.cookies.values()))))
            return handler(request)
        return tween
    return factory


plain_tween = _reader("plain")
ingress_tween = _reader("under ingress")
excview_tween = _reader("over excview")
greedy_tween = _reader("over the add-on")


def app(*tweens: tuple[str, dict], **settings) -> TestApp:
    """The add-on, then the host's ``tweens`` (dotted name, ``add_tween`` keywords), a page."""
    SEEN.clear()
    config = Configurator(settings={"session.type": "expiry:memory",
                                    "session_expiry.secret": SECRET, **settings})
    config.include("session_expiry")
    for name, where in tweens:
        config.add_tween(f"{HERE}.{name}", **where)
    config.add_route("home", "/")
    config.add_view(lambda request: Response("home"), route_name="home",
                    permission=NO_PERMISSION_REQUIRED)
    return TestApp(config.make_wsgi_app())


def order(testapp: TestApp) -> list[str]:
    return [name for name, _ in testapp.app.registry.queryUtility(ITweens).implicit()]


HOST_TWEENS = [("plain_tween", {}), ("ingress_tween", {"under": INGRESS}),
               ("excview_tween", {"over": EXCVIEW})]


def test_the_add_ons_tween_stays_above_the_tweens_a_host_adds_after_it():
    testapp = app(*HOST_TWEENS)
    names = order(testapp)
    assert names[0] == TWEEN
    assert {f"{HERE}.{name}" for name, _ in HOST_TWEENS} < set(names[1:])


def test_a_hosts_tween_never_reads_an_unbounded_cookie_header():
    testapp = app(*HOST_TWEENS)
    answer = testapp.get("/", headers={"Cookie": 'a="' + "\\" * 100_000 + '"'}, status="*")
    assert answer.status_int == 400
    assert SEEN == [], "the add-on refused the header before any host tween read it"
    testapp.get("/", headers={"Cookie": "theme=dark"}, status=200)
    assert sorted(SEEN) == sorted([("over excview", 4), ("plain", 4), ("under ingress", 4)])


def test_a_tween_that_asks_to_be_over_the_add_on_stays_there_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="session_expiry"):
        testapp = app(("greedy_tween", {"over": TWEEN}), ("plain_tween", {}))
    assert order(testapp)[:2] == [f"{HERE}.greedy_tween", TWEEN]
    assert f"tween {HERE}.greedy_tween asked to be over {TWEEN}" in caplog.text


def test_an_explicit_tween_list_must_name_the_add_ons_tween_first():
    listed = f"{HERE}.plain_tween\n{TWEEN}\npyramid.tweens.excview_tween_factory"
    with pytest.raises(ConfigurationError, match=rf"pyramid\.tweens: {TWEEN} must come first"):
        app(**{"pyramid.tweens": listed})
    first = f"{TWEEN}\n{HERE}.plain_tween\npyramid.tweens.excview_tween_factory"
    app(**{"pyramid.tweens": first}).get("/", status=200)
