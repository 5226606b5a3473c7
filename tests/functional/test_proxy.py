"""Behind a real nginx, with waitress set up as production.ini sets it (issue 21, finding 4).

Everyone is on loopback, each from an address of its own (Linux answers all of 127.0.0.0/8):
nginx reaches waitress from 127.0.0.1, production.ini's ``trusted_proxy``; the Prometheus
host, listed by address in ``metrics_scrapers``, connects from 127.0.0.2; any other client
from 127.0.0.3. The client's address is thus neither the proxy's nor the scraper's, so each
assertion tells "the proxy's word was taken" from "the header was ignored" and from "the
client's word was taken". See docs/security.md, "Behind a reverse proxy".
"""
from __future__ import annotations

import configparser
import http.client
import http.cookies
import re
import urllib.parse
import uuid

import pytest
from pyramid.paster import get_app
from sqlalchemy import create_engine, text

from tests.conftest import FETCH, PAGE, ROOT, SECRET
from tests.nginx import Nginx
from tests.wsgi_server import serve

PROXY = "127.0.0.1"
SCRAPER = "127.0.0.2"
CLIENT = "127.0.0.3"
#: The scraper by address, and a network a client would like to claim a place in.
SCRAPERS = f"{SCRAPER} 10.0.0.0/8"
#: What a client writes to pass for the scraper or for an address in a listed network.
FORGERIES = [
    [("X-Forwarded-For", SCRAPER)],
    [("X-Forwarded-For", "10.0.0.5")],
    [("X-Forwarded-For", f"10.0.0.5, {SCRAPER}")],
    [("X-Forwarded-For", "10.0.0.5"), ("X-Forwarded-For", SCRAPER)],
    [("Forwarded", f"for={SCRAPER}")],
    [("X_Forwarded_For", SCRAPER)],
]
SAFE_FORMS = ["overwrite", "append"]


def server_settings() -> dict[str, str]:
    """production.ini's waitress settings about proxies, as written there."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "production.ini")
    return {key: value for key, value in parser["server:main"].items()
            if "proxy" in key}


def documented_example_scrapers() -> str:
    """The example value docs/settings.md's settings table gives for ``metrics_scrapers``."""
    row = next(line for line in (ROOT / "docs" / "settings.md").read_text().splitlines()
               if line.startswith("| `session_expiry.metrics_scrapers` |"))
    return re.search(r"`([^`]+)`", row.split("|")[3]).group(1)  # the first in "meaning"


# -- the servers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def waitress_port(tmp_path_factory, database_url):
    """``waitress_port(scrapers)``: the port of production.ini's app with ``metrics_scrapers``,
    served with production.ini's proxy settings (one server per list, kept for the module)."""
    started: dict[str, tuple[int, callable, object]] = {}

    def start(scrapers: str) -> int:
        if scrapers not in started:
            ini = tmp_path_factory.mktemp("ini") / "production.ini"
            ini.write_text((ROOT / "production.ini").read_text().replace(
                "[app:main]\n", f"[app:main]\nsqlalchemy.url = {database_url}\n"
                f"session_expiry.secret = {SECRET}\n"
                f"session_expiry.metrics_scrapers = {scrapers}\n", 1))
            app = get_app(str(ini))
            port, stop = serve(app, channel_timeout=10, **server_settings())
            started[scrapers] = (port, stop, app)
        return started[scrapers][0]

    yield start
    for _, stop, app in started.values():
        stop()
        app.registry.session_expiry.store.close()


@pytest.fixture(scope="module")
def proxy_port(waitress_port):
    """``proxy_port(form, scrapers)``: the port of an nginx passing the client's address on in
    ``form`` (tests.nginx.FORWARDED_FOR) to the app with ``metrics_scrapers``."""
    started: dict[tuple[str, str], Nginx] = {}

    def start(form: str, scrapers: str = SCRAPERS) -> int:
        if (form, scrapers) not in started:
            started[form, scrapers] = Nginx(waitress_port(scrapers), form).start()
        return started[form, scrapers].port

    yield start
    for nginx in started.values():
        nginx.stop()


# -- a client on an address of its choosing ---------------------------------------------------

def call(port: int, path: str, *, source: str, headers=(), data: dict | None = None):
    """One request from ``source`` to 127.0.0.1:``port``; ``headers`` as (name, value) pairs
    (a name may repeat). Returns (status, headers as a Message, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                            source_address=(source, 0))
    try:
        connection.putrequest("POST" if data is not None else "GET", path,
                              skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        if body is not None:
            connection.putheader("Content-Type", "application/x-www-form-urlencoded")
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def metrics(port: int, source: str, headers=()) -> int:
    status, _, body = call(port, "/metrics", source=source, headers=[*FETCH.items(), *headers])
    if status == 200:
        assert b"session_expiry_sessions_active" in body
    else:
        assert b'"not_authenticated"' in body, (status, body)
    return status


@pytest.fixture(scope="module")
def recorded_address(database_url):
    """``recorded_address(port, source, headers)``: sign alice in from ``source`` sending
    ``headers`` too; the address her session keeps in the store."""
    engine = create_engine(database_url)

    def sign_in(port: int, source: str, headers=(), *, scheme: str = "https") -> str:
        agent = f"proxy-test-{uuid.uuid4().hex}"
        common = [("User-Agent", agent), *PAGE.items(), *headers]
        status, answer, _ = call(port, "/login", source=source, headers=common)
        assert status == 200
        jar = http.cookies.SimpleCookie()
        for line in answer.get_all("Set-Cookie"):
            jar.load(line)
        cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())
        token = next(morsel.value for name, morsel in jar.items()
                     if name.endswith("csrf_token"))
        status, _, body = call(
            port, "/login", source=source, data={
                "username": "alice", "password": "alice-password", "csrf_token": token},
            headers=[*common, ("Cookie", cookies), ("Origin", f"{scheme}://127.0.0.1:{port}")])
        assert status == 303, body
        with engine.connect() as db:
            return db.execute(text("SELECT ip FROM sessions WHERE user_agent = :agent"),
                              {"agent": agent}).scalar_one()

    yield sign_in
    engine.dispose()


# -- production.ini ---------------------------------------------------------------------------

def test_production_ini_trusts_one_local_proxy_and_only_the_headers_it_overwrites():
    settings = server_settings()
    assert settings.pop("trusted_proxy") == PROXY
    assert settings.pop("trusted_proxy_count") == "1"
    assert set(settings.pop("trusted_proxy_headers").split()) == {
        "x-forwarded-for", "x-forwarded-proto"}
    assert settings.pop("clear_untrusted_proxy_headers") == "true"
    assert settings == {}


# -- the safe configurations ------------------------------------------------------------------

@pytest.mark.parametrize("form", SAFE_FORMS)
def test_through_the_proxy_a_forged_header_makes_no_client_a_scraper(proxy_port, form):
    port = proxy_port(form)
    assert metrics(port, CLIENT) == 401
    for forged in FORGERIES:
        assert metrics(port, CLIENT, forged) == 401, forged


@pytest.mark.parametrize("form", SAFE_FORMS)
def test_through_the_proxy_the_scraper_listed_by_address_reads_metrics(proxy_port, form):
    port = proxy_port(form)
    assert metrics(port, SCRAPER) == 200
    assert metrics(port, SCRAPER, [("X-Forwarded-For", "203.0.113.7")]) == 200


@pytest.mark.parametrize("form", SAFE_FORMS)
def test_through_the_proxy_a_session_records_the_real_client_not_a_forged_one(
        proxy_port, recorded_address, form):
    port = proxy_port(form)
    assert recorded_address(port, CLIENT) == CLIENT
    assert recorded_address(port, CLIENT, [("X-Forwarded-For", "203.0.113.7")]) == CLIENT
    for forged in FORGERIES:
        assert recorded_address(port, CLIENT, forged) == CLIENT, forged


def test_with_the_append_form_a_malformed_header_spoils_only_the_clients_own_request(
        proxy_port):
    """Waitress answers 400 to an X-Forwarded-For it cannot read (here, after nginx appended
    to the client's unbalanced quote); the overwrite form never passes one on."""
    forged = [("X-Forwarded-For", '"10.0.0.5')]
    status, _, body = call(proxy_port("append"), "/metrics", source=CLIENT, headers=forged)
    assert status == 400 and b"X-Forwarded-For" in body, (status, body)
    assert metrics(proxy_port("append"), SCRAPER) == 200
    assert metrics(proxy_port("overwrite"), CLIENT, forged) == 401


def test_directly_to_waitress_a_forged_header_changes_nothing(waitress_port, recorded_address):
    port = waitress_port(SCRAPERS)
    for forged in FORGERIES:
        assert metrics(port, CLIENT, forged) == 401, forged
        assert recorded_address(port, CLIENT, forged, scheme="http") == CLIENT, forged
    # Nor may a client claim TLS: the untrusted X-Forwarded-Proto is dropped.
    assert recorded_address(port, CLIENT, [("X-Forwarded-Proto", "https")],
                            scheme="http") == CLIENT
    assert metrics(port, SCRAPER) == 200  # Prometheus may scrape waitress directly


def test_waitress_takes_the_last_of_several_forwarded_for_lines_as_haproxy_adds_its_own(
        waitress_port):
    """HAProxy's ``option forwardfor`` adds a line after the client's; waitress joins repeated
    lines in order and takes the right-most entry. Here the client is played by the proxy's
    own address."""
    port = waitress_port(SCRAPERS)
    assert metrics(port, PROXY, [("X-Forwarded-For", SCRAPER),
                                 ("X-Forwarded-For", CLIENT)]) == 401
    assert metrics(port, PROXY, [("X-Forwarded-For", CLIENT),
                                 ("X-Forwarded-For", SCRAPER)]) == 200


# -- what the documentation warns against -----------------------------------------------------

def test_a_proxy_that_passes_the_clients_header_through_lets_it_claim_any_address(
        proxy_port, recorded_address):
    """nginx without a ``proxy_set_header X-Forwarded-For`` line: what docs/security.md says
    never to run."""
    port = proxy_port("pass_through")
    assert metrics(port, CLIENT, [("X-Forwarded-For", "10.0.0.5")]) == 200
    assert recorded_address(port, CLIENT, [("X-Forwarded-For", "203.0.113.7")]) \
        == "203.0.113.7"


def test_a_proxy_that_forwards_no_address_makes_every_client_the_proxy(
        proxy_port, recorded_address):
    port = proxy_port("none")
    assert recorded_address(port, CLIENT) == PROXY
    assert recorded_address(port, CLIENT, [("X-Forwarded-For", "203.0.113.7")]) == PROXY
    assert metrics(port, CLIENT) == 401
    assert metrics(port, SCRAPER) == 401  # even the scraper: it too comes as the proxy


def test_the_documented_example_scraper_list_lets_nobody_in_through_a_proxy_forwarding_nothing(
        proxy_port):
    """A scraper list holding the proxy's own address (the documented example used to be
    ``127.0.0.1 10.0.0.0/8``) would let every client in through such a proxy."""
    example = documented_example_scrapers()
    for form in ("none", *SAFE_FORMS):
        assert metrics(proxy_port(form, example), CLIENT) == 401, form
