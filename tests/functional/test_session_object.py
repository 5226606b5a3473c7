"""``request.session`` as a host app's views use it (Pyramid's ``ISession``), on every store.

A request that only reads is served from the data as read (``ExpirySession._read``);
Beaker's attributes are added when something writes (``_session``). Both must answer
alike, and nothing read may be lost by a write that follows it.
"""
from __future__ import annotations

import pytest
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED, forget, remember
from webtest import TestApp

from session_expiry.stores import session_key
from tests.conftest import session_key_of, store_of

#: The ``request.session`` of each request served, for a look after the answer.
SEEN = []


def sign_in(request):
    headers = remember(request, "alice")
    request.session.update({"cart": [1], "prefs": {"theme": "dark"}, "greeting": "hello"})
    response = Response(json_body={"new": request.session.new})
    response.headerlist.extend(headers)
    return response


def add_in_place(request):
    """Pyramid's way to change a mutable value: in place, then ``changed()``."""
    request.session["cart"].append(2)
    request.session["prefs"]["theme"] = "light"
    request.session.changed()
    return Response("added")


def read_then_add(request):
    cart = request.session.get("cart")  # read first ...
    cart.append(3)  # ... changed in place ...
    request.session.changed()  # ... and saved
    return Response("added")


def reads(session) -> dict:
    """Every answer ``ISession`` gives without writing (Beaker's ``_accessed_time`` is now)."""
    items = [(name, value) for name, value in session.items() if name != "_accessed_time"]
    return {
        "get": session.get("greeting"), "get_default": session.get("nope", "default"),
        "getitem": session["cart"], "contains": "prefs" in session,
        "contains_not": "nope" in session, "has_key": session.has_key("greeting"),
        "iter": sorted(session), "keys": sorted(session.keys()),
        "values": sorted(repr(value) for value in session.values()
                         if value is not session["_accessed_time"]),
        "items": sorted((name, repr(value)) for name, value in items),
        "new": session.new, "peek_flash": session.peek_flash(),
    }


def read_only(request):
    SEEN.append(request.session)
    return Response(json_body=reads(request.session))


def read_equipped(request):
    request.session.id  # noqa: B018 (one of Beaker's attributes: equips the session)
    return Response(json_body=reads(request.session))


def flash(request):
    request.session.flash("saved")
    return Response("flashed")


def pop_flash(request):
    return Response(json_body=request.session.pop_flash())


def written_meanwhile(request):
    """Another request writes after this one read, before this one writes."""
    request.session.get("greeting")
    store = request.registry.session_expiry.store
    key = session_key(request.session_expiry.session_id)
    loaded = store.load_data(key)
    store.save_data(key, {**loaded.values(), "theirs": 1}, base=loaded)
    request.session["ours"] = 1
    return Response("written")


def ended_before_read(request):
    """Ended (another tab signed out) between the verdict and the first read."""
    store = request.registry.session_expiry.store
    store.end(session_key(request.session_expiry.session_id), "logged_out", 1)
    greeting = request.session.get("greeting")
    request.session["planted"] = True
    return Response(json_body={"greeting": greeting, "new": request.session.new})


def read_invalidate_write(request):
    """Signs out in the middle: what is written after belongs to no session."""
    if request.params.get("read_first"):
        request.session.get("greeting")
    request.session.invalidate()
    request.session["planted"] = True
    return Response(json_body={"greeting": request.session.get("greeting")})


def forget_then_flash(request):
    """Pyramid's ``forget``, then a flash for the next page: the session it would go into
    has ended, so it goes nowhere, and no cookie names a session nobody holds."""
    forget(request)
    request.session.flash("You are signed out.")
    return Response(json_body={"flash": request.session.peek_flash()})


def public_read_write(request):
    """A page anybody may see, reading and writing the session."""
    greeting = request.session.get("greeting")
    request.session["planted"] = True
    return Response(json_body={"greeting": greeting})


PUBLIC = ("sign_in", "public_read_write")
VIEWS = {view.__name__: view for view in (
    sign_in, public_read_write, add_in_place, read_then_add, read_only, read_equipped, flash,
    pop_flash, written_meanwhile, ended_before_read, read_invalidate_write, forget_then_flash)}


@pytest.fixture
def host(base_settings):
    """A host app with the add-on and the views above, signed in."""
    with Configurator(settings=dict(base_settings)) as config:
        config.include("session_expiry")
        for name, view in VIEWS.items():
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, permission=(
                NO_PERMISSION_REQUIRED if name in PUBLIC else "view"))
    wsgi = config.make_wsgi_app()
    browser = TestApp(wsgi)
    browser.get("/sign_in")
    SEEN.clear()
    yield browser
    SEEN.clear()
    wsgi.registry.session_expiry.store.close()


def stored(browser: TestApp) -> dict:
    values = store_of(browser).load_data(session_key_of(browser)).values()
    return {name: value for name, value in values.items() if not name.startswith("_")}


def test_a_value_changed_in_place_then_marked_changed_is_saved(host):
    host.get("/add_in_place")
    assert stored(host) == {"cart": [1, 2], "prefs": {"theme": "light"}, "greeting": "hello"}


def test_a_value_read_then_changed_in_place_is_saved(host):
    host.get("/read_then_add")
    host.get("/read_then_add")
    assert stored(host)["cart"] == [1, 3, 3]


def test_reading_answers_as_beakers_session_does_and_writes_nothing(host):
    host.get("/flash")
    before = store_of(host).load_data(session_key_of(host))
    answer = host.get("/read_only").json
    assert answer == host.get("/read_equipped").json
    assert answer["get"] == "hello" and answer["getitem"] == [1] and answer["new"] is False
    assert answer["peek_flash"] == ["saved"] and answer["get_default"] == "default"
    assert answer["contains"] and not answer["contains_not"] and answer["has_key"]
    assert ["cart", repr([1])] in answer["items"]
    assert store_of(host).load_data(session_key_of(host)) == before


def test_a_request_that_only_reads_builds_none_of_beakers_machinery(host):
    """The speed of a read-only request: no namespace, cookie or options per request."""
    host.get("/read_only")
    read = SEEN[-1]
    assert read.accessed() and not read.dirty()
    assert not read.__dict__["_equipped"]
    assert "namespace" not in vars(read.__dict__["_sess"])


def test_a_session_is_new_when_signing_in_and_not_after(host):
    browser = TestApp(host.app)
    assert browser.get("/sign_in").json == {"new": True}
    assert browser.get("/read_only").json["new"] is False


def test_a_flash_is_peeked_by_a_read_and_gone_once_popped(host):
    host.get("/flash")
    host.get("/flash")
    assert host.get("/read_only").json["peek_flash"] == ["saved", "saved"]
    assert host.get("/pop_flash").json == ["saved", "saved"]
    assert host.get("/pop_flash").json == []


def test_a_write_after_a_read_keeps_what_another_request_wrote_meanwhile(host):
    host.get("/written_meanwhile")
    assert stored(host) == {"cart": [1], "prefs": {"theme": "dark"}, "greeting": "hello",
                            "theirs": 1, "ours": 1}


def test_a_session_ended_before_its_first_read_reads_empty_and_takes_no_write(host):
    key = session_key_of(host)
    assert host.get("/ended_before_read").json == {"greeting": None, "new": True}
    assert store_of(host).load_data(key) is None
    assert store_of(host).get(key).end_reason == "logged_out"


def session_cookies_set(answer) -> list[str]:
    return [value for name, value in answer.headerlist
            if name.lower() == "set-cookie" and value.startswith("session=")]


@pytest.mark.parametrize("read_first", ["", "1"])
def test_a_write_after_invalidate_goes_nowhere_and_sets_no_session_cookie(host, read_first):
    """Before, a write after ``invalidate()`` went into a new session with a new id,
    which the store refused to hold, and its cookie went out all the same."""
    key = session_key_of(host)
    answer = host.get("/read_invalidate_write", {"read_first": read_first})
    assert answer.json == {"greeting": None}
    assert session_cookies_set(answer) == []
    assert store_of(host).get(key).end_reason == "logged_out"
    assert store_of(host).load_data(key) is None
    assert store_of(host).user_sessions("alice", 0) == []


def test_a_flash_after_forget_goes_nowhere_and_sets_no_session_cookie(host, caplog):
    key = session_key_of(host)
    answer = host.get("/forget_then_flash")
    assert answer.json == {"flash": ["You are signed out."]}  # this request still sees it
    assert session_cookies_set(answer) == []
    assert store_of(host).load_data(key) is None
    assert "refused session" not in caplog.text


def test_a_cookie_judged_on_another_ticket_reads_nothing_and_writes_nowhere(host):
    """Not held (the ticket names another session): the cookie's session is never read
    or written, though it is open."""
    victim_key = session_key_of(host)
    intruder = TestApp(host.app)
    intruder.get("/sign_in")
    intruder.set_cookie("session", host.cookies["session"].strip('"'))
    answer = intruder.get("/public_read_write")
    assert answer.json == {"greeting": None}
    assert stored(host)["greeting"] == "hello" and "planted" not in stored(host)
    assert store_of(host).get(victim_key).is_open


def test_a_strangers_write_keeps_nothing_and_sets_no_session_cookie(host, caplog):
    """No session for strangers: before, the write went nowhere but a session cookie
    naming a session nobody holds went out. The log says so (it said the request had
    been judged on another session: it was judged on none)."""
    stranger = TestApp(host.app)
    answer = stranger.get("/public_read_write")
    assert answer.json == {"greeting": None}
    assert session_cookies_set(answer) == []
    assert "session" not in stranger.cookies
    assert "not the one this request holds, if any (signing in starts one)" in caplog.text
