"""Two app servers, one session store (PostgreSQL, Redis): password tries are counted once
for the farm."""
import pytest

from tests.farm.conftest import BACKENDS, Browser

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

PAGE = {"Accept": "text/html"}


def sign_in(browser: Browser, base: str, password: str):
    browser.request(base + "/login", headers=PAGE)
    return browser.request(base + "/login", data={
        "username": "alice", "password": password, "csrf_token": browser.cookie("csrf_token")},
        headers=PAGE)


def end_others(browser: Browser, base: str, password: str):
    return browser.request(base + "/account/sessions/end-others", data={
        "password": password, "csrf_token": browser.cookie("csrf_token")},
        headers={"Accept": "application/json"})


def test_wrong_passwords_sent_to_two_servers_count_against_one_account(servers):
    a, b = servers.pair()
    guesser = Browser()
    assert [sign_in(guesser, base, "wrong")[0] for base in (a, b, a)] == [400, 400, 400]
    for base in (b, a):  # the fourth try waits, whichever server it reaches
        status, headers, body = sign_in(guesser, base, "alice-password")
        assert status == 429
        assert 13 <= int(headers["Retry-After"]) <= 15
        assert b"Too many wrong passwords" in body
    assert guesser.cookie("session") is None


def test_a_session_guessing_on_two_servers_is_ended_after_five_wrong_passwords(servers):
    a, b = servers.pair(throttle_free_tries="10")  # only the session's count
    browser = Browser()
    browser.login(a)
    statuses = [end_others(browser, base, "wrong")[0] for base in (a, b, a, b, a)]
    assert statuses == [400, 400, 400, 400, 401]
    for base in (b, a):
        status, _, body = browser.json(base + "/api/notes")
        assert (status, body["reason"]) == (401, "reauth_failed")
