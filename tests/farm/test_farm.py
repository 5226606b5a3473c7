"""Two app servers, one PostgreSQL: one session, seen alike by both."""
import sqlalchemy as sa

from session_expiry.inputs import read_session_key
from session_expiry.settings import Policy
from session_expiry.stores.sql import SqlStore, engine_for
from session_expiry.ticket import derive_secret
from tests.conftest import SECRET
from tests.farm.conftest import Browser


def session_key(browser: Browser) -> str:
    """The store key of the browser's session."""
    secret = derive_secret(SECRET, "session-cookie")
    return read_session_key(secret, browser.cookie("session").strip('"'))


def test_a_client_alternating_between_servers_stays_signed_in(servers):
    a, b = servers(), servers()
    browser = Browser()
    browser.login(a)
    for base in (b, a, b, a, b):
        status, headers, body = browser.json(base + "/api/notes")
        assert status == 200, body
        assert body["user"] == "alice"
        assert int(headers["Session-Expires-In"]) > 0


def test_logout_on_one_server_is_effective_on_the_other(servers):
    a, b = servers(), servers()
    browser = Browser()
    browser.login(a)
    assert browser.json(b + "/api/notes")[0] == 200
    browser.logout(b)
    status, _, body = browser.json(a + "/api/notes")
    assert (status, body["reason"]) == (401, "logged_out")


def test_a_revoke_written_elsewhere_is_seen_on_the_next_request(servers, farm_url):
    a, b = servers(), servers()
    browser = Browser()
    browser.login(a)
    assert browser.json(b + "/api/notes")[0] == 200
    elsewhere = SqlStore(engine_for(farm_url), Policy(), clock=lambda: 0)
    try:
        now = int(sa.create_engine(farm_url).connect().execute(
            sa.text("SELECT extract(epoch FROM now())")).scalar())
        assert elsewhere.end(session_key(browser), "revoked", now) is not None
    finally:
        elsewhere.close()
    for base in (b, a):
        status, _, body = browser.json(base + "/api/notes")
        assert (status, body["reason"]) == (401, "revoked")


def test_an_extend_on_one_server_moves_the_deadline_both_report(servers):
    a, b = servers(idle_timeout="10m", touch_interval="5m", warn_before="1m"), \
        servers(idle_timeout="10m", touch_interval="5m", warn_before="1m")
    browser = Browser()
    browser.login(a)
    status, _, body = browser.json(b + "/session/extend", data=b"",
                                   headers={"X-CSRF-Token": browser.cookie("csrf_token")})
    assert status == 200 and 599 < body["remaining"] <= 600
    _, _, body = browser.json(a + "/session/status")
    assert body["state"] == "active" and 599 < body["remaining"] <= 600
