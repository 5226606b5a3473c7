"""The defects a review found, each pinned where it was: one cookie judged is the cookie used,
invalidate() ends the session, sessions have a size, the heap does not grow, the peer address
is the WSGI server's, exceptions keep nothing, sign-out clears the cache."""
from __future__ import annotations

import pytest
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED, remember
from webtest import TestApp

from session_expiry.settings import Policy
from session_expiry.stores.memory import MemoryStore
from tests.conftest import FETCH, JSON, PAGE, csrf_token, login, session_key_of, store_of


def cookie_header(testapp: TestApp, **overrides) -> str:
    cookies = {**testapp.cookies, **overrides}
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def draft(testapp: TestApp, field: str, value: str, **kw):
    return testapp.post_json("/api/draft", {"field": field, "value": value},
                             headers={**FETCH, "X-CSRF-Token": csrf_token(testapp)}, **kw)


def data_of(testapp: TestApp) -> dict:
    """The session's own data, without Beaker's bookkeeping."""
    values = store_of(testapp).load_data(session_key_of(testapp)).values()
    return {name: value for name, value in values.items() if not name.startswith("_")}


# -- 1. the tween and Beaker read one and the same session cookie ---------------------------------

def test_a_quote_trick_cannot_aim_the_tween_at_one_session_and_beaker_at_another(apps):
    victim = apps()
    login(victim, "bob")
    draft(victim, "secret", "plans of bob")
    attacker = TestApp(victim.app)
    login(attacker, "alice")
    draft(attacker, "note", "alice's own")
    # Python's http.cookies stops at the stray quote and reads bob's session; WebOb reads on
    # and takes the last session cookie, alice's, which her ticket is bound to.
    header = (f"session={victim.cookies['session']}; junk=\"a; "
              f"session={attacker.cookies['session']}; auth_tkt={attacker.cookies['auth_tkt']}")
    probe = TestApp(victim.app)
    answer = probe.post_json("/api/draft", {"field": "secret", "value": "overwritten"},
                             headers={**FETCH, "Cookie": header,
                                      "X-CSRF-Token": csrf_token(attacker)}, status="*")
    assert answer.status_int == 401, "a header read two ways names no session"
    notes = probe.get("/api/notes", headers={**FETCH, "Cookie": header}, status="*")
    assert notes.status_int == 401
    assert data_of(victim)["draft_secret"] == "plans of bob"
    assert data_of(attacker) == {"draft_note": "alice's own"}


def test_two_different_session_cookies_name_no_session(apps):
    first = apps()
    login(first, "alice")
    second = TestApp(first.app)
    login(second, "bob")
    probe = TestApp(first.app)
    for one, other in ((first, second), (second, first)):
        header = (f"session={one.cookies['session']}; session={other.cookies['session']}; "
                  f"auth_tkt={other.cookies['auth_tkt']}")
        assert probe.get("/api/notes", headers={**FETCH, "Cookie": header},
                         status="*").status_int == 401


def test_the_same_session_cookie_sent_twice_is_still_that_session(app):
    login(app, "alice")
    header = cookie_header(app) + f"; session={app.cookies['session']}"
    assert app.get("/api/notes", headers={**FETCH, "Cookie": header}).json["user"] == "alice"


def test_a_live_session_with_a_foreign_ticket_loads_and_saves_nothing(apps):
    victim = apps()
    login(victim, "bob")
    draft(victim, "secret", "plans of bob")
    attacker = TestApp(victim.app)
    login(attacker, "alice")
    header = f"session={victim.cookies['session']}; auth_tkt={attacker.cookies['auth_tkt']}"
    TestApp(victim.app).post("/workspace", {"title": "defaced",
                                            "csrf_token": csrf_token(attacker)},
                             headers={**PAGE, "Cookie": header}, status="*")
    assert data_of(victim) == {"draft_secret": "plans of bob"}


# -- 2. request.session.invalidate() ends the session, as forget() does -------------------------

def host_app(base_settings) -> TestApp:
    """A host application that signs in and out the usual Pyramid/Beaker way."""
    def sign_in(request):
        remember(request, "7")
        request.session["cart"] = ["book"]
        return Response("signed in")

    def sign_out(request):
        request.session.invalidate()
        return Response("signed out")

    def delete(request):
        request.session.delete()
        return Response("deleted")

    def cart(request):
        return Response(json_body=request.session.get("cart"))

    def fail(request):
        request.session["cart"] = ["changed by a view that then failed"]
        raise RuntimeError("the view failed")

    def fail_view(exc, request):
        return Response("failed", status=500)

    with Configurator(settings=dict(base_settings)) as config:
        config.include("session_expiry")
        config.set_default_permission("view")
        for name, view in (("sign_in", sign_in), ("sign_out", sign_out), ("delete", delete),
                           ("cart", cart), ("fail", fail)):
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, permission="view" if name != "sign_in"
                            else NO_PERMISSION_REQUIRED)
        config.add_view(fail_view, context=RuntimeError)
    app = config.make_wsgi_app()
    return TestApp(app)


@pytest.fixture
def host(base_settings):
    app = host_app(base_settings)
    yield app
    app.app.registry.session_expiry.store.close()


@pytest.mark.parametrize("how", ["sign_out", "delete"])
def test_invalidating_the_session_ends_it_and_a_replayed_cookie_loads_nothing(host, how):
    host.get("/sign_in")
    old = cookie_header(host)
    key = session_key_of(host)
    assert host.get("/cart", headers=FETCH).json == ["book"]
    host.get(f"/{how}", headers=FETCH)
    record = store_of(host).get(key)
    assert (record.is_open, record.end_reason) == (False, "logged_out")
    replayed = TestApp(host.app).get("/cart", headers={**FETCH, "Cookie": old}, status="*")
    assert replayed.status_int == 401
    assert replayed.json["reason"] == "logged_out"


def test_a_view_that_raised_does_not_have_its_session_changes_saved(host):
    host.get("/sign_in")
    host.get("/fail", headers=FETCH, status=500)
    assert host.get("/cart", headers=FETCH).json == ["book"]


# -- 3. a session has a size -------------------------------------------------------------------

def test_a_write_past_max_session_size_gets_413_json_and_saves_nothing(apps):
    app = apps(session_expiry__max_session_size="4KiB")
    login(app)
    draft(app, "a", "x" * 3000)
    answer = draft(app, "b", "y" * 3000, status=413)
    assert answer.json == {"error": "session_too_large", "limit": 4096}
    assert set(data_of(app)) == {"draft_a"}, "the refused write left nothing behind"
    assert draft(app, "a", "smaller").json == {"saved": "draft_a"}, "the session still works"


def test_a_page_write_past_max_session_size_gets_a_413_page(apps):
    app = apps(session_expiry__max_session_size="1KiB")
    login(app)
    for field in range(4):
        draft(app, f"f{field}", "x" * 200)
    answer = app.post("/workspace", {"title": "t" * 200, "csrf_token": csrf_token(app)},
                      headers=PAGE, status=413)
    assert "was not saved" in answer.text
    assert "workspace_title" not in data_of(app)


def test_drafts_are_capped_in_number_too(app):
    login(app)
    for field in range(32):
        draft(app, f"field{field}", "x")
    answer = draft(app, "one_too_many", "x", status=413)
    assert answer.json["error"] == "too_many_drafts"
    assert draft(app, "field0", "still changeable").json == {"saved": "draft_field0"}


# -- 5. the memory store's deadline heap does not grow with touches ----------------------------

def test_touching_a_session_many_times_keeps_one_deadline_entry(clock):
    store = MemoryStore(Policy(secret="x" * 40), clock)
    store.open("k" * 64, "7", int(clock()))
    for _ in range(10_000):
        clock.advance(1)
        store.touch("k" * 64, int(clock()))
    assert store.deadline_entries == 1
    store.sweep(int(clock()))
    assert store.get("k" * 64).is_open, "the stale entry looked again, not ended early"
    clock.advance(1200)
    store.sweep(int(clock()))
    assert store.get("k" * 64).end_reason == "idle_timeout", "ended at its real deadline"
    assert store.deadline_entries == 0


# -- 6. the client address is the WSGI server's, and fits the column ---------------------------

def test_sign_in_records_the_peer_address_never_a_forwarded_header(app):
    app.extra_environ = {"REMOTE_ADDR": "192.0.2.7"}
    app.get("/login")
    answer = app.post("/login", {"username": "alice", "password": "alice-password",
                                 "csrf_token": csrf_token(app)},
                      headers={**PAGE, "X-Forwarded-For": "203.0.113.66, 198.51.100.1"})
    assert answer.status_int == 303
    assert store_of(app).get(session_key_of(app)).ip == "192.0.2.7"


def test_a_46_character_forwarded_address_cannot_break_sign_in(app):
    app.get("/login")
    answer = app.post("/login", {"username": "alice", "password": "alice-password",
                                 "csrf_token": csrf_token(app)},
                      headers={**PAGE, "X-Forwarded-For": "1" * 46})
    assert answer.status_int == 303
    assert len(store_of(app).get(session_key_of(app)).ip or "") <= 45


def test_an_address_that_is_not_one_is_not_recorded(app):
    app.extra_environ = {"REMOTE_ADDR": "not-an-address"}
    login(app)
    assert store_of(app).get(session_key_of(app)).ip is None


def test_a_user_agent_longer_than_its_column_is_cut_to_fit(app):
    app.extra_environ = {"HTTP_USER_AGENT": "A" * 5000}
    login(app)
    assert store_of(app).get(session_key_of(app)).user_agent == "A" * 512


# -- headers --------------------------------------------------------------------------------

def test_sign_out_asks_the_browser_to_clear_its_cache(app):
    login(app)
    answer = app.post("/logout", {"csrf_token": csrf_token(app)}, headers=PAGE)
    assert answer.headers["Clear-Site-Data"] == '"cache"'


def test_an_expiry_never_clears_anything(app, clock):
    login(app)
    clock.advance(1201)
    answer = app.get("/workspace", headers=PAGE, status=303)
    assert "Clear-Site-Data" not in answer.headers


def test_authenticated_answers_are_never_cached(app):
    login(app)
    for path, headers in (("/", PAGE), ("/api/notes", JSON), ("/session/status", FETCH)):
        assert "no-store" in app.get(path, headers=headers).headers["Cache-Control"], path


def test_every_cookie_a_sign_in_sets_is_httponly_samesite_and_scoped_to_the_site(app):
    """ASVS 4.0 3.4.2 and 3.4.3: the session cookie, the ticket and the CSRF token."""
    answer = login(app)
    set_cookies = {value.split("=", 1)[0]: value for value in answer.headers.getall("Set-Cookie")}
    assert {"session", "auth_tkt", "csrf_token"} <= set(set_cookies), set_cookies
    for name in ("session", "auth_tkt", "csrf_token"):
        attributes = {part.strip().split("=", 1)[0].lower(): part.strip()
                      for part in set_cookies[name].split(";")[1:]}
        assert "httponly" in attributes, set_cookies[name]
        assert attributes["samesite"].lower() == "samesite=lax", set_cookies[name]
        assert attributes["path"] == "Path=/", set_cookies[name]
        assert "domain" not in attributes, set_cookies[name]


def test_a_session_id_carries_256_random_bits_and_each_sign_in_a_new_one(app):
    """ASVS 5.0 7.2.3: at least 128 bits; ours are 256 (64 hex digits)."""
    ids = set()
    for _ in range(3):
        login(app)
        session_id = app.cookies["session"][-64:]
        assert len(session_id) == 64 and set(session_id) <= set("0123456789abcdef")
        ids.add(session_id)
    assert len(ids) == 3


def test_signing_in_logs_no_refusal(app, caplog):
    """Renewing the id at sign-in reads nothing under the new id before it is adopted."""
    with caplog.at_level("WARNING", logger="session_expiry"):
        login(app)
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == []
