"""The session report, the revoke, and "your sessions" in a real browser.

An administrator revokes alice's session from the report and alice's page, left
alone in another browser, moves within one poll interval; the report is kept as
screenshots (wide and 390 px narrow); axe-core finds nothing on the report (its
data tables open too), "your sessions", the revoke confirmation and the 404 page.
"""
from __future__ import annotations

import re
import secrets
import time

import pytest

from tests.browser.conftest import ARTIFACTS, sign_in
from tests.browser.test_accessibility import assert_no_violations

POLL = 2  # seconds
#: Sessions that outlive the test; the page asks the server every POLL seconds.
SETTINGS = {"idle_timeout": "60s", "warn_before": "20s", "touch_interval": "5s",
            "poll_interval": f"{POLL}s"}
REPORT = "/admin/sessions"
EXPIRED_REVOKED = re.compile(r"/session-expired\?(.*&)?reason=revoked")
SCREENSHOT = ARTIFACTS / "session-report.png"
NARROW_SCREENSHOT = ARTIFACTS / "session-report-narrow.png"
NARROW = {"width": 390, "height": 844}
FIREFOX_UA = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"
#: Ended sessions of the last day for the charts: (hours ago, reason, seconds it lasted).
HISTORY = ((0.5, "logged_out", 40), (1.5, "idle_timeout", 25 * 60), (2.5, "idle_timeout", 50 * 60),
           (4.5, "revoked", 3 * 60), (7.5, "absolute_timeout", 8 * 3600),
           (11.5, "ended_by_user", 100 * 60), (15.5, "idle_timeout", 3 * 3600),
           (20.5, "logged_out", 5 * 3600))


@pytest.fixture
def new_context(chromium):
    """``new_context()``: another browser (its own cookies), closed after the test."""
    made = []

    def make(**options):
        made.append(chromium.new_context(**options))
        return made[-1]

    yield make
    for context in made:
        context.close()


def signed_in(new_context, app, username, path="/workspace"):
    """A page of a new browser context, signed in as ``username`` and on ``path``."""
    page = new_context().new_page()
    sign_in(page, app, username, path)
    return page


def add_history(app, user_id):
    """Sessions of ``user_id`` that ended over the last 24 hours, straight in the store."""
    now = int(time.time())
    for hours_ago, reason, length in HISTORY:
        ended_at = now - int(hours_ago * 3600)
        key = secrets.token_hex(32)
        app.store.open(key, user_id, ended_at - length, ip="192.0.2.44", user_agent=FIREFOX_UA)
        app.store.end(key, reason, ended_at)


def report_with_data(app, new_context, admin_page):
    """alice in two browsers, bob in one who signs out, a day of history: the report."""
    alice = signed_in(new_context, app, "alice")
    signed_in(new_context, app, "alice", "/account/sessions")
    bob = signed_in(new_context, app, "bob")
    bob.get_by_role("button", name="Sign out", exact=True).click()
    bob.wait_for_url(re.compile(r"/login\?logged_out=1"))
    add_history(app, app.record(alice.context).user_id)
    admin_page.goto(app.url(REPORT))
    assert admin_page.locator("#active-sessions tbody tr").count() == 3  # alice twice, admin
    assert admin_page.locator("#recent-ends tbody tr").count() == len(HISTORY) + 1
    assert admin_page.locator("#recent-ends td[data-reason=logged_out]").count() >= 1
    return alice


def too_wide(page) -> list[str]:
    """The outermost elements that reach past the right edge of the window."""
    return page.evaluate("""() => [...document.body.querySelectorAll('*')]
        .filter(e => e.getBoundingClientRect().right > innerWidth + 0.5
                     && !(e.parentElement.getBoundingClientRect().right > innerWidth + 0.5)
                     && !e.parentElement.closest('.scroll, details:not([open])'))
        .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className.baseVal
                  ?? e.className} (${Math.round(e.getBoundingClientRect().right)} px)`)""")


def test_a_revoke_from_the_report_moves_the_users_page_within_one_poll(live, context,
                                                                       new_context):
    app = live(**SETTINGS)
    alice = signed_in(new_context, app, "alice")
    alice.wait_for_function("window.sessionExpiry !== undefined", timeout=5000)
    key = app.record(alice.context).key
    admin = context.new_page()
    sign_in(admin, app, "admin", REPORT)

    row = admin.locator(f"#active-sessions tr[data-session='{key}']")
    assert row.count() == 1
    assert admin.locator(f"#recent-ends tr[data-session='{key}']").count() == 0
    row.locator("a.revoke").click()
    admin.wait_for_url(app.url(f"{REPORT}/revoke?session={key}"))
    assert admin.locator("h1").inner_text() == "Revoke this session of alice?"

    assert "/workspace" in alice.url  # still there, untouched, until the revoke
    revoked = time.monotonic()
    admin.get_by_role("button", name="Revoke the session").click()
    alice.wait_for_url(EXPIRED_REVOKED, timeout=(POLL + 2) * 1000, wait_until="commit")
    assert time.monotonic() - revoked <= POLL + 1
    assert app.store.get(key).end_reason == "revoked"

    admin.wait_for_url(app.url(REPORT))
    assert admin.locator(".flash").inner_text() == "Revoked 1 session of alice."
    assert admin.locator(f"#active-sessions tr[data-session='{key}']").count() == 0
    ended = admin.locator(f"#recent-ends tr[data-session='{key}']")
    assert ended.count() == 1
    assert ended.locator("td[data-reason]").get_attribute("data-reason") == "revoked"
    assert "alice" in ended.inner_text()

    alice.wait_for_load_state()
    assert alice.locator("p.reason").inner_text() == "An administrator ended your session."


def test_screenshots_of_the_report_wide_and_narrow(live, context, new_context):
    app = live(**SETTINGS)
    admin = context.new_page()
    admin.set_viewport_size({"width": 1280, "height": 800})
    sign_in(admin, app, "admin", REPORT)
    report_with_data(app, new_context, admin)
    ends_chart, lengths_chart = admin.evaluate("""() =>
        [...document.querySelectorAll('svg[role=img]')].map(svg => ['x', 'y'].map(axis =>
            [...svg.querySelectorAll(`.axis.${axis} text`)].map(text => text.textContent)))""")
    for x_labels, y_labels in (ends_chart, lengths_chart):
        assert y_labels and all(label.isdigit() for label in y_labels), y_labels  # counts
        assert not any("…" in label for label in x_labels), x_labels  # whole labels
    assert lengths_chart[0][-1] == "8 h or more"
    assert re.fullmatch(r"\d\d:\d\d", ends_chart[0][0]), ends_chart[0]

    ARTIFACTS.mkdir(exist_ok=True)
    for path in (SCREENSHOT, NARROW_SCREENSHOT):
        path.unlink(missing_ok=True)
    admin.screenshot(path=str(SCREENSHOT), full_page=True)

    admin.set_viewport_size(NARROW)
    admin.reload()
    width, viewport = admin.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert viewport == NARROW["width"]
    assert width <= viewport, f"{width} px wide in {viewport} px: {too_wide(admin)}"
    admin.screenshot(path=str(NARROW_SCREENSHOT), full_page=True)

    for path in (SCREENSHOT, NARROW_SCREENSHOT):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 10_000, path  # a page, not a blank


def test_the_report_with_data_and_its_tables_open(live, context, new_context):
    app = live(**SETTINGS)
    admin = context.new_page()
    sign_in(admin, app, "admin", REPORT)
    report_with_data(app, new_context, admin)
    assert_no_violations(admin)

    details = admin.locator("details")
    assert details.count() == 2
    for index in range(details.count()):
        details.nth(index).locator("summary").click()
    assert admin.evaluate("[...document.querySelectorAll('details')].every(d => d.open)")
    assert admin.get_by_role("cell", name="8 h or more").count() == 0  # a row header
    assert admin.get_by_role("rowheader", name="8 h or more").is_visible()
    assert_no_violations(admin)


def test_your_sessions_with_another_session_to_sign_out(live, new_context):
    app = live(**SETTINGS)
    signed_in(new_context, app, "alice")
    page = signed_in(new_context, app, "alice", "/account/sessions")
    assert page.locator("li[data-session]").count() == 2
    assert page.locator("li[aria-current=true]").count() == 1
    assert page.get_by_role("button", name=re.compile(r"^Sign out \S.*, last seen 20")).count() == 1
    assert page.get_by_role("button", name="Sign out all other sessions").is_visible()
    assert page.get_by_label("Your password, to confirm").is_visible()
    assert_no_violations(page)


def test_the_revoke_confirmation(live, context, new_context):
    app = live(**SETTINGS)
    alice = signed_in(new_context, app, "alice")
    key = app.record(alice.context).key
    admin = context.new_page()
    sign_in(admin, app, "admin", f"{REPORT}/revoke?session={key}")
    assert admin.get_by_role("button", name="Revoke the session").is_visible()
    assert admin.get_by_role("link", name="Cancel").is_visible()
    assert_no_violations(admin)
    assert app.store.get(key).is_open  # looking is not revoking


@pytest.mark.parametrize("who", ["nobody", "admin"])
def test_the_not_found_page(live, context, who):
    app = live(**SETTINGS)
    page = context.new_page()
    if who == "admin":
        sign_in(page, app, "admin", REPORT)
    response = page.goto(app.url("/no-such-page"))
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Page not found"
    assert_no_violations(page)
