"""The session report, revoke, "your sessions", /metrics and the 404 page, through the app,
on every store (memory, SQL on SQLite, SQL on PostgreSQL, Redis)."""
from __future__ import annotations

import csv
import io
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from beaker.session import SignedCookie
from bs4 import Tag
from webtest import TestApp

from session_expiry.decision import ticket_binding
from session_expiry.reports.directory import IUserDirectory
from session_expiry.reports.views import EXPORT_BATCH
from session_expiry.stores import session_key
from session_expiry.stores.beaker import new_session_id
from session_expiry.stores.readmodel import PAGE_SIZE
from session_expiry.stores.redis.layout import Layout
from session_expiry.ticket import build_ticket
from tests.conftest import (
    FETCH,
    JSON,
    PAGE,
    csrf_token,
    login,
    query,
    reason_in,
    session_key_of,
    store_of,
)

IDLE = 1200
REPORT = "/admin/sessions"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"
FORMULA = "=cmd|' /C calc'!A0"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(autouse=True)
def no_refusals_counted_before(store_kind, app_database_url, request):
    """``clear_sessions`` leaves the refused-request counts of earlier tests: drop them (on
    Redis, ``clear_redis`` dropped them with everything else: make sure of it)."""
    if store_kind == "redis":
        with request.getfixturevalue("redis_server").client() as client:
            client.delete(Layout().refusals)
    elif store_kind != "memory":
        engine = sa.create_engine(app_database_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM session_refusals"))
        engine.dispose()


# -- helpers ----------------------------------------------------------------------------------

def browser(app: TestApp, user_agent: str | None = None, **environ) -> TestApp:
    """Another browser on the same server."""
    if user_agent is not None:
        environ["HTTP_USER_AGENT"] = user_agent
    return TestApp(app.app, extra_environ=environ)


def signed_in(app: TestApp, username: str, user_agent: str | None = None,
              real: bool = False) -> TestApp:
    """Another browser, signed in as ``username``: through the login form when ``real``
    (the test is about that browser), else by :func:`enter`."""
    if not real:
        return enter(app, username, user_agent)
    other = browser(app, user_agent)
    login(other, username)
    return other


def enter(app: TestApp, username: str, user_agent: str | None = None,
          into: TestApp | None = None) -> TestApp:
    """A browser signed in as ``username`` as the login form leaves one (an open session in
    the store, its signed session cookie, a ticket bound to it, a CSRF cookie), without the
    form's argon2 password check, which costs 0.15 s a time. Bystanders and the admin enter
    this way; the sessions a test is about sign in through the form."""
    target = into or browser(app, user_agent)
    csrf_token(target)
    directory = app.app.registry.getUtility(IUserDirectory)
    userid = directory.find(None, username)
    assert userid is not None, username
    session_id = new_session_id()
    store_of(app).open(session_key(session_id), userid, now_of(app), ip="127.0.0.1",
                       user_agent=user_agent)
    give_cookies(app, target, session_id, userid)
    return target


def give_cookies(app: TestApp, target: TestApp, session_id: str, userid: str) -> None:
    """The session cookie of ``session_id`` and a fresh ticket bound to it."""
    setup = app.app.registry.session_expiry
    target.set_cookie(setup.session_cookie,
                      SignedCookie(setup.cookie_secret).value_encode(session_id)[1])
    target.set_cookie("auth_tkt", build_ticket(setup.ticket_secret, userid,
                                               ticket_binding(session_key(session_id)),
                                               now_of(app)))


def user_id(app_database_url: str, name: str) -> str:
    engine = sa.create_engine(app_database_url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT id FROM users WHERE username = :name"),
                             {"name": name}).scalar_one()
    engine.dispose()
    return str(found)


def now_of(app: TestApp) -> int:
    return int(app.app.registry.session_expiry.clock())


def new_key() -> str:
    return session_key(new_session_id())


def record(app: TestApp, key: str):
    return store_of(app).get(key)


def report(admin: TestApp, path: str = REPORT, **params):
    return admin.get(path, params=params, headers=PAGE)


def active_keys(page) -> list[str]:
    return [row["data-session"] for row in page.html.select("#active-sessions tbody tr")]


def end_rows(page) -> list[tuple[str, str]]:
    return [(row["data-session"], row.select_one("td[data-reason]")["data-reason"])
            for row in page.html.select("#recent-ends tbody tr")]


def figures(page) -> dict[str, str]:
    return {item.dt.get_text(strip=True): item.dd.get_text(strip=True)
            for item in page.html.select("dl.figures > div")}


def counts(page, attribute: str) -> dict[str, int]:
    return {cell[attribute]: int(cell.get_text(strip=True))
            for cell in page.html.select(f"table.counts td[{attribute}]")}


def next_link(page, section: str = "active") -> str | None:
    link = page.html.select_one(f'#{section} nav a[rel~="next"]')
    return None if link is None else link["href"]


def flashes(page) -> list[str]:
    return [item.get_text(strip=True) for item in page.html.select("p.flash")]


def follow(response, app: TestApp):
    assert response.status_int == 303, response.text
    return app.get(response.location, headers=PAGE)


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.text)))


def form_fields(page, action: str) -> dict[str, str]:
    soup = page if isinstance(page, Tag) else page.html
    form = soup.find("form", action=action)
    assert form is not None, f"no form posting to {action}"
    return {field["name"]: field.get("value", "") for field in form.find_all("input")
            if field.get("type") == "hidden"}


def metrics_value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in /metrics"
    return float(match.group(1))


def events_of(ended_events, key: str) -> list[str]:
    return [line for line in ended_events if f"session={key[:12]}" in line]


def lost_session_browser(app: TestApp, userid: str) -> TestApp:
    """A browser whose ticket is bound to a well-signed session cookie the store never knew."""
    lost = browser(app)
    give_cookies(app, lost, new_session_id(), userid)
    return lost


@pytest.fixture
def quiet_app(apps) -> TestApp:
    """The app whose sweep thread never comes round: nothing ends unless a test ends it."""
    return apps(session_expiry__sweep_interval="1d")


@pytest.fixture
def admin(app) -> TestApp:
    return enter(app, "admin", into=app)


# == permissions ==================================================================================

ADMIN_PAGES = [REPORT, f"{REPORT}/active.csv", f"{REPORT}/ended.csv",
               f"{REPORT}/revoke?user=1", "/metrics"]


def test_anonymous_page_load_goes_to_the_login_page(app):
    for path in [*ADMIN_PAGES[:-1], "/account/sessions"]:
        response = app.get(path, headers=PAGE, status=303)
        assert urlsplit(response.location).path == "/login", path
        assert query(response.location)["came_from"] == path


def test_anonymous_fetch_gets_a_401_json(app):
    for path in [*ADMIN_PAGES, "/account/sessions"]:
        response = app.get(path, headers=FETCH, status=401)
        assert response.content_type == "application/json", path
        assert response.json["error"] == "not_authenticated", path


def test_a_user_who_is_not_an_admin_is_forbidden_the_admin_pages(app):
    login(app, "alice")
    for path in ADMIN_PAGES:
        response = app.get(path, headers=PAGE, status=403)
        assert "permission" in response.text, path
        assert app.get(path, headers=FETCH, status=403).json == {"error": "forbidden"}, path


def test_a_user_who_is_not_an_admin_cannot_revoke(app, app_database_url):
    bob = signed_in(app, "bob")
    login(app, "alice")
    for params in ({"session": session_key_of(bob)}, {"user": user_id(app_database_url, "bob")}):
        app.post(f"{REPORT}/revoke", {**params, "csrf_token": csrf_token(app)}, headers=PAGE,
                 status=403)
    assert record(app, session_key_of(bob)).is_open


def test_an_admin_reads_every_report_page(admin):
    revoke = f"{REPORT}/revoke?session={session_key_of(admin)}"
    for path in [*ADMIN_PAGES[:3], revoke, "/metrics", "/account/sessions"]:
        response = admin.get(path, headers=PAGE)
        assert response.status_int == 200, path
        assert response.headers["Cache-Control"] in ("private, no-store", "no-store"), path


def test_the_report_link_shows_for_admins_only(app):
    alice = signed_in(app, "alice", real=True)
    login(app, "admin")
    assert app.get("/", headers=PAGE).html.find("a", href=REPORT) is not None
    assert alice.get("/", headers=PAGE).html.find("a", href=REPORT) is None
    assert alice.get("/", headers=PAGE).html.find("a", href="/account/sessions") is not None


# == the summary ===================================================================================

def test_summary_counts_active_started_ended_lengths_and_the_sweeper_lag(quiet_app, clock):
    app = quiet_app
    store, start = store_of(app), int(clock())
    lengths = {"logged_out": 60, "revoked": 120, "idle_timeout": 300, "ended_by_user": 900,
               "absolute_timeout": 2400}
    for reason, length in lengths.items():
        key = new_key()
        store.open(key, "9999", start - 3000)
        for touched in range(1000, length, 1000):  # never idle past its deadline
            store.touch(key, start - 3000 + touched)
        store.end(key, reason, start - 3000 + length)
    alice = signed_in(app, "alice", real=True)
    clock.advance(90)
    alice.post("/logout", {"csrf_token": csrf_token(alice)}, headers=PAGE, status=303)
    signed_in(app, "bob")
    store.open(new_key(), "9999", int(clock()) - IDLE - 100)  # overdue, not swept: 100 s late
    enter(app, "admin", into=app)

    page = report(app)

    assert figures(page) == {
        "Active now": "2",  # bob, admin
        "Started, 24 h": "9",  # 5 ended, the overdue one, alice, bob, admin
        "Ended, 24 h": "6",
        "Median length": "2 min",  # 60 90 [120] 300 900 2400
        "90th percentile length": "40 min",
        "Sweeper lag": "1 min",
    }
    assert counts(page, "data-reason") == {"idle_timeout": 1, "absolute_timeout": 1,
                                           "logged_out": 2, "revoked": 1, "ended_by_user": 1,
                                           "reauth_failed": 0}
    histogram = page.html.select("figure.chart")[1].select("details tbody td")
    assert [int(cell.get_text()) for cell in histogram] == [0, 3, 2, 1, 0, 0, 0, 0]
    hours = page.html.select("figure.chart")[0].select("details tbody tr")
    assert len(hours) == 24
    last_hour = [int(cell.get_text()) for cell in hours[-1].select("td")]
    assert last_hour == [1, 1, 2, 1, 1, 0]  # all six ended in the last hour, by reason


def test_summary_counts_refused_requests_by_reason(app, app_database_url):
    alice = signed_in(app, "alice")
    bob = signed_in(app, "bob")
    # a forged ticket beside a live session
    forged = browser(app)
    forged.set_cookie("session", alice.cookies["session"].strip('"'))
    forged.set_cookie("auth_tkt", "forged-ticket")
    assert forged.get("/api/notes", headers=JSON, status=401).json["reason"] == "ticket_mismatch"
    # alice's ticket with bob's session cookie
    mixed = browser(app)
    mixed.set_cookie("session", bob.cookies["session"].strip('"'))
    mixed.set_cookie("auth_tkt", alice.cookies["auth_tkt"].strip('"'))
    assert mixed.get("/api/notes", headers=JSON, status=401).json["reason"] == "ticket_mismatch"
    # a good ticket for a session the store does not know
    lost = lost_session_browser(app, user_id(app_database_url, "alice"))
    assert lost.get("/api/notes", headers=JSON, status=401).json["reason"] == "session_lost"
    enter(app, "admin", into=app)

    page = report(app)

    assert counts(page, "data-refusal") == {"ticket_mismatch": 2, "ticket_expired": 0,
                                            "session_lost": 1}
    assert record(app, session_key_of(alice)).is_open  # a forged ticket ends nothing
    assert record(app, session_key_of(bob)).is_open
    assert figures(page)["Active now"] == "3"


# == filters and sorting ===========================================================================

def test_user_filter_lists_only_that_users_sessions_and_ends(app):
    alice1, alice2 = signed_in(app, "alice"), signed_in(app, "alice")
    bob = signed_in(app, "bob")
    gone = signed_in(app, "bob")
    gone.post("/logout", {"csrf_token": csrf_token(gone)}, headers=PAGE)
    alice2.post("/logout", {"csrf_token": csrf_token(alice2)}, headers=PAGE)
    enter(app, "admin", into=app)

    page = report(app, user="alice")

    assert active_keys(page) == [session_key_of(alice1)]
    assert end_rows(page) == [(session_key_of(alice2), "logged_out")]
    assert page.html.find("input", id="filter-user")["value"] == "alice"
    csv_link = page.html.select_one("#active p.actions a")["href"]
    assert urlsplit(csv_link).path == f"{REPORT}/active.csv"
    assert query(csv_link) == {"user": "alice"}
    bobs = report(app, user="bob")
    assert active_keys(bobs) == [session_key_of(bob)]
    assert end_rows(bobs) == [(session_key_of(gone), "logged_out")]
    everyone = report(app)
    assert set(active_keys(everyone)) == {session_key_of(alice1), session_key_of(bob),
                                          session_key_of(app)}


def test_user_filter_links_to_revoke_every_session_of_that_user(app, app_database_url):
    signed_in(app, "alice")
    enter(app, "admin", into=app)
    link = report(app, user="alice").html.find("a", href=re.compile("revoke"), string=re.compile(
        "every session"))
    assert query(link["href"]) == {"user": user_id(app_database_url, "alice")}


def test_user_filter_with_nobody_of_that_name_says_so_and_lists_nothing(app):
    signed_in(app, "alice")
    enter(app, "admin", into=app)
    page = report(app, user="zed")
    assert "Nobody is called “zed”." in page.text
    assert active_keys(page) == []
    assert end_rows(page) == []
    assert "No active sessions" not in page.text


def test_the_report_shows_a_recorded_address_as_text_never_as_markup(app, clock):
    markup = "<b>x</b>"
    store_of(app).open(new_key(), "9999", int(clock()), ip=markup)
    enter(app, "admin", into=app)
    page = report(app)
    assert markup not in page.text
    assert page.html.find("td", string=markup) is not None


def test_user_filter_keeps_the_page_safe_from_markup_in_the_name(app):
    enter(app, "admin", into=app)
    page = report(app, user="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in page.text
    assert "Nobody is called" in page.text


def test_reason_filter_lists_only_ends_of_that_reason(quiet_app, clock):
    app = quiet_app
    store, now = store_of(app), int(clock())
    ended = []
    for index, reason in enumerate(["revoked", "logged_out", "revoked", "idle_timeout"]):
        key = new_key()
        store.open(key, "9999", now - 1000)
        store.end(key, reason, now - 500 + index)
        ended.append((key, reason))
    enter(app, "admin", into=app)

    revoked = report(app, reason="revoked")

    assert end_rows(revoked) == [ended[2], ended[0]]  # newest first
    assert revoked.html.select_one("#filter-reason option[selected]")["value"] == "revoked"
    assert len(end_rows(report(app))) == 4
    assert len(end_rows(report(app, reason="not-a-reason"))) == 4  # unknown: no filter
    none = report(app, reason="ended_by_user")
    assert end_rows(none) == []
    assert "No sessions have ended for that reason." in none.text


def sorts_story(store, now: int) -> dict[str, str]:
    """Three sessions whose order differs by each sort."""
    keys = {"s1": new_key(), "s2": new_key(), "s3": new_key()}
    store.open(keys["s1"], "9999", now - 400)
    store.touch(keys["s1"], now - 100)  # last seen -100, deadline +1100
    store.open(keys["s2"], "9999", now - 300)  # last seen -300, deadline +900
    store.open(keys["s3"], "9999", now - 200)
    store.touch(keys["s3"], now - 150)  # last seen -150, deadline +1050
    return keys


SORT_ORDERS = {
    "started": ["s3", "s2", "s1"],       # newest first
    "last_seen": ["s1", "s3", "s2"],     # most recently seen first
    "remaining": ["s2", "s3", "s1"],     # soonest to end first
    "nonsense": ["s1", "s3", "s2"],      # unknown: last seen
}


def test_each_sort_orders_the_active_sessions_its_way(app, clock):
    keys = sorts_story(store_of(app), int(clock()))
    enter(app, "admin", into=app)
    for sort, order in SORT_ORDERS.items():
        shown = [key for key in active_keys(report(app, sort=sort)) if key in keys.values()]
        assert shown == [keys[name] for name in order], sort
    assert [key for key in active_keys(report(app)) if key in keys.values()] == [
        keys[name] for name in SORT_ORDERS["last_seen"]]


def test_sorted_column_is_marked_for_assistive_technology(admin):
    page = report(admin, sort="remaining")
    marked = page.html.select("#active-sessions th[aria-sort]")
    for hidden in page.html.select('#active-sessions th [aria-hidden="true"]'):
        hidden.decompose()  # the arrow is for the eye only
    assert [(cell.get_text(strip=True), cell["aria-sort"]) for cell in marked] == [
        ("Time left", "ascending")]
    links = page.html.select("#active-sessions thead a")
    assert sorted(link.get_text() for link in links) == ["Last seen", "Started"]


# == keyset pages ==================================================================================

def open_sessions(store, count: int, now: int, user: str = "9999") -> list[str]:
    keys = [new_key() for _ in range(count)]
    for index, key in enumerate(keys):
        store.open(key, user, now - 10 - index % 7 * 13)  # many ties, by design
    return keys


def test_exactly_a_page_of_active_sessions_has_no_next_link(app, clock):
    open_sessions(store_of(app), PAGE_SIZE - 1, int(clock()))
    enter(app, "admin", into=app)  # the admin's own session is the fiftieth
    page = report(app)
    assert len(active_keys(page)) == PAGE_SIZE
    assert next_link(page) is None


def test_one_more_than_a_page_puts_the_last_one_on_the_next_page(app, clock):
    store = store_of(app)
    keys = open_sessions(store, PAGE_SIZE, int(clock()))
    clock.advance(1)
    enter(app, "admin", into=app)  # seen last: first in the default order
    first = report(app)
    assert len(active_keys(first)) == PAGE_SIZE
    assert active_keys(first)[0] == session_key_of(app)
    link = next_link(first)
    assert link is not None and "#active" in link
    second = app.get(link, headers=PAGE)
    last = min((store.get(key) for key in keys), key=lambda row: (row.last_seen, row.key))
    assert active_keys(second) == [last.key]
    assert next_link(second) is None
    assert second.html.select_one("#active nav").find("a", string="First page") is not None


def test_a_malformed_after_shows_the_first_page(app, clock):
    open_sessions(store_of(app), 60, int(clock()))
    enter(app, "admin", into=app)
    first = report(app)
    assert next_link(first) is not None
    for after in ["garbage", "123", f"12.{'Z' * 64}", f"-5.{'a' * 64}",
                  f"{'9' * 20}.{'a' * 64}"]:
        page = report(app, after=after, ends_after=after)
        assert active_keys(page) == active_keys(first), after
        assert next_link(page) == next_link(first), after


@pytest.mark.parametrize("sort", ["last_seen", "started", "remaining"])
def test_walking_the_pages_shows_every_active_session_once_in_order(app, clock, sort):
    store, now = store_of(app), int(clock())
    for index, key in enumerate(open_sessions(store, 120, now)):
        if index % 3 == 0:
            store.touch(key, now - index % 5)
    enter(app, "admin", into=app)
    shown, pages, page = [], 0, report(app, sort=sort)
    while True:
        shown.extend(active_keys(page))
        pages += 1
        link = next_link(page)
        if link is None:
            break
        page = app.get(link, headers=PAGE)
    value = {"last_seen": lambda row: row.last_seen, "started": lambda row: row.created,
             "remaining": lambda row: row.deadline}[sort]
    active = [row for row in store_of(app).records() if row.is_open and row.deadline > now]
    expected = sorted(active, key=lambda row: (value(row), row.key), reverse=sort != "remaining")
    assert shown == [row.key for row in expected]
    assert len(shown) == len(set(shown)) == 121
    assert pages == 3


def test_walking_the_pages_of_recent_ends_shows_every_end_once(app, clock):
    store, now = store_of(app), int(clock())
    keys = open_sessions(store, PAGE_SIZE + 1, now)
    for index, key in enumerate(keys):
        store.end(key, "revoked", now - index % 4)
    enter(app, "admin", into=app)
    first = report(app)
    assert len(end_rows(first)) == PAGE_SIZE
    link = next_link(first, "ends")
    assert link is not None and "ends_after=" in link
    second = app.get(link, headers=PAGE)
    shown = [key for key, _ in end_rows(first) + end_rows(second)]
    assert next_link(second, "ends") is None
    assert sorted(shown) == sorted(keys)
    ordered = sorted(keys, key=lambda key: (store.get(key).ended_at, key), reverse=True)
    assert shown == ordered
    assert active_keys(second) == active_keys(first)  # the other list stays where it was


# == CSV ===========================================================================================

def test_active_csv_has_a_header_and_one_row_per_active_session(app):
    alice = signed_in(app, "alice", user_agent=CHROME, real=True)
    bob = signed_in(app, "bob", user_agent=FIREFOX)
    enter(app, "admin", into=app)
    response = app.get(f"{REPORT}/active.csv", headers=PAGE)
    assert response.content_type == "text/csv"
    assert response.charset == "utf-8"
    assert re.fullmatch(r'attachment; filename="sessions-active-\d{8}-\d{4}\.csv"',
                        response.headers["Content-Disposition"])
    rows = csv_rows(response)
    assert rows[0] == ["session", "user_id", "user", "started", "last_seen", "seconds_left",
                       "ip", "device"]
    by_key = {row[0]: row for row in rows[1:]}
    assert len(rows) - 1 == len(by_key) == 3
    assert by_key[session_key_of(alice)][2] == "alice"
    assert by_key[session_key_of(alice)][7] == "Chrome 120 on Windows 10"
    assert by_key[session_key_of(bob)][7] == "Firefox 132 on Ubuntu"
    assert by_key[session_key_of(bob)][5] == str(IDLE)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", by_key[session_key_of(bob)][3])


def test_active_csv_follows_the_user_filter(app):
    alice = signed_in(app, "alice")
    signed_in(app, "bob")
    enter(app, "admin", into=app)
    rows = csv_rows(app.get(f"{REPORT}/active.csv", params={"user": "alice"}, headers=PAGE))
    assert [row[0] for row in rows[1:]] == [session_key_of(alice)]
    nobody = csv_rows(app.get(f"{REPORT}/active.csv", params={"user": "zed"}, headers=PAGE))
    assert nobody == [rows[0]]


def test_ended_csv_lists_ends_with_reason_and_length(app, clock):
    alice = signed_in(app, "alice")
    bob = signed_in(app, "bob")
    clock.advance(75)
    alice.post("/logout", {"csrf_token": csrf_token(alice)}, headers=PAGE)
    store_of(app).end(session_key_of(bob), "revoked", int(clock()))
    enter(app, "admin", into=app)
    response = app.get(f"{REPORT}/ended.csv", headers=PAGE)
    rows = csv_rows(response)
    assert rows[0] == ["session", "user_id", "user", "reason", "length_seconds", "ended_at"]
    assert sorted((row[0], row[2], row[3], row[4]) for row in rows[1:]) == sorted([
        (session_key_of(alice), "alice", "logged_out", "75"),
        (session_key_of(bob), "bob", "revoked", "75")])
    revoked = csv_rows(app.get(f"{REPORT}/ended.csv", params={"reason": "revoked"}, headers=PAGE))
    assert [row[0] for row in revoked[1:]] == [session_key_of(bob)]


def test_csv_of_more_rows_than_one_query_holds_lists_every_session_once(app, clock):
    keys = open_sessions(store_of(app), EXPORT_BATCH, int(clock()))
    enter(app, "admin", into=app)  # one more than a query holds
    rows = csv_rows(app.get(f"{REPORT}/active.csv", headers=PAGE))
    shown = [row[0] for row in rows[1:]]
    assert len(shown) == len(set(shown)) == EXPORT_BATCH + 1
    assert set(keys) <= set(shown)


def test_csv_cells_that_a_spreadsheet_would_run_start_with_an_apostrophe(app, clock):
    store, now = store_of(app), int(clock())
    store.open(new_key(), "=HYPERLINK(\"http://evil\")", now - 5, ip="-1+1",
               user_agent=FORMULA)
    ended = new_key()
    store.open(ended, "@SUM(A1)", now - 50)
    store.end(ended, "revoked", now - 10)
    signed_in(app, "alice", user_agent=FORMULA, real=True)
    enter(app, "admin", into=app)

    active = csv_rows(app.get(f"{REPORT}/active.csv", headers=PAGE))
    ends = csv_rows(app.get(f"{REPORT}/ended.csv", headers=PAGE))

    cells = [cell for row in active + ends for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert "'=HYPERLINK(\"http://evil\")" in cells
    assert "'-1+1" in cells
    assert "'@SUM(A1)" in cells
    assert FORMULA not in cells  # the user agent is shown as a device, never as it came
    alice_row = next(row for row in active[1:] if row[2] == "alice")
    assert alice_row[7] == "Unknown device"


def test_csv_is_streamed_the_header_before_the_rows_are_read(app, clock):
    enter(app, "admin", into=app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"{REPORT}/active.csv",
               "HTTP_COOKIE": "; ".join(f"{name}={value}" for name, value in app.cookies.items()),
               "HTTP_SEC_FETCH_MODE": "navigate", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
               "wsgi.errors": io.StringIO(), "QUERY_STRING": "", "SCRIPT_NAME": ""}
    started = []
    body = app.app(environ, lambda status, headers, exc_info=None: started.append(status))
    assert not isinstance(body, list | tuple)
    assert started == ["200 OK"]
    chunks = iter(body)
    assert next(chunks).startswith(b"session,user_id,user,")
    late = new_key()
    store_of(app).open(late, "9999", int(clock()))  # opened after the header went out
    rest = b"".join(chunks).decode()
    getattr(body, "close", lambda: None)()
    assert late in rest
    assert session_key_of(app) in rest


def test_csv_of_an_unknown_list_is_not_found(admin):
    admin.get(f"{REPORT}/everything.csv", headers=PAGE, status=404)


# == revoke ========================================================================================

def test_revoke_one_session_from_its_confirm_page(app, ended_events):
    alice = signed_in(app, "alice", real=True)
    other = signed_in(app, "alice")
    key = session_key_of(alice)
    enter(app, "admin", into=app)

    confirm = app.get(f"{REPORT}/revoke", params={"session": key}, headers=PAGE)
    assert "Revoke this session of alice?" in confirm.text
    assert "This includes the session you are using" not in confirm.text
    fields = form_fields(confirm, f"{REPORT}/revoke")
    assert fields["session"] == key
    done = follow(app.post(f"{REPORT}/revoke", fields, headers=PAGE), app)

    assert "Revoked 1 session of alice." in flashes(done)
    assert (record(app, key).end_reason, record(app, key).is_open) == ("revoked", False)
    assert record(app, session_key_of(other)).is_open  # her other session stays
    status = alice.get("/session/status", headers=FETCH).json
    assert (status["state"], status["reason"]) == ("ended", "revoked")
    page = alice.get("/workspace", headers=PAGE, status=303)
    assert query(page.location) == {"reason": "revoked", "came_from": "/workspace"}
    assert urlsplit(page.location).path == "/session-expired"
    assert "An administrator ended your session." in alice.get(page.location, headers=PAGE).text
    assert [reason_in(line) for line in events_of(ended_events, key)] == ["revoked"]
    assert flashes(report(app)) == []  # said once


def test_revoke_every_session_of_a_user_from_the_confirm_page(app, app_database_url,
                                                              ended_events):
    alices = [signed_in(app, "alice", real=True), signed_in(app, "alice", user_agent=CHROME)]
    bob = signed_in(app, "bob")
    enter(app, "admin", into=app)
    alice_id = user_id(app_database_url, "alice")

    confirm = app.get(f"{REPORT}/revoke", params={"user": alice_id}, headers=PAGE)
    assert "Revoke every session of alice?" in confirm.text
    assert "2 sessions end now." in confirm.text
    assert len(confirm.html.select("ul.targets li")) == 2
    fields = form_fields(confirm, f"{REPORT}/revoke")
    assert fields["user"] == alice_id
    done = follow(app.post(f"{REPORT}/revoke", fields, headers=PAGE), app)

    assert "Revoked 2 sessions of alice." in flashes(done)
    for alice in alices:
        key = session_key_of(alice)
        assert record(app, key).end_reason == "revoked"
        assert [reason_in(line) for line in events_of(ended_events, key)] == ["revoked"]
        response = alice.get("/", headers=PAGE, status=303)
        assert query(response.location)["reason"] == "revoked"
    assert record(app, session_key_of(bob)).is_open
    assert len(ended_events) == 2
    assert active_keys(report(app, user="alice")) == []


def test_revoke_without_the_csrf_token_is_refused_and_ends_nothing(app):
    alice = signed_in(app, "alice")
    enter(app, "admin", into=app)
    app.post(f"{REPORT}/revoke", {"session": session_key_of(alice)}, headers=PAGE, status=400)
    app.post(f"{REPORT}/revoke", {"session": session_key_of(alice), "csrf_token": "wrong"},
             headers=PAGE, status=400)
    assert record(app, session_key_of(alice)).is_open


@pytest.mark.parametrize("which", ["ended", "unknown"])
def test_revoke_of_a_session_that_is_not_open_says_it_ended_already(app, which, ended_events):
    alice = signed_in(app, "alice")
    key = session_key_of(alice) if which == "ended" else new_key()
    if which == "ended":
        alice.post("/logout", {"csrf_token": csrf_token(alice)}, headers=PAGE)
    enter(app, "admin", into=app)
    before = list(ended_events)

    confirm = app.get(f"{REPORT}/revoke", params={"session": key}, headers=PAGE, status=303)
    assert flashes(follow(confirm, app)) == ["That session has ended already."]
    posted = app.post(f"{REPORT}/revoke", {"session": key, "csrf_token": csrf_token(app)},
                      headers=PAGE, status=303)
    assert flashes(follow(posted, app)) == [
        "Nothing was revoked: those sessions had ended already."]
    assert ended_events == before
    if which == "ended":
        assert record(app, key).end_reason == "logged_out"
    else:
        assert record(app, key) is None


def test_revoke_of_a_user_without_open_sessions_says_they_ended_already(app, app_database_url):
    enter(app, "admin", into=app)
    response = app.get(f"{REPORT}/revoke", params={"user": user_id(app_database_url, "bob")},
                       headers=PAGE, status=303)
    assert flashes(follow(response, app)) == ["That session has ended already."]


def test_revoke_of_nothing_named_goes_back_to_the_report(admin):
    for params in ({}, {"session": "not-a-key"}):
        response = admin.get(f"{REPORT}/revoke", params=params, headers=PAGE, status=303)
        assert response.location.endswith(REPORT)


def test_revoking_ones_own_session_is_warned_about_and_signs_one_out(app, app_database_url):
    enter(app, "admin", into=app)
    key = session_key_of(app)
    confirm = app.get(f"{REPORT}/revoke", params={"session": key}, headers=PAGE)
    assert "This includes the session you are using" in confirm.text
    app.post(f"{REPORT}/revoke", form_fields(confirm, f"{REPORT}/revoke"), headers=PAGE,
             status=303)
    assert record(app, key).end_reason == "revoked"
    response = app.get(REPORT, headers=PAGE, status=303)
    assert query(response.location)["reason"] == "revoked"


# == your sessions =================================================================================

def test_account_page_lists_own_sessions_only_and_marks_this_device(app):
    here = signed_in(app, "alice", user_agent=CHROME, real=True)
    there = signed_in(app, "alice", user_agent=FIREFOX, real=True)
    bob = signed_in(app, "bob")
    page = here.get("/account/sessions", headers=PAGE)
    items = page.html.select("ul.sessions li")
    assert {item["data-session"] for item in items} == {session_key_of(here),
                                                        session_key_of(there)}
    assert session_key_of(bob) not in page.text
    current = [item for item in items if item.get("aria-current") == "true"]
    assert [item["data-session"] for item in current] == [session_key_of(here)]
    assert "this device" in current[0].get_text()
    assert "Chrome 120 on Windows 10" in current[0].get_text()
    assert current[0].find("form") is None  # this session signs out with "Sign out"
    other = next(item for item in items if item is not current[0])
    assert "Firefox 132 on Ubuntu" in other.get_text()
    assert form_fields(other, "/account/sessions/end")["session"] == session_key_of(there)


def test_ending_another_own_session_ends_it_with_ended_by_user(app, ended_events):
    here, there = signed_in(app, "alice", real=True), signed_in(app, "alice")
    key = session_key_of(there)
    page = here.get("/account/sessions", headers=PAGE)
    item = page.html.find("li", attrs={"data-session": key})
    response = here.post("/account/sessions/end", form_fields(item, "/account/sessions/end"),
                         headers=PAGE)
    assert "That session has been signed out." in flashes(follow(response, here))
    assert record(app, key).end_reason == "ended_by_user"
    assert record(app, session_key_of(here)).is_open
    assert [reason_in(line) for line in events_of(ended_events, key)] == ["ended_by_user"]
    refused = there.get("/workspace", headers=PAGE, status=303)
    assert query(refused.location)["reason"] == "ended_by_user"
    assert ("You signed out this session from another device."
            in there.get(refused.location, headers=PAGE).text)
    assert there.get("/session/status", headers=FETCH).json["reason"] == "ended_by_user"


def test_ending_a_session_that_is_not_another_of_mine_does_nothing(app, ended_events):
    bob = signed_in(app, "bob")
    alice = signed_in(app, "alice", real=True)
    for key in [session_key_of(bob), session_key_of(alice), new_key(), "x" * 64]:
        response = alice.post("/account/sessions/end",
                              {"session": key, "csrf_token": csrf_token(alice)}, headers=PAGE)
        assert flashes(follow(response, alice)) == ["That session had ended already."], key
    assert record(app, session_key_of(bob)).is_open
    assert record(app, session_key_of(alice)).is_open
    assert ended_events == []


def test_ending_a_session_without_the_csrf_token_is_refused(app):
    here, there = signed_in(app, "alice"), signed_in(app, "alice")
    here.post("/account/sessions/end", {"session": session_key_of(there)}, headers=PAGE,
              status=400)
    assert record(app, session_key_of(there)).is_open


def three_alices(app) -> list[TestApp]:
    return [signed_in(app, "alice", real=True), signed_in(app, "alice"), signed_in(app, "alice")]


def test_end_others_with_a_wrong_password_is_a_400_and_ends_nothing(app, ended_events):
    here, *others = three_alices(app)
    for password in ["wrong-password", "", "bob-password"]:
        response = here.post("/account/sessions/end-others",
                             {"password": password, "csrf_token": csrf_token(here)},
                             headers=PAGE, status=400)
        error = response.html.select_one("#end-others-error").text
        assert "That password is not right." in error, password
        assert response.html.find("input", id="password")["aria-invalid"] == "true"
    assert all(record(app, session_key_of(browser)).is_open for browser in [here, *others])
    assert ended_events == []


def test_end_others_with_the_password_ends_every_other_session_of_the_user(app, ended_events):
    here, *others = three_alices(app)
    bob = signed_in(app, "bob")
    page = here.get("/account/sessions", headers=PAGE)
    fields = form_fields(page, "/account/sessions/end-others")
    response = here.post("/account/sessions/end-others",
                         {**fields, "password": "alice-password"}, headers=PAGE)
    assert "Signed out 2 other sessions." in flashes(follow(response, here))
    for other in others:
        key = session_key_of(other)
        assert record(app, key).end_reason == "ended_by_user"
        assert [reason_in(line) for line in events_of(ended_events, key)] == ["ended_by_user"]
    assert record(app, session_key_of(here)).is_open
    assert record(app, session_key_of(bob)).is_open
    assert len(ended_events) == 2
    assert here.get("/workspace", headers=PAGE).status_int == 200
    left = here.get("/account/sessions", headers=PAGE)
    assert [item["data-session"] for item in left.html.select("ul.sessions li")] == [
        session_key_of(here)]
    assert left.html.find("form", action="/account/sessions/end-others") is None


def test_end_others_without_the_csrf_token_is_refused(app):
    here, *others = three_alices(app)
    here.post("/account/sessions/end-others", {"password": "alice-password"}, headers=PAGE,
              status=400)
    assert all(record(app, session_key_of(other)).is_open for other in others)


# == /metrics ======================================================================================

def test_metrics_tell_the_figures_in_prometheus_text(app, app_database_url):
    alice = signed_in(app, "alice")
    forged = browser(app)
    forged.set_cookie("session", alice.cookies["session"].strip('"'))
    forged.set_cookie("auth_tkt", "forged-ticket")
    forged.get("/api/notes", headers=JSON, status=401)
    store_of(app).end(session_key_of(alice), "revoked", now_of(app))
    enter(app, "admin", into=app)

    response = app.get("/metrics", headers=FETCH)

    assert response.content_type == "text/plain"
    text = response.text
    assert metrics_value(text, "session_expiry_sessions_active") == 1  # the admin
    assert metrics_value(text, "session_expiry_sessions_started_24h") == 2
    assert metrics_value(text, 'session_expiry_sessions_ended_24h{reason="revoked"}') == 1
    assert metrics_value(text, 'session_expiry_sessions_ended_24h{reason="logged_out"}') == 0
    assert metrics_value(text, 'session_expiry_requests_refused_total{reason="ticket_mismatch"}'
                         ) == 1
    assert metrics_value(text, 'session_expiry_requests_refused_total{reason="session_lost"}'
                         ) == 0
    assert metrics_value(text, 'session_expiry_requests_refused_24h{reason="ticket_mismatch"}'
                         ) == 1
    assert metrics_value(text, "session_expiry_sweeper_lag_seconds") == 0


def test_metrics_do_not_extend_the_session(app, clock):
    enter(app, "admin", into=app)
    before = record(app, session_key_of(app))
    clock.advance(300)
    app.get("/metrics", headers=FETCH)
    assert record(app, session_key_of(app)) == before


def test_a_scraper_from_a_listed_network_reads_metrics_without_signing_in(apps):
    app = apps(session_expiry__metrics_scrapers="127.0.0.0/8")
    scraper = browser(app, REMOTE_ADDR="127.0.0.1")
    response = scraper.get("/metrics")
    assert response.status_int == 200
    assert "session_expiry_sessions_active" in response.text
    assert "Set-Cookie" not in response.headers  # a scraper gets no session


def test_a_client_outside_the_listed_networks_is_refused_metrics(apps):
    app = apps(session_expiry__metrics_scrapers="127.0.0.0/8")
    for address in ["10.0.0.5", "128.0.0.1", "::1", ""]:
        outsider = browser(app, REMOTE_ADDR=address)
        response = outsider.get("/metrics", headers=FETCH, status=401)
        assert response.json["error"] == "not_authenticated", address


def test_a_forwarded_for_header_does_not_make_a_client_a_scraper(apps):
    app = apps(session_expiry__metrics_scrapers="127.0.0.0/8")
    outsider = browser(app, REMOTE_ADDR="203.0.113.9")
    outsider.get("/metrics", headers={**FETCH, "X-Forwarded-For": "127.0.0.1"}, status=401)


def test_without_scrapers_listed_a_local_client_is_refused_metrics(app):
    browser(app, REMOTE_ADDR="127.0.0.1").get("/metrics", headers=FETCH, status=401)


# == 404 ===========================================================================================

def test_a_page_load_of_an_unknown_address_gets_the_not_found_page_in_the_layout(app):
    response = app.get("/no/such/page", headers=PAGE, status=404)
    assert response.content_type == "text/html"
    assert response.html.find("h1").get_text() == "Page not found"
    assert response.html.find("code").get_text() == "/no/such/page"
    assert response.html.select_one("header.site-header a.brand") is not None
    assert response.html.find("link", rel="stylesheet") is not None


def test_the_not_found_page_of_a_signed_in_user_keeps_the_account_links(app):
    login(app, "alice")
    response = app.get("/no/such/page", headers=PAGE, status=404)
    assert response.html.find("a", href="/account/sessions") is not None
    assert response.headers["Session-Expires-In"] == str(IDLE)


def test_a_fetch_of_an_unknown_address_gets_a_json_404(app):
    for headers in [FETCH, JSON, {}]:
        response = app.get("/no/such/page", headers=headers, status=404)
        assert response.content_type == "application/json", headers
        assert response.json == {"error": "not_found"}, headers


def test_the_not_found_page_escapes_the_address(app):
    response = app.get("/%3Cscript%3Ealert(1)%3C/script%3E", headers=PAGE, status=404)
    assert "<script>alert(1)" not in response.text
