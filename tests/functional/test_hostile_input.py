"""Bad input gets a clear answer and loses nothing: never a 500, never an open redirect."""
import pytest
from webtest import Upload

from tests.conftest import FETCH, PAGE, csrf_token, login, session_key_of, store_of

IDLE, TOUCH = 1200, 120


def test_non_ascii_came_from_is_percent_encoded_not_a_500(app):
    response = login(app, came_from="/workspace?title=\u20ac")
    assert response.location == "http://localhost/workspace?title=%E2%82%AC"
    again = app.get("/login?came_from=/%E2%82%AC", headers=PAGE)
    assert again.status_int == 303 and again.location == "http://localhost/%E2%82%AC"
    expired = app.get("/session-expired?came_from=/%E2%82%AC", headers=PAGE)
    assert expired.location == "http://localhost/%E2%82%AC"


@pytest.mark.parametrize("field", ["username", "password", "csrf_token"])
def test_a_file_upload_in_a_login_field_is_a_400_and_no_session(app, field):
    params = {"username": "alice", "password": "alice-password", "came_from": "/",
              "csrf_token": csrf_token(app)}
    params[field] = Upload("x.txt", b"hello")
    response = app.post("/login", params, headers=PAGE, status=400)
    assert "Traceback" not in response.text
    assert "session" not in app.cookies


def test_a_file_upload_as_came_from_returns_to_the_home_page(app):
    params = {"username": "alice", "password": "alice-password",
              "came_from": Upload("x.txt", b"//evil.example"), "csrf_token": csrf_token(app)}
    response = app.post("/login", params, headers=PAGE)
    assert response.location == "http://localhost/"


def test_a_file_upload_as_workspace_title_saves_nothing_harmful(app):
    login(app)
    response = app.post("/workspace", {"title": Upload("x.txt", b"hi"),
                                       "csrf_token": csrf_token(app)}, headers=PAGE)
    assert response.status_int == 303
    assert store_of(app).load_data(session_key_of(app)).values()["workspace_title"] == ""


def test_an_undecodable_url_is_a_400(app):
    assert app.get("/%ff", headers=PAGE, status=400).status_int == 400


def test_bad_json_accept_and_headers_do_not_break_the_answer(app):
    response = app.get("/api/notes", headers={"Accept": "application/json;q=x, text/html;q=",
                                              "Sec-Fetch-Mode": "\u00ff"}, status=401)
    assert response.json["error"] == "not_authenticated"


# -- what does not count as activity ------------------------------------------------

def idle_deadline(app):
    return store_of(app).get(session_key_of(app)).idle_deadline


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("get", "/no-such-page", {"status": 404}),
    ("post", "/session/extend", {"status": 400}),  # CSRF check fails
    ("post", "/session/status", {"status": 404}),
    ("get", "/session-expired?came_from=/", {"status": 303}),
    ("get", "/session/status", {"status": 200}),
])
def test_requests_that_are_not_activity_never_extend(app, clock, method, path, kwargs):
    login(app)
    before = idle_deadline(app)
    clock.advance(TOUCH * 2)
    getattr(app, method)(path, headers=FETCH, **kwargs)
    assert idle_deadline(app) == before


def test_a_page_load_is_activity(app, clock):
    login(app)
    before = idle_deadline(app)
    clock.advance(TOUCH * 2)
    app.get("/", headers=PAGE)
    assert idle_deadline(app) == before + TOUCH * 2


def test_logout_with_a_foreign_ticket_does_not_end_the_session_its_cookie_names(apps):
    victim = apps()
    login(victim, "bob")
    attacker = type(victim)(victim.app)
    login(attacker, "alice")
    attacker.set_cookie("session", victim.cookies["session"].strip('"'))
    attacker.post("/logout", {"csrf_token": csrf_token(attacker)}, headers=PAGE)
    assert store_of(victim).get(session_key_of(victim)).is_open
    assert victim.get("/", headers=PAGE).status_int == 200


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"field": 3, "value": "x"}',
                                  b'{"field": "../x", "value": "x"}', b"\xff\xfe"])
def test_bad_json_gets_a_400_json_answer(app, body):
    login(app)
    response = app.post("/api/draft", body, headers={**FETCH, "Content-Type": "application/json",
                                                     "X-CSRF-Token": csrf_token(app)}, status=400)
    assert response.json["error"] == "bad_json"
