"""Two app servers, one session store (PostgreSQL, Redis, a Redis Cluster): one session, seen
alike by both."""
import time

import pytest
import sqlalchemy as sa

from session_expiry.inputs import read_session_key
from session_expiry.ticket import derive_secret
from tests.conftest import SECRET
from tests.farm.conftest import BACKENDS, Browser, due, pending, stream_entries

every_backend = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def session_key(browser: Browser) -> str:
    """The store key of the browser's session."""
    secret = derive_secret(SECRET, "session-cookie")
    return read_session_key(secret, browser.cookie("session").strip('"'))


def store_now(backend: str, farm_url: str) -> int:
    """Now, as the store's own clock tells it: PostgreSQL's for the SQL store (its servers
    and this test share a machine, and so a clock, with Redis's)."""
    if backend != "postgresql":
        return int(time.time())
    engine = sa.create_engine(farm_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT extract(epoch FROM now())")).scalar())
    finally:
        engine.dispose()


@every_backend
def test_a_client_alternating_between_servers_stays_signed_in(servers):
    a, b = servers.pair()
    browser = Browser()
    browser.login(a)
    for base in (b, a, b, a, b):
        status, headers, body = browser.json(base + "/api/notes")
        assert status == 200, body
        assert body["user"] == "alice"
        assert int(headers["Session-Expires-In"]) > 0


@every_backend
def test_logout_on_one_server_is_effective_on_the_other(servers):
    a, b = servers.pair()
    browser = Browser()
    browser.login(a)
    assert browser.json(b + "/api/notes")[0] == 200
    browser.logout(b)
    status, _, body = browser.json(a + "/api/notes")
    assert (status, body["reason"]) == (401, "logged_out")


@every_backend
def test_a_revoke_written_elsewhere_is_seen_on_the_next_request(servers, open_store, backend,
                                                                 farm_url):
    a, b = servers.pair()
    browser = Browser()
    browser.login(a)
    assert browser.json(b + "/api/notes")[0] == 200
    elsewhere = open_store()
    assert elsewhere.end(session_key(browser), "revoked", store_now(backend, farm_url)) \
        is not None
    for base in (b, a):
        status, _, body = browser.json(base + "/api/notes")
        assert (status, body["reason"]) == (401, "revoked")


@every_backend
def test_an_extend_on_one_server_moves_the_deadline_both_report(servers):
    a, b = servers.pair(idle_timeout="10m", touch_interval="5m", warn_before="1m")
    browser = Browser()
    browser.login(a)
    status, _, body = browser.json(b + "/session/extend", data=b"",
                                   headers={"X-CSRF-Token": browser.cookie("csrf_token")})
    assert status == 200 and 599 < body["remaining"] <= 600
    _, _, body = browser.json(a + "/session/status")
    assert body["state"] == "active" and 599 < body["remaining"] <= 600


@pytest.mark.parametrize("backend", ["redis-cluster"], indirect=True)
def test_a_farm_on_a_redis_cluster_shares_its_sessions_and_tells_each_end_once(
        servers, open_store):
    a, b = servers.pair()
    alice, bob = Browser(), Browser()
    alice.login(a)
    bob.login(b, "bob")
    for base in (b, a, b, a):  # each on both servers, each server's requests in any slot
        for browser, user in ((alice, "alice"), (bob, "bob")):
            status, _, body = browser.json(base + "/api/notes")
            assert (status, body["user"]) == (200, user)

    alice.logout(b)  # ended by the server she did not sign in on
    status, _, body = alice.json(a + "/api/notes")
    assert (status, body["reason"]) == (401, "logged_out")

    elsewhere = open_store()
    assert elsewhere.end(session_key(bob), "revoked", int(time.time())) is not None
    assert elsewhere.end(session_key(bob), "revoked", int(time.time())) is None  # once
    for base in (a, b):
        status, _, body = bob.json(base + "/api/notes")
        assert (status, body["reason"]) == (401, "revoked")
        status, _, body = alice.json(base + "/api/notes")
        assert status == 401

    # One event per end, each told (acknowledged) by the process that wrote it.
    entries = stream_entries(elsewhere)
    assert sorted((entry["key"], entry["reason"]) for entry in entries) == sorted(
        [(session_key(alice), "logged_out"), (session_key(bob), "revoked")])
    assert pending(elsewhere) == {}
    assert due(elsewhere) == 0
    # ... and taken out of its user's index by the same script that ended it.
    assert [elsewhere.user_sessions(entry["user"], int(time.time())) for entry in entries] \
        == [[], []]
