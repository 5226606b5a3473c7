"""The hostile input corpus: every case of ``tests/data/hostile_inputs.json``, sent to the
real app (WebTest) with real signed-in sessions, checked against its documented answer and
against invariants that hold for every case:

- never a 5xx, never a traceback;
- no ``Location`` or ``HX-Redirect`` off this site (a path starting with one ``/`` that is
  not followed by ``/`` or ``\\``, or ``http://localhost/...``), and no ``came_from`` inside
  one that would send the next hop off-site; the JSON ``login_url`` likewise;
- nobody authenticated without a genuine login: a case whose cookies are not a valid login
  gets no ``Session-Expires-In``, no 2xx from a protected route, no session or ticket
  cookie, no session's data in its body, and leaves every session open and its data as it
  was; a case that is authenticated reads and writes its own session's data, no other's.

The file's ``_about`` explains the case format and the placeholders. Cases run on the
memory store; those marked ``"stores": "all"`` (cookies, tickets, the client's headers at
sign-in) on the SQL store on SQLite and on PostgreSQL, and on the Redis store, too.
Signed-in sessions are kept in a pool per store and reused by later cases as long as they
are untouched (each case checks that); a case that ends or changes one gets a fresh one.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest
from beaker.session import SignedCookie
from pyramid.paster import get_appsettings
from sqlalchemy import create_engine, text
from webtest import TestApp, TestRequest

from session_expiry.clock import FrozenClock
from session_expiry.decision import ticket_binding
from session_expiry.inputs import read_session_key
from session_expiry.ticket import build_ticket, derive_secret
from session_expiry_demo import make_app
from tests.conftest import (
    FETCH,
    HTMX,
    JSON,
    PAGE,
    ROOT,
    SECRET,
    STORE_TYPES,
    clear_redis,
    clear_sessions,
    csrf_token,
    login,
    migrate,
    seed_users,
    session_key_of,
)

CORPUS = json.loads((ROOT / "tests" / "data" / "hostile_inputs.json").read_text("utf-8"))
STORES = ("memory", "sqlite", "postgresql", "redis")
CLIENTS = {"page": PAGE, "fetch": FETCH, "htmx": HTMX, "json": JSON, "none": {}}
#: The roles a case's placeholders can name: a signed-in session of this user each.
USERS = {"A": "alice", "A2": "alice", "B": "bob", "ADMIN": "admin"}
#: Routes anybody may load: everything else answers 2xx only to a signed-in session.
PUBLIC = ("/login", "/session-expired", "/session/status", "/session-expiry-static/", "/metrics")
OTHER_SECRET = "another-deployment-secret-0123456789-0123456789"
HOST = "http://localhost"
PLACEHOLDER = re.compile(r"\{(repeat:\d+:[^}]*|[A-Za-z0-9_]+)\}")
#: The metrics scraper network of the corpus's apps (TEST-NET-2).
SCRAPERS = "198.51.100.0/24"


def corpus_params():
    for case in CORPUS["cases"]:
        stores = STORES if case.get("stores") == "all" else ("memory",)
        for store in stores:
            yield pytest.param(store, case, id=f"{store}-{case['name']}")


# -- the apps: one per store for the module, with its own database --------------------------

@dataclass
class Role:
    """A signed-in session: its cookies as a browser holds them, and what it stores."""

    name: str
    client: TestApp
    session: str
    ticket: str
    key: str
    userid: str
    marker: str
    snapshot: dict


class World:
    """One app on one store, its frozen clock, and a pool of signed-in sessions."""

    def __init__(self, store_kind: str, database_url: str, session_url: str | None = None):
        """``database_url``: the users (and the SQL store's sessions); ``session_url``: the
        Redis store's server."""
        if store_kind == "redis":
            clear_redis(session_url)  # the SQLite database's sessions are another world's
        else:
            clear_sessions(database_url)
        self.clock = FrozenClock(1_800_000_000)
        settings = dict(get_appsettings(str(ROOT / "testing.ini")))
        if session_url is not None:
            settings["session.url"] = session_url
        settings.update({
            "session.type": STORE_TYPES[store_kind],
            "sqlalchemy.url": database_url,
            "session_expiry.secret": SECRET,
            "session_expiry.clock": self.clock,
            "session_expiry.idle_timeout": "20m",
            "session_expiry.absolute_timeout": "8h",
            "session_expiry.warn_before": "2m",
            "session_expiry.metrics_scrapers": SCRAPERS,
        })
        self.wsgi = make_app({}, **settings)
        self.setup = self.wsgi.registry.session_expiry
        self.store = self.setup.store
        engine = create_engine(database_url)
        with engine.connect() as conn:
            self.user_ids = {name: str(id_) for id_, name in
                             conn.execute(text("SELECT id, username FROM users"))}
        engine.dispose()
        self.pool: dict[str, Role] = {}

    def close(self):
        self.store.close()
        self.wsgi.registry["dbsession_factory"].kw["bind"].dispose()

    def data_of(self, key: str) -> dict | None:
        data = self.store.load_data(key)
        return None if data is None else dict(data.values())

    def is_untouched(self, role: Role) -> bool:
        record = self.store.get(role.key)
        return record is not None and record.is_open and self.data_of(role.key) == role.snapshot

    def forget_changed(self) -> None:
        """Drop the pooled sessions a case ended or changed: later cases get fresh ones."""
        for name, role in list(self.pool.items()):
            if not self.is_untouched(role):
                del self.pool[name]

    def role(self, name: str) -> Role:
        """A signed-in session for ``name`` (reused while nobody changed it)."""
        role = self.pool.get(name)
        if role is None or not self.is_untouched(role):
            role = self.pool[name] = self.sign_in(name)
        return role

    def sign_in(self, name: str) -> Role:
        client = TestApp(self.wsgi)
        login(client, USERS[name])
        marker = f"marker-{name}-{secrets.token_hex(6)}"
        client.post("/workspace", {"title": marker, "csrf_token": csrf_token(client)},
                    headers=PAGE, status=303)
        key = session_key_of(client)
        snapshot = self.data_of(key)
        assert snapshot["workspace_title"] == marker
        return Role(name, client, client.cookies["session"].strip('"'),
                    client.cookies["auth_tkt"].strip('"'), key, self.store.get(key).user_id,
                    marker, snapshot)


class Worlds:
    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.built: dict[str, World] = {}
        self.sqlite_url = None

    def get(self, store_kind: str, request) -> World:
        if store_kind not in self.built:
            session_url = (request.getfixturevalue("redis_server").url
                           if store_kind == "redis" else None)
            self.built[store_kind] = World(store_kind, self.database_url(store_kind, request),
                                           session_url)
        return self.built[store_kind]

    def database_url(self, store_kind: str, request) -> str:
        if store_kind == "postgresql":
            url = request.getfixturevalue("postgres").create_database("hostile_corpus")
            migrate(url)
            seed_users(url)
            return url
        if self.sqlite_url is None:
            path = self.tmp_path_factory.mktemp("hostile") / "app.sqlite"
            self.sqlite_url = f"sqlite:///{path}"
            migrate(self.sqlite_url)
            seed_users(self.sqlite_url)
        return self.sqlite_url

    def close(self):
        for world in self.built.values():
            world.close()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    built = Worlds(tmp_path_factory)
    yield built
    built.close()


# -- placeholders -----------------------------------------------------------------------------

class Values:
    """The placeholders of one case, computed on first use from the world's sessions."""

    def __init__(self, world: World):
        self.world = world
        self.csrf = secrets.token_hex(16)
        self.roles: dict[str, Role] = {}

    def role(self, name: str) -> Role:
        if name not in self.roles:
            self.roles[name] = self.world.role(name)
        return self.roles[name]

    def fill(self, value):
        if isinstance(value, str):
            return PLACEHOLDER.sub(lambda match: self.lookup(match.group(1)), value)
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(item) for item in value]
        return value

    def lookup(self, name: str) -> str:  # noqa: PLR0911, PLR0912 (one row per placeholder)
        setup = self.world.setup
        if name.startswith("repeat:"):
            _, count, piece = name.split(":", 2)
            return piece * int(count)
        if name == "csrf":
            return self.csrf
        if name == "csrf_upper_case":
            return self.csrf.upper()
        kind, _, who = name.rpartition("_")
        if who in USERS and kind in ("session", "ticket", "key", "marker"):
            return getattr(self.role(who), kind)
        if name.startswith("userid_") and name[7:] in USERS:
            return self.world.user_ids[USERS[name[7:]]]
        a = self.role("A")
        now = int(self.world.clock())
        digest, stamp, rest = a.ticket[:128], a.ticket[128:136], a.ticket[136:]
        if name == "session_A_tampered":
            return a.session[:-1] + ("0" if a.session[-1] != "0" else "1")
        if name == "session_A_truncated":
            return a.session[:-8]
        if name == "session_A_unsigned":
            return a.session[40:]
        if name == "session_A_signature_only":
            return a.session[:40]
        if name == "session_A_other_secret":
            other = SignedCookie(derive_secret(OTHER_SECRET, "session-cookie"))
            return other.value_encode(a.session[40:])[1]
        if name == "ticket_A_tampered":
            return ("0" if digest[0] != "0" else "1") + a.ticket[1:]
        if name == "ticket_A_truncated":
            return a.ticket[:len(a.ticket) // 2]
        if name == "ticket_A_userid_swapped":
            return digest + stamp + self.world.user_ids["admin"] + "!" + rest.partition("!")[2]
        if name == "ticket_other_secret":
            return build_ticket(derive_secret(OTHER_SECRET, "auth-ticket"), a.userid,
                                ticket_binding(a.key), now)
        if name == "expired_ticket_A":
            return build_ticket(setup.ticket_secret, a.userid, ticket_binding(a.key),
                                now - setup.policy.idle_timeout - 1)
        if name == "ticket_admin_user_bound_to_A":
            return build_ticket(setup.ticket_secret, self.world.user_ids["admin"],
                                ticket_binding(a.key), now)
        if name == "ticket_A_bound_to_unknown_session":
            return build_ticket(setup.ticket_secret, a.userid, "s" + "0" * 32, now)
        raise KeyError(f"unknown placeholder {{{name}}}")


# -- sending a case -------------------------------------------------------------------------

def build_request(spec: dict, values: Values) -> TestRequest:
    path = values.fill(spec["path"])
    if "query" in spec:
        query = urlencode(values.fill(spec["query"]), quote_via=quote, safe="")
        path += ("&" if "?" in path else "?") + query
    headers = dict(CLIENTS[spec.get("client", "page")])
    headers.update(values.fill(spec.get("headers", {})))
    body = None
    if "form" in spec:
        body = urlencode(values.fill(spec["form"]), quote_via=quote, safe="").encode("ascii")
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif "json" in spec:
        body = values.fill(json.dumps(spec["json"])).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    elif "body" in spec:
        body = values.fill(spec["body"]).encode("utf-8")
    elif "body_latin1" in spec:  # one character per byte: "\u00ff" is the byte 0xFF
        body = values.fill(spec["body_latin1"]).encode("latin-1")
    environ = values.fill(spec.get("environ", {}))
    request = TestRequest.blank(path, environ=environ, method=spec.get("method", "GET"),
                                headers=headers)
    if body is not None:
        request.body = body
    return request


def run_before(world: World, steps: list[str], values: Values) -> set[str]:
    """The case's preparation; the roles it ends."""
    ended = set()
    for step in steps:
        action, _, argument = step.partition(":")
        if action == "logout":
            role = values.role(argument)
            role.client.post("/logout", {"csrf_token": csrf_token(role.client)}, headers=PAGE,
                             status=303)
            world.pool.pop(argument, None)
            ended.add(argument)
        elif action == "advance":
            world.clock.advance(int(argument))
        else:
            raise ValueError(f"unknown step {step!r}")
    return ended


# -- the checks -------------------------------------------------------------------------------

def _strip_browser_ignored(url: str) -> str:
    """What a browser reads: ASCII tab and newlines removed, C0 and spaces trimmed."""
    return re.sub(r"[\t\n\r]", "", url).strip("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c"
                                              "\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18"
                                              "\x19\x1a\x1b\x1c\x1d\x1e\x1f ")


def is_local_path(path: str) -> bool:
    """A path on this site, however often a later hop unquotes it."""
    for _ in range(4):
        path = _strip_browser_ignored(path)
        if not path.startswith("/") or path[1:2] in ("/", "\\"):
            return False
        parts = urlsplit(path)
        if parts.scheme or parts.netloc:
            return False
        decoded = unquote(path)
        if decoded == path:
            return True
        path = decoded
    return False


def offsite(url: str) -> str | None:
    """Why ``url`` (a Location, an HX-Redirect, a login_url) leaves this site, or None.

    On-site is a path starting with one ``/`` not followed by ``/`` or ``\\``, or an
    absolute URL to http://localhost; a ``came_from`` in its query must be a local path too
    (the next hop redirects to it).
    """
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return f"control character in {url!r}"
    seen = _strip_browser_ignored(url)
    parts = urlsplit(seen)
    if parts.scheme or parts.netloc:
        if parts.scheme != "http" or parts.netloc != "localhost":
            return f"an absolute URL to another site: {url[:200]!r}"
    elif not seen.startswith("/") or seen[1:2] in ("/", "\\"):
        return f"not a local path: {url[:200]!r}"
    for name in ("came_from", "next", "return_to"):
        for value in parse_qs(parts.query).get(name, []):
            if not is_local_path(value):
                return f"{name} leaves the site: {url[:200]!r}"
    return None


def local_part(url: str) -> str:
    return url[len(HOST):] if url.startswith(HOST + "/") else url


def is_public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)


def cookies_set(response) -> dict[str, str]:
    """The cookies the response sets to a non-empty value (deletions are left out)."""
    found = {}
    for header in response.headers.getall("Set-Cookie"):
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0].strip('"')
        if value and "max-age=0" not in header.lower():
            found[name.strip()] = value
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def check_invariants(world: World, case: dict, request, response, values: Values,
                     ended_before: set[str]) -> str | None:
    """Every case's promises; returns who the request was authenticated as (role, "new:<role>"
    or None)."""
    expect = case["expect"]
    name = case["name"]
    body = response.body.decode("utf-8", "replace")
    assert response.status_int < 500, f"{name}: {response.status} {body[:500]}"
    assert "Traceback" not in body, f"{name}: a traceback in the answer"
    for header in ("Location", "HX-Redirect"):
        for url in response.headers.getall(header):
            reason = offsite(url)
            assert reason is None, f"{name}: {header} {reason}"
    if response.content_type == "application/json" and body.startswith("{"):
        login_url = response.json.get("login_url")
        if login_url is not None:
            assert offsite(login_url) is None, f"{name}: login_url {offsite(login_url)}"

    authenticated = "Session-Expires-In" in response.headers
    set_cookies = cookies_set(response)
    allowed = as_list(expect.get("auth"))
    roles = values.roles
    markers = {role.marker: role.name for role in world.pool.values()}
    markers.update({role.marker: role.name for role in roles.values()})
    shown = {who for marker, who in markers.items() if marker in body}

    if not authenticated:
        assert None in allowed, f"{name}: not authenticated, expected {allowed}"
        who = None
        assert not shown, f"{name}: unauthenticated answer shows the data of {shown}"
        assert "session" not in set_cookies and "auth_tkt" not in set_cookies, \
            f"{name}: unauthenticated answer sets {sorted(set_cookies)}"
        if not is_public(request.path_info):
            assert not 200 <= response.status_int < 300, \
                f"{name}: {response.status} from a protected route without a valid login"
        if request.path_info == "/session/status" and response.status_int == 200:
            assert response.json["state"] != "active" and response.json["user"] is None
    else:
        seconds = int(response.headers["Session-Expires-In"])
        assert 0 < seconds <= world.setup.policy.idle_timeout, f"{name}: {seconds}"
        who = identify(world, case, response, values, set_cookies)
        assert who in allowed, \
            f"{name}: authenticated as {who!r}, expected {allowed} (no genuine login)"
        own = {who} if who in roles else set()
        assert shown <= own, f"{name}: the answer shows the data of {shown - own}"
        if (request.method == "GET" and request.path_info == "/workspace"
                and response.status_int == 200 and who in roles):
            assert roles[who].marker in body, \
                f"{name}: signed in as {who} but the page does not show {who}'s own data"

    check_sessions(world, case, who, ended_before)
    return who


def identify(world: World, case: dict, response, values: Values, set_cookies) -> str:
    """Who an authenticated answer was for: a role of the case, or a new session."""
    status_user = None
    if response.request.path_info == "/session/status" and response.status_int == 200:
        status_user = response.json["user"]
    if "session" in set_cookies:  # a new session (sign-in)
        key = read_session_key(world.setup.cookie_secret, set_cookies["session"])
        record = world.store.get(key) if key else None
        assert record is not None and record.is_open, f"{case['name']}: new session not open"
        user = next(n for n, i in world.user_ids.items() if i == record.user_id)
        role = next(r for r, u in USERS.items() if u == user)
        check_new_session(case, record)
        return f"new:{role}"
    # An existing session: the one whose ticket the answer (re)issued, or the one whose
    # ticket came in (one role per request when it is genuine).
    ticket = set_cookies.get("auth_tkt")
    candidates = [role for role in values.roles.values()
                  if ticket is None or ticket_binding(role.key) in ticket]
    if ticket is None:
        sent = response.request.headers.get("Cookie", "")
        candidates = [role for role in candidates if role.ticket in sent]
    names = {role.name for role in candidates if world.store.get(role.key)}
    assert len(names) == 1, f"{case['name']}: authenticated, but as which session? {names}"
    who = names.pop()
    if status_user is not None:
        assert status_user == values.roles[who].userid
    return who


def check_new_session(case: dict, record) -> None:
    expect = case["expect"].get("new_session", {})
    if "ip" in expect:
        assert record.ip == expect["ip"], f"{case['name']}: recorded ip {record.ip!r}"
    if "ip_not" in expect:
        assert record.ip != expect["ip_not"], f"{case['name']}: recorded ip {record.ip!r}"
    if "user_agent_max" in expect:
        assert len(record.user_agent or "") <= expect["user_agent_max"]


def check_sessions(world: World, case: dict, who: str | None, ended_before: set[str]) -> None:
    """Every session in play stays open and unchanged unless the case says otherwise."""
    expect = case["expect"]
    ended = set(expect.get("ended", []))
    changed = set(expect.get("changed", []))
    if expect.get("writes") and who in USERS:
        changed.add(who)
    in_play = {role.name: role for role in world.pool.values()}
    for name, role in in_play.items():
        if name in ended_before:
            continue
        record = world.store.get(role.key)
        if name in ended:
            assert record is not None and not record.is_open, \
                f"{case['name']}: session {name} should have ended"
            continue
        assert record is not None and record.is_open, \
            f"{case['name']}: session {name} was ended ({record and record.end_reason})"
        data = world.data_of(role.key)
        if name not in changed:
            assert data == role.snapshot, \
                f"{case['name']}: session {name}'s data changed: {role.snapshot} -> {data}"
    writes = expect.get("writes")
    if writes and who in in_play:
        data = world.data_of(in_play[who].key)
        for key, value in writes.items():
            if isinstance(value, dict):  # {"length": n}
                assert len(data.get(key, "")) == value["length"], f"{case['name']}: {key}"
            else:
                assert data.get(key) == value, f"{case['name']}: {key} = {data.get(key)!r}"


def check_expected(case: dict, response, values: Values) -> None:
    expect = values.fill(case["expect"])
    name = case["name"]
    status = as_list(expect["status"])
    assert response.status_int in status, \
        f"{name}: {response.status}, expected {status}; {response.body[:300]!r}"
    location = response.headers.get("Location")
    if "location" in expect:
        assert location is not None, f"{name}: no Location"
        assert local_part(location) in as_list(expect["location"]), f"{name}: {location}"
    if "location_path" in expect:
        assert location is not None, f"{name}: no Location"
        assert urlsplit(local_part(location)).path == expect["location_path"], \
            f"{name}: {location}"
    if "reason" in expect:
        if location is not None:
            reason = parse_qs(urlsplit(location).query).get("reason", [None])[0]
        else:
            reason = response.json.get("reason")
        assert reason == expect["reason"], f"{name}: reason {reason!r}"
    if "json" in expect:
        for key, value in expect["json"].items():
            assert response.json.get(key) == value, f"{name}: {key} {response.json!r}"
    if "sets_ticket" in expect:
        assert ("auth_tkt" in cookies_set(response)) == expect["sets_ticket"], name
    if "hidden_came_from" in expect:
        found = re.search(r'name="came_from" value="([^"]*)"', response.text)
        assert found and found.group(1) == expect["hidden_came_from"], \
            f"{name}: {found and found.group(1)!r}"
    if "sign_in_link" in expect:
        found = re.search(r'class="button" href="([^"]*)"', response.text)
        href = found.group(1).replace("&amp;", "&") if found else None
        assert href == expect["sign_in_link"], f"{name}: {href!r}"


@pytest.mark.parametrize(("store_kind", "case"), list(corpus_params()))
@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")  # WebTest's lint; sent on purpose
def test_hostile_input(worlds, request, store_kind, case):
    world = worlds.get(store_kind, request)
    advances = any(step.startswith("advance:") for step in case.get("before", []))
    if advances:  # older sessions would pass their deadline: only this case's own are in play
        world.pool.clear()
    values = Values(world)
    for name in case.get("sessions", []):
        values.role(name)
    values.fill(case["request"])  # signs in every role the case names, before any step
    ended_before = run_before(world, case.get("before", []), values)
    request_ = build_request(case["request"], values)
    response = TestApp(world.wsgi).do_request(request_, status="*", expect_errors=True)
    try:
        check_invariants(world, case, request_, response, values, ended_before)
        check_expected(case, response, values)
    finally:
        if advances:
            world.pool.clear()
        world.forget_changed()


def test_the_corpus_is_large_and_well_formed():
    cases = CORPUS["cases"]
    names = [case["name"] for case in cases]
    assert len(cases) >= 200
    assert len(names) == len(set(names)), "case names are test ids: they must be unique"
    known = {"name", "category", "why", "stores", "sessions", "before", "request", "expect"}
    for case in cases:
        assert set(case) <= known, case["name"]
        assert re.fullmatch(r"[A-Za-z0-9_]+", case["name"]), case["name"]
        assert case["why"] and case["category"] and "status" in case["expect"], case["name"]
