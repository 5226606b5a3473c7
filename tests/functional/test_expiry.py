"""One clock: timeouts, touches, the answers per kind of client, the figures told to the browser."""
import json
import re
import threading
import time

import pytest

from session_expiry.decision import ticket_binding
from session_expiry.ticket import read_ticket
from tests.conftest import (
    FETCH,
    HTMX,
    JSON,
    PAGE,
    clear_sessions,
    csrf_token,
    login,
    query,
    reason_in,
    session_key_of,
    store_of,
    ticket_of,
)

IDLE, ABSOLUTE, WARN, TOUCH = 1200, 8 * 3600, 120, 120


def record_of(app):
    return store_of(app).get(session_key_of(app))


def assert_ticket_matches_record(app):
    record, ticket = record_of(app), ticket_of(app)
    assert ticket is not None
    assert ticket.issued + IDLE == record.idle_deadline
    assert ticket.binding == ticket_binding(record.key)
    assert ticket.userid == record.user_id


def extend(app, **kw):
    return app.post("/session/extend", headers={**FETCH, "X-CSRF-Token": csrf_token(app)}, **kw)


# -- the figures ---------------------------------------------------------------

def test_every_authenticated_response_says_seconds_left(app, clock):
    login(app)
    clock.advance(100)
    for path, headers in (("/", PAGE), ("/api/notes", FETCH), ("/session/status", FETCH)):
        response = app.get(path, headers=headers)
        assert response.headers["Session-Expires-In"] == str(IDLE - 100), path
        # warn_before is configuration: the page's figures and the JSON answers carry it.
        assert "Session-Warn-Before" not in response.headers


def test_html_page_embeds_the_figures_and_a_noscript_refresh(app, clock):
    login(app)
    clock.advance(30)
    page = app.get("/workspace", headers=PAGE)
    config = page.html.find("script", id="session-expiry-config")
    figures = json.loads(config.string)
    assert figures["expiresIn"] == IDLE - 30 and figures["warnBefore"] == WARN
    refresh = page.html.find("noscript").find("meta")
    seconds, url = refresh["content"].split(";url=")
    assert int(seconds) == IDLE - 30
    assert query(url) == {"reason": "idle_timeout", "came_from": "/workspace"}


def test_between_whole_seconds_the_json_figures_are_exact_and_the_header_rounds_down(app, clock):
    """The browser counts down from the JSON figures: to the millisecond, so its push is
    not up to a second late. The header says whole seconds left, never one too many; the
    no-JS refresh never comes early."""
    login(app)
    clock.advance(30.25)  # the deadline, whole seconds, is 1199.75 s away
    page = app.get("/workspace", headers=PAGE)
    figures = json.loads(page.html.find("script", id="session-expiry-config").string)
    assert figures["expiresIn"] == IDLE - 30.25
    assert page.headers["Session-Expires-In"] == str(IDLE - 31)
    seconds, _ = page.html.find("noscript").find("meta")["content"].split(";url=")
    assert seconds == str(IDLE - 30)
    status = app.get("/session/status", headers=FETCH)
    assert status.json["remaining"] == IDLE - 30.25
    assert status.headers["Session-Expires-In"] == str(IDLE - 31)
    clock.advance(IDLE - 30.25 - 0.0004)  # 0.4 ms before the deadline: rounded up
    assert app.get("/session/status", headers=FETCH).json == {
        "state": "active", "reason": None, "remaining": 0.001, "warn_before": WARN,
        "user": record_of(app).user_id}
    clock.advance(0.0004)
    assert app.get("/session/status", headers=FETCH).json["state"] == "ended"


def test_anonymous_pages_carry_no_figures(app):
    page = app.get("/login", headers=PAGE)
    assert "Session-Expires-In" not in page.headers
    assert "session-expiry-config" not in page.text


# -- touches and the ticket ----------------------------------------------------------

def test_ticket_deadline_equals_record_idle_deadline_after_every_kind_of_response(app, clock):
    login(app)
    assert_ticket_matches_record(app)  # after login
    clock.advance(TOUCH)
    app.get("/", headers=PAGE)
    assert_ticket_matches_record(app)  # after a page load that touched
    clock.advance(TOUCH)
    app.get("/api/notes", headers=FETCH)
    assert_ticket_matches_record(app)  # after a fetch that touched
    clock.advance(5)
    extend(app)
    assert_ticket_matches_record(app)  # after an extend
    clock.advance(TOUCH)
    app.get("/no-such-page", headers=PAGE, status=404)
    assert_ticket_matches_record(app)  # after a 404


def test_requests_within_touch_interval_do_not_write_the_record(app, clock):
    login(app)
    before = record_of(app)
    clock.advance(TOUCH - 1)
    response = app.get("/", headers=PAGE)
    assert record_of(app) == before
    assert "auth_tkt" not in response.headers.get("Set-Cookie", "")
    assert response.headers["Session-Expires-In"] == str(IDLE - TOUCH + 1)


def test_request_after_touch_interval_touches_and_reissues(app, clock):
    login(app)
    clock.advance(TOUCH)
    response = app.get("/", headers=PAGE)
    assert record_of(app).idle_deadline == int(clock()) + IDLE
    assert "auth_tkt=" in response.headers["Set-Cookie"]
    assert response.headers["Session-Expires-In"] == str(IDLE)


def test_a_due_touch_is_written_only_if_no_request_alongside_wrote_it(app, clock, monkeypatch):
    """The tween asks the store to touch on condition (the store's tests show that a
    touch made alongside writes nothing); "stay signed in" touches whatever the interval."""
    login(app)
    store = store_of(app)
    touch, intervals = store.touch, []

    def spy(key, now, interval=0):
        intervals.append(interval)
        return touch(key, now, interval)

    monkeypatch.setattr(store, "touch", spy)
    clock.advance(TOUCH)
    app.get("/", headers=PAGE)
    extend(app)
    assert intervals == [TOUCH, 0]


def test_status_never_extends_the_session(app, clock):
    login(app)
    before = record_of(app)
    clock.advance(TOUCH * 3)
    status = app.get("/session/status", headers=FETCH).json
    assert status == {"state": "active", "reason": None, "remaining": IDLE - TOUCH * 3,
                      "warn_before": WARN, "user": record_of(app).user_id}
    assert record_of(app) == before


def test_extend_touches_within_touch_interval_and_reports_remaining(app, clock):
    login(app)
    clock.advance(10)
    response = extend(app)
    assert response.json["remaining"] == IDLE
    assert response.headers["Session-Expires-In"] == str(IDLE)
    assert record_of(app).idle_deadline == int(clock()) + IDLE


def test_extend_without_csrf_token_is_refused(app, clock):
    login(app)
    before = record_of(app)
    clock.advance(10)
    response = app.post("/session/extend", headers=FETCH, status=400)
    assert response.json == {"error": "bad_csrf_token"}
    assert record_of(app).idle_deadline == before.idle_deadline


def test_extend_cannot_pass_the_absolute_deadline(app, clock):
    login(app)
    for _ in range(ABSOLUTE // (IDLE - 60)):
        clock.advance(IDLE - 60)
        extend(app)
    remaining = extend(app).json["remaining"]
    assert remaining == record_of(app).absolute_deadline - int(clock()) < IDLE


# -- ends and the answers ---------------------------------------------------------

@pytest.mark.parametrize(("headers", "expected"), [
    (PAGE, "page"), (HTMX, "htmx"), (FETCH, "api"), (JSON, "api"), ({}, "api"),
    ({"Accept": "text/html,*/*;q=0.8"}, "page"),
])
def test_idle_timeout_is_answered_per_kind_of_client(app, clock, headers, expected, ended_events):
    login(app)
    clock.advance(IDLE)
    response = app.get("/workspace", headers={**headers, "HX-Current-URL": "http://localhost/"},
                       expect_errors=True)
    if expected == "page":
        assert response.status_int == 303
        assert query(response.location) == {"reason": "idle_timeout", "came_from": "/workspace"}
    else:
        assert response.status_int == 401
        assert response.json["error"] == "session_expired"
        assert response.json["reason"] == "idle_timeout"
        assert response.json["login_url"].startswith("/login")
        assert "WWW-Authenticate" in response.headers
        assert not response.headers["WWW-Authenticate"].lower().startswith(("basic", "digest"))
        if expected == "htmx":
            assert query(response.headers["HX-Redirect"])["reason"] == "idle_timeout"
    assert "Session-Expires-In" not in response.headers
    assert [reason_in(line) for line in ended_events] == ["idle_timeout"]


def test_fetch_after_idle_timeout_gets_401_json_never_the_login_html(app, clock):
    login(app)
    clock.advance(IDLE + 5)
    response = app.get("/api/notes", headers=FETCH, status=401)
    assert response.content_type == "application/json"
    assert response.json["reason"] == "idle_timeout"


def test_one_second_before_the_deadline_is_still_active(app, clock):
    login(app)
    clock.advance(IDLE - 1)
    assert app.get("/session/status", headers=FETCH).headers["Session-Expires-In"] == "1"
    # Activity in the last second still counts: it touches, and the full timeout starts again.
    assert app.get("/api/notes", headers=FETCH).headers["Session-Expires-In"] == str(IDLE)


def test_absolute_timeout_ends_an_active_session(app, clock, ended_events):
    login(app)
    for _ in range(ABSOLUTE // (IDLE - 60) + 1):
        clock.advance(IDLE - 60)
        response = app.get("/api/notes", headers=FETCH, expect_errors=True)
        if response.status_int == 401:
            break
    assert response.json["reason"] == "absolute_timeout"
    assert int(clock()) >= record_of(app).absolute_deadline
    assert [reason_in(line) for line in ended_events] == ["absolute_timeout"]


def test_post_page_load_after_expiry_returns_to_the_form_page(app, clock):
    login(app)
    token = csrf_token(app)
    clock.advance(IDLE)
    response = app.post("/workspace", {"title": "x", "csrf_token": token},
                        headers={**PAGE, "Referer": "http://localhost/workspace"})
    assert query(response.location) == {"reason": "idle_timeout", "came_from": "/workspace"}


def test_ended_request_drops_the_ticket_and_keeps_the_tombstone_cookie(app, clock):
    login(app)
    clock.advance(IDLE)
    app.get("/", headers=PAGE)
    assert "auth_tkt" not in app.cookies and "session" in app.cookies
    # The next request learns the true reason from the tombstone.
    assert app.get("/api/notes", headers=JSON, status=401).json["reason"] == "idle_timeout"


@pytest.mark.parametrize(("reason", "sentence"), [
    ("revoked", "An administrator ended your session."),
    ("ended_by_user", "You signed out this session from another device."),
    ("logged_out", "You signed out in another tab"),
])
def test_session_ended_elsewhere_is_told_with_its_reason(app, clock, reason, sentence):
    login(app)
    store_of(app).end(session_key_of(app), reason, int(clock()))
    response = app.get("/workspace", headers=PAGE)
    assert query(response.location)["reason"] == reason
    assert sentence in app.get(response.location, headers=PAGE).text


def test_ticket_of_one_session_with_cookie_of_another_is_refused(apps, clock):
    app_a = apps()
    login(app_a, "alice")
    app_b = type(app_a)(app_a.app)  # same server, another browser
    login(app_b, "bob")
    app_b.set_cookie("auth_tkt", app_a.cookies["auth_tkt"].strip('"'))
    response = app_b.get("/api/notes", headers=JSON, status=401)
    assert response.json["reason"] == "ticket_mismatch"
    assert record_of(app_b).is_open  # a forged pairing does not end bob's session


def redis_forget(store, key: str) -> None:
    """The Redis store loses the session ``key``: its hash and its places in its partition's
    sorted sets are gone (as after a Redis that lost its data, or evicted the keys)."""
    partition = store.layout.partition(key)
    session = partition.session(key)
    client = store.redis.client
    assert client.exists(session) == 1, "the session was in Redis before"
    pipe = client.pipeline(transaction=False)
    pipe.delete(session)
    for name in ("due", "seen", "born", "started"):
        pipe.zrem(partition.base + name, key)
    pipe.execute()
    assert store.get(key) is None


def store_forgot(apps, first, store_kind, app_database_url):
    """A browser holding ``first``'s cookies, served by a store that no longer knows them:
    a restarted memory store, a SQL row that is gone, or Redis keys that are gone."""
    if store_kind == "redis":
        redis_forget(store_of(first), session_key_of(first))
        return first
    if store_kind != "memory":
        clear_sessions(app_database_url)
        return first
    restarted = apps()  # a new process: same secret, empty memory store
    for name, value in first.cookies.items():
        restarted.set_cookie(name, value)
    return restarted


def test_session_lost_when_the_store_forgot_the_session(apps, store_kind, app_database_url):
    first = apps()
    login(first)
    browser = store_forgot(apps, first, store_kind, app_database_url)
    response = browser.get("/workspace", headers=PAGE)
    assert query(response.location)["reason"] == "session_lost"
    assert "The server lost your session" in browser.get(response.location, headers=PAGE).text


def test_ticket_expired_when_an_old_ticket_comes_back_to_an_unknown_session(
        apps, clock, store_kind, app_database_url):
    first = apps()
    login(first)
    clock.advance(IDLE + 1)
    browser = store_forgot(apps, first, store_kind, app_database_url)
    assert browser.get("/api/notes", headers=JSON, status=401).json["reason"] == "ticket_expired"


# -- the expired page ---------------------------------------------------------------

def test_expired_page_names_the_idle_timeout_in_plain_words(app, clock):
    login(app)
    clock.advance(IDLE)
    location = app.get("/workspace", headers=PAGE).location
    page = app.get(location, headers=PAGE)
    assert "You were signed out after 20 minutes without activity." in page.text
    link = page.html.find("a", string=re.compile("Sign in again"))["href"]
    assert query(link) == {"came_from": "/workspace"}


def test_expired_page_for_absolute_timeout_names_eight_hours(app):
    page = app.get("/session-expired?reason=absolute_timeout", headers=PAGE)
    assert "after 8 hours" in page.text


def test_expired_page_never_lies_when_the_session_is_alive(app):
    login(app)
    response = app.get("/session-expired?reason=idle_timeout&came_from=/workspace", headers=PAGE)
    assert response.status_int == 303 and response.location == "http://localhost/workspace"


def test_expired_page_ignores_unknown_reasons_and_hostile_came_from(app):
    page = app.get("/session-expired?reason=<script>&came_from=//evil.example", headers=PAGE)
    assert "Your session has ended." in page.text and "<script>" not in page.text
    link = page.html.find("a", string=re.compile("Sign in again"))["href"]
    assert "evil" not in link


def test_signing_in_again_from_the_expired_page_returns_to_the_page(app, clock):
    login(app)
    clock.advance(IDLE)
    location = app.get("/workspace?tab=3", headers=PAGE).location
    page = app.get(location, headers=PAGE)
    link = page.html.find("a", string=re.compile("Sign in again"))["href"]
    form = app.get(link, headers=PAGE).forms[0]
    form["username"], form["password"] = "alice", "alice-password"
    assert form.submit(headers=PAGE).location == "http://localhost/workspace?tab=3"


@pytest.mark.parametrize("path", ["/login", "/session-expired", "/session/status",
                                  "/session-expiry-static/site.css"])
def test_public_routes_are_never_redirected_after_expiry(app, clock, path):
    login(app)
    clock.advance(IDLE)
    assert app.get(path, headers=PAGE).status_int == 200


def test_status_of_an_ended_session_says_why(app, clock):
    login(app)
    clock.advance(IDLE)
    assert app.get("/session/status", headers=FETCH).json == {
        "state": "ended", "reason": "idle_timeout", "remaining": 0, "warn_before": WARN,
        "user": None}


def test_status_of_a_stranger_is_anonymous(app):
    assert app.get("/session/status", headers=FETCH).json["state"] == "anonymous"


# -- exactly once -------------------------------------------------------------------

def test_one_session_ended_event_when_tween_and_sweep_race(apps, clock, ended_events):
    app = apps()
    browsers = []
    for i in range(20):
        browser = type(app)(app.app)
        login(browser, ("alice", "bob")[i % 2])
        browsers.append(browser)
    store = store_of(app)
    clock.advance(IDLE + 1)

    def hit(browser):
        browser.get("/api/notes", headers=FETCH, expect_errors=True)

    threads = [threading.Thread(target=hit, args=(b,)) for b in browsers for _ in range(2)]
    threads.append(threading.Thread(target=store.sweep, args=(int(clock()),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.sweep(int(clock()))
    assert len(ended_events) == 20
    assert {reason_in(line) for line in ended_events} == {"idle_timeout"}
    assert all(not record.is_open for record in store.records())


def test_the_store_ends_an_idle_session_by_itself(apps, clock, ended_events, store_kind):
    """The memory store within a second; the SQL and Redis stores when their sweep thread
    is on."""
    app = apps() if store_kind == "memory" else apps(session_expiry__sweep_interval="1s")
    login(app)
    clock.advance(IDLE)  # nobody comes back
    deadline = time.monotonic() + (1.0 if store_kind == "memory" else 3.0)
    while not ended_events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [reason_in(line) for line in ended_events] == ["idle_timeout"]
    assert record_of(app).end_reason == "idle_timeout"


# -- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("cookie", [
    "session=garbage; auth_tkt=garbage",
    "session=" + "a" * 5000 + "; auth_tkt=" + "b" * 5000,
    'session="unterminated; auth_tkt=%ff%fe',
    # UTF-8 bytes as a WSGI server hands them over (latin-1 decoded).
    "session=\u00e9\u00e8; auth_tkt=" + "\u2603".encode("utf-8").decode("latin-1"),
    "auth_tkt=0123; session=0123",
    # Quoted bytes that are not UTF-8: WebOb raises on them wherever cookies are read.
    'auth_tkt="\u00e90bdd"; session="\u00e8\u00e9"; csrf_token="\u00ff"',
    ";;;==;session;auth_tkt=",
])
def test_garbage_cookies_are_anonymous_never_a_500(app, cookie):
    page = app.get("/workspace", headers={**PAGE, "Cookie": cookie})
    assert page.status_int == 303 and "/login" in page.location
    api = app.get("/api/notes", headers={**JSON, "Cookie": cookie}, status=401)
    assert api.json["error"] == "not_authenticated"


def test_truncated_cookies_of_a_real_session_do_not_500(app):
    login(app)
    cookies = dict(app.cookies)
    app.cookies.clear()
    header = f"session={cookies['session'][:20]}; auth_tkt={cookies['auth_tkt'][:50]}"
    response = app.get("/api/notes", headers={**JSON, "Cookie": header}, status=401)
    assert response.json["error"] == "not_authenticated"


def test_a_live_session_with_a_foreign_ticket_lends_its_data_to_nobody(apps):
    from pyramid.request import Request
    from pyramid.scripting import prepare

    from session_expiry.tween import session_expiry

    victim = apps()
    login(victim, "bob")
    victim.post("/workspace", {"title": "plans of bob", "csrf_token": csrf_token(victim)},
                headers=PAGE)
    attacker = type(victim)(victim.app)
    login(attacker, "alice")
    cookie = f"session={victim.cookies['session']}; auth_tkt={attacker.cookies['auth_tkt']}"
    env = prepare(request=Request.blank("/login", headers={"Cookie": cookie}),
                  registry=victim.app.registry)
    try:
        request = env["request"]
        assert session_expiry(request).reason == "ticket_mismatch"
        assert "workspace_title" not in request.session
    finally:
        env["closer"]()
    assert "plans of bob" in victim.get("/workspace", headers=PAGE).text


def test_the_add_on_costs_no_request_a_class_nor_four_events(base_settings):
    """A request property (``add_request_method(..., reify=True)``) makes Pyramid build a
    class for every request, and one subscriber makes it notify four events on every
    request: the tween sets ``request.session_expiry``, and ``SessionEnded`` is logged
    by the stores' ``on_end``."""
    from pyramid.config import Configurator
    from pyramid.interfaces import IRequestExtensions

    with Configurator(settings=dict(base_settings)) as config:
        config.include("session_expiry")
    try:
        extensions = config.registry.queryUtility(IRequestExtensions)
        assert extensions is None or not extensions.descriptors
        assert not config.registry.has_listeners
    finally:
        config.registry.session_expiry.store.close()


def test_an_answered_request_is_freed_at_once_not_left_to_the_garbage_collector(
        base_settings):
    """``request.session_expiry`` holds its request weakly. A reference cycle through it
    kept every request, its environ (with the server's input buffer) and its session
    alive until the garbage collector's next pass: 19 objects a request, on every store.
    Measured on the add-on alone: the demo app's ORM session makes cycles of its own, and
    so does a refused request (Pyramid keeps the raised exception, whose traceback holds
    the request)."""
    import gc

    from pyramid.config import Configurator
    from pyramid.response import Response
    from pyramid.security import NO_PERMISSION_REQUIRED, remember
    from webob import Request
    from webtest import TestApp

    def sign_in(request):
        headers = remember(request, "alice")
        request.session["greeting"] = "hello"
        return Response("signed in", headers=headers)

    def page(request):
        return Response(request.session.get("greeting", "nothing"))

    def write(request):
        request.session["greeting"] = "hello again"
        return Response("written")

    with Configurator(settings=dict(base_settings)) as config:
        config.include("session_expiry")
        for name, view, permission in (("sign_in", sign_in, NO_PERMISSION_REQUIRED),
                                       ("page", page, "view"), ("write", write, "view")):
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, permission=permission)
    wsgi = config.make_wsgi_app()
    try:
        browser = TestApp(wsgi)
        browser.get("/sign_in")
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        requests = [("/page", "200 OK"), ("/write", "200 OK")]

        def serve(path):
            statuses = []
            environ = Request.blank(path, headers={"Cookie": cookie}).environ
            b"".join(wsgi(environ, lambda status, headers, exc_info=None:
                          statuses.append(status)))
            return statuses[0]

        for path, status in requests:  # warm: first uses fill Pyramid's caches
            assert serve(path) == status, path
        gc.collect()
        gc.disable()
        try:
            for path, _ in requests * 10:
                serve(path)
            unreachable = gc.collect()
        finally:
            gc.enable()
        assert unreachable == 0
        assert browser.get("/page").text == "hello again"  # the requests did their work
    finally:
        wsgi.registry.session_expiry.store.close()


def test_a_reissued_ticket_that_never_reached_the_browser_is_healed_not_refused(app, clock):
    login(app)
    old_ticket = app.cookies["auth_tkt"]
    clock.advance(TOUCH)
    app.get("/api/notes", headers=FETCH)  # touches; pretend its Set-Cookie was lost
    clock.advance(IDLE - TOUCH)  # past the old ticket's own deadline, before the record's
    cookie = f"session={app.cookies['session']}; auth_tkt={old_ticket}"
    answer = app.get("/session/status", headers={**FETCH, "Cookie": cookie})
    assert (answer.json["state"], answer.json["remaining"]) == ("active", TOUCH)
    # That very answer reissues the ticket, in step with the record.
    reissued = answer.headers["Set-Cookie"].split("auth_tkt=", 1)[1].split(";", 1)[0]
    expiry = app.app.registry.session_expiry
    assert read_ticket(expiry.ticket_secret, reissued).issued + IDLE == record_of(app).idle_deadline
