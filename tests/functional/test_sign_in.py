"""Signing in and out: CSRF, safe return paths, id rotation, logout."""
import pytest

from tests.conftest import (
    FETCH,
    HTMX,
    JSON,
    PAGE,
    csrf_token,
    login,
    query,
    session_key_of,
    store_of,
)


def test_anonymous_page_load_goes_to_login_with_came_from(app):
    response = app.get("/workspace?tab=2", headers=PAGE)
    assert response.status_int == 303
    assert response.location.startswith("http://localhost/login?")
    assert query(response.location) == {"came_from": "/workspace?tab=2"}


def test_anonymous_fetch_gets_401_not_authenticated_json(app):
    response = app.get("/api/notes", headers=FETCH, status=401)
    assert response.json["error"] == "not_authenticated"
    assert response.json["login_url"].startswith("/login")
    assert response.headers["WWW-Authenticate"].startswith("Cookie ")
    assert "Session-Expires-In" not in response.headers


def test_anonymous_htmx_gets_401_with_hx_redirect_to_login(app):
    response = app.get("/api/notes", headers={**HTMX, "HX-Current-URL": "http://localhost/workspace"},
                       status=401)
    assert response.headers["HX-Redirect"] == "/login?came_from=%2Fworkspace"


def test_anonymous_visitor_gets_no_server_side_session(app):
    app.get("/login", headers=PAGE)
    app.get("/", headers=PAGE)
    assert "session" not in app.cookies
    assert store_of(app).records() == []
    assert "csrf_token" in app.cookies  # the login form's token lives in a cookie


def test_login_returns_to_came_from_and_starts_a_session(app):
    response = login(app, came_from="/workspace?tab=2")
    assert response.location == "http://localhost/workspace?tab=2"
    records = store_of(app).records()
    assert len(records) == 1 and records[0].is_open
    assert records[0].key == session_key_of(app)
    assert app.get("/workspace", headers=PAGE).status_int == 200


@pytest.mark.parametrize("hostile", [
    "//evil.example/", "/\\evil.example", "https://evil.example/", "javascript:alert(1)",
    "/%2F%2Fevil.example", "%2F%2Fevil.example", "/%5Cevil.example", "\\\\evil.example",
    "http:/evil.example",
])
def test_hostile_came_from_falls_back_to_root(app, hostile):
    response = login(app, came_from=hostile)
    assert response.location == "http://localhost/"


def test_wrong_password_is_refused_without_a_session(app):
    response = app.post("/login", {"username": "alice", "password": "nope",
                                   "csrf_token": csrf_token(app)}, headers=PAGE, status=400)
    assert "do not match" in response.text
    assert "session" not in app.cookies and store_of(app).records() == []


def test_login_without_csrf_token_is_a_clear_400_not_a_traceback(app):
    response = app.post("/login", {"username": "alice", "password": "alice-password"},
                        headers=PAGE, status=400)
    assert "expired" in response.text and "Traceback" not in response.text
    assert store_of(app).records() == []


def test_login_rotates_a_fixated_session_id(app):
    # An attacker plants a validly signed id of their choosing before the victim signs in.
    from beaker.session import SignedCookie

    expiry = app.app.registry.session_expiry
    planted_id = "0123456789abcdef0123456789abcdef"
    _, signed = SignedCookie(expiry.cookie_secret).value_encode(planted_id)
    app.set_cookie("session", signed)
    login(app)
    assert app.cookies["session"].strip('"') != signed
    from session_expiry.stores import session_key

    assert store_of(app).get(session_key(planted_id)) is None


def test_signing_in_again_ends_the_old_session_and_issues_a_new_id(app, ended_events):
    login(app)
    first = session_key_of(app)
    login(app, "bob")
    second = session_key_of(app)
    assert first != second
    assert store_of(app).get(first).end_reason == "logged_out"
    assert store_of(app).get(second).user_id != store_of(app).get(first).user_id
    assert len(ended_events) == 1


def test_logout_ends_the_session_and_forgets_the_ticket(app, ended_events):
    login(app)
    key = session_key_of(app)
    response = app.post("/logout", {"csrf_token": csrf_token(app)}, headers=PAGE)
    assert response.status_int == 303
    assert query(response.location) == {"logged_out": "1"}
    assert "auth_tkt" not in app.cookies
    tombstone = store_of(app).get(key)
    assert tombstone.end_reason == "logged_out" and store_of(app).load_data(key) is None
    assert len(ended_events) == 1 and "reason=logged_out" in ended_events[0]
    assert "You have signed out" in app.get(response.location, headers=PAGE).text


def test_old_cookies_replayed_after_logout_load_nothing(app):
    login(app)
    app.post("/workspace", {"title": "secret plans", "csrf_token": csrf_token(app)}, headers=PAGE)
    assert "secret plans" in app.get("/workspace", headers=PAGE).text
    stolen = dict(app.cookies)
    app.post("/logout", {"csrf_token": csrf_token(app)}, headers=PAGE)

    for name, value in stolen.items():
        app.set_cookie(name, value)
    response = app.get("/workspace", headers=PAGE)
    assert response.status_int == 303
    assert query(response.location)["reason"] == "logged_out"
    assert store_of(app).load_data(session_key_of(app)) is None
    assert app.get("/api/notes", headers=JSON, status=401).json["reason"] == "logged_out"


def test_another_tab_after_logout_learns_it_signed_out(app):
    login(app)
    app.post("/logout", {"csrf_token": csrf_token(app)}, headers=PAGE)
    response = app.get("/workspace", headers=PAGE)
    assert query(response.location) == {"reason": "logged_out", "came_from": "/workspace"}
    page = app.get(response.location, headers=PAGE)
    assert "You signed out in another tab" in page.text


def test_login_page_sends_a_signed_in_user_on(app):
    login(app)
    response = app.get("/login?came_from=/workspace", headers=PAGE)
    assert response.status_int == 303 and response.location == "http://localhost/workspace"


def test_login_rotates_the_csrf_token(app):
    before = csrf_token(app)
    login(app)
    after = app.cookies["csrf_token"]
    assert after != before
    response = app.post("/logout", {"csrf_token": before}, headers=PAGE, status=400)
    assert "expired" in response.text
    assert app.post("/logout", {"csrf_token": after}, headers=PAGE).status_int == 303


def test_a_loaded_session_is_not_new_to_pyramid(apps):
    from pyramid.request import Request
    from pyramid.scripting import prepare

    app = apps()
    login(app)
    app.post("/workspace", {"title": "x", "csrf_token": csrf_token(app)}, headers=PAGE)
    cookie = "; ".join(f"{name}={value}" for name, value in app.cookies.items())
    env = prepare(request=Request.blank("/", headers={"Cookie": cookie}),
                  registry=app.app.registry)
    try:
        assert env["request"].session["workspace_title"] == "x"
        assert env["request"].session.new is False
    finally:
        env["closer"]()
