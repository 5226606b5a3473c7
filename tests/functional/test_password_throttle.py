"""Password checks under the throttle, through the real app on every store: the sign-in form
and the re-authentication of "sign out every other session" (security round 2, finding 3)."""
from __future__ import annotations

import logging

import pytest
from webtest import TestApp

from tests.conftest import FETCH, PAGE, csrf_token, query, session_key_of
from tests.functional.test_reports import (
    enter,
    events_of,
    metrics_value,
    reason_in,
    record,
    signed_in,
)

END_OTHERS = "/account/sessions/end-others"
THROTTLED = "session_expiry_password_checks_throttled_total"
FAILURES = "session_expiry_password_failures_total"


def client(app: TestApp, address: str = "192.0.2.10") -> TestApp:
    """A browser at ``address`` on the same server."""
    return TestApp(app.app, extra_environ={"REMOTE_ADDR": address})


def sign_in(browser: TestApp, username: str, password: str, status: int):
    return browser.post("/login", {"username": username, "password": password,
                                   "csrf_token": csrf_token(browser)},
                        headers=PAGE, status=status)


def metrics(app: TestApp) -> str:
    return enter(app, "admin").get("/metrics", headers=FETCH).text


def end_others(browser: TestApp, password: str, headers=PAGE, status="*"):
    return browser.post(END_OTHERS, {"password": password, "csrf_token": csrf_token(browser)},
                        headers=headers, status=status)


# -- the sign-in form --------------------------------------------------------------------------

def test_after_three_wrong_passwords_a_sign_in_waits_with_a_429_that_says_how_long(app, clock):
    guesser = client(app)
    for _ in range(3):
        sign_in(guesser, "alice", "wrong", 400)
    refused = sign_in(guesser, "alice", "alice-password", 429)
    assert refused.headers["Retry-After"] == "15"
    error = refused.html.select_one(".error, [role=alert]").get_text()
    assert "Too many wrong passwords" in error and "wait 15 seconds" in error
    assert refused.html.find("input", attrs={"name": "username"})["value"] == "alice", \
        "the form comes back filled in"
    assert "session" not in guesser.cookies, "the right password was not even checked"

    clock.advance(15)
    assert sign_in(guesser, "alice", "alice-password", 303).location.endswith("/")


def test_the_owner_waits_on_another_device_too_but_only_minutes(app, clock):
    guesser, owner = client(app, "192.0.2.66"), client(app, "198.51.100.7")
    for _ in range(3):
        sign_in(guesser, "alice", "wrong", 400)
    for _ in range(10):  # the guesser comes back the moment it may, for a long time
        clock.advance(int(sign_in(guesser, "alice", "wrong", "*").headers.get("Retry-After",
                                                                              0)))
        sign_in(guesser, "alice", "wrong", 400)
    refused = sign_in(owner, "alice", "alice-password", 429)
    assert int(refused.headers["Retry-After"]) <= 300, "never locked out for long"
    clock.advance(int(refused.headers["Retry-After"]))
    sign_in(owner, "alice", "alice-password", 303)


def test_a_right_password_starts_the_accounts_count_afresh(app):
    browser = client(app)
    for _ in range(2):
        sign_in(browser, "alice", "wrong", 400)
    sign_in(browser, "alice", "alice-password", 303)
    other = client(app)
    for _ in range(3):
        sign_in(other, "alice", "wrong", 400)  # three wrong again before a wait


def test_one_address_guessing_many_accounts_waits_too(apps):
    app = apps(session_expiry__throttle_free_tries="1")  # the address: 10 free tries
    guesser = client(app, "203.0.113.9")
    for number in range(10):
        sign_in(guesser, f"user{number}", "password", 400)
    refused = sign_in(guesser, "bob", "bob-password", 429)
    assert refused.headers["Retry-After"] == "15"
    sign_in(client(app, "203.0.113.10"), "bob", "bob-password", 303)  # another address: fine
    text = metrics(app)
    assert metrics_value(text, f'{THROTTLED}{{check="sign_in",scope="address"}}') == 1
    assert metrics_value(text, f'{THROTTLED}{{check="sign_in",scope="account"}}') == 0


def test_every_throttled_sign_in_is_logged_and_counted(app, caplog):
    guesser = client(app)
    with caplog.at_level(logging.INFO, logger="session_expiry.passwords"):
        for _ in range(3):
            sign_in(guesser, "alice", "wrong", 400)
        for _ in range(2):
            sign_in(guesser, "alice", "wrong", 429)
    lines = [record.getMessage() for record in caplog.records
             if record.name == "session_expiry.passwords"]
    assert lines.count("password check (sign_in) failed") == 3
    assert [line for line in lines if "throttled" in line] == [
        "password check (sign_in) throttled: the account waits 15 s"] * 2
    assert all("alice" not in line and "wrong" not in line for line in lines)
    text = metrics(app)
    assert metrics_value(text, f'{FAILURES}{{check="sign_in"}}') == 3
    assert metrics_value(text, f'{THROTTLED}{{check="sign_in",scope="account"}}') == 2


def test_guesses_sent_at_once_are_each_counted(app):
    """The count is claimed before the password is checked: a burst is no free ride."""
    browsers = [client(app) for _ in range(5)]
    statuses = [sign_in(browser, "alice", "wrong", "*").status_int for browser in browsers]
    assert statuses == [400, 400, 400, 429, 429]


# -- re-authentication -------------------------------------------------------------------------

def test_re_authentication_is_throttled_under_the_accounts_own_count(app, clock):
    here = signed_in(app, "alice", real=True)
    for _ in range(2):
        sign_in(client(app, "198.51.100.1"), "alice", "wrong", 400)  # someone, elsewhere
    assert end_others(here, "wrong", status=400)
    refused = end_others(here, "alice-password", headers=FETCH, status=429)
    assert refused.json == {"error": "too_many_tries", "retry_after": 15}
    assert refused.headers["Retry-After"] == "15"
    assert record(app, session_key_of(here)).is_open, "a wait does not end the session"
    clock.advance(15)
    assert end_others(here, "alice-password").status_int == 303


def test_a_wrong_password_in_a_session_is_not_activity(app, clock):
    here = signed_in(app, "alice", real=True)
    before = record(app, session_key_of(here)).idle_deadline
    clock.advance(600)
    end_others(here, "wrong", status=400)
    assert record(app, session_key_of(here)).idle_deadline == before
    clock.advance(600)  # twenty minutes after the last activity
    assert here.get("/api/notes", headers=FETCH, status=401).json["reason"] == "idle_timeout"


def test_a_right_password_in_a_session_is_activity(app, clock):
    here = signed_in(app, "alice", real=True)
    clock.advance(600)
    end_others(here, "alice-password", status=303)
    assert record(app, session_key_of(here)).idle_deadline == clock() + 1200


def test_five_wrong_passwords_in_a_row_end_the_session_with_a_reason_of_its_own(
        app, clock, ended_events):
    here = signed_in(app, "alice", real=True)
    other = signed_in(app, "alice")
    key = session_key_of(here)
    answers = []
    for _ in range(5):
        answer = end_others(here, "wrong")
        answers.append(answer.status_int)
        clock.advance(int(answer.headers.get("Retry-After", 0)))
        if answer.status_int == 429:
            answer = end_others(here, "wrong")
            answers[-1] = answer.status_int
    assert answers == [400, 400, 400, 400, 303]
    assert query(answer.location)["reason"] == "reauth_failed"
    assert record(app, key).end_reason == "reauth_failed"
    assert [reason_in(line) for line in events_of(ended_events, key)] == ["reauth_failed"]
    assert record(app, session_key_of(other)).is_open, "the other sessions stay"

    # the user's notice says why, and what to do
    notice = here.get(answer.location, headers=PAGE)
    assert "password was entered wrongly too many times" in notice.text
    # the next request of any kind learns the reason
    assert here.get("/api/notes", headers=FETCH, status=401).json["reason"] == "reauth_failed"
    # and the report shows it among the ends, by reason
    report = enter(app, "admin").get("/admin/sessions", headers=PAGE)
    counted = report.html.select_one('[data-reason="reauth_failed"]')
    assert counted is not None and "1" in counted.get_text()


def test_a_fetch_client_whose_session_ends_on_a_wrong_password_gets_401_json(apps):
    app = apps(session_expiry__throttle_free_tries="10")  # the account never waits here
    here = signed_in(app, "alice", real=True)
    for _ in range(4):
        end_others(here, "wrong", headers=FETCH, status=400)
    answer = end_others(here, "wrong", headers=FETCH, status=401)
    assert answer.json["reason"] == "reauth_failed"


def test_a_right_password_ends_the_run_of_wrong_ones_in_the_session(app, clock):
    here = signed_in(app, "alice", real=True)
    for _ in range(3):
        end_others(here, "wrong", status=400)
    clock.advance(15)
    end_others(here, "alice-password", status=303)
    for _ in range(3):
        end_others(here, "wrong", status=400)
    assert record(app, session_key_of(here)).is_open


@pytest.mark.parametrize("password", ["", "x" * 1025])
def test_an_empty_or_over_long_password_is_no_try(app, password):
    here = signed_in(app, "alice", real=True)
    for _ in range(6):
        end_others(here, password, status=400)
    assert record(app, session_key_of(here)).is_open
    for _ in range(3):  # nothing was counted against the account
        sign_in(client(app), "alice", "wrong", 400)
