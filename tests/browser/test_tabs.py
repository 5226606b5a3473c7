"""All tabs of a browser in step, and one poller per browser."""
import re
import time

from tests.browser.conftest import IDLE, sign_in

DIALOG = "dialog.session-expiry-dialog"
EXPIRED = re.compile(r"/session-expired\?")


def open_tabs(context, app, count, path="/workspace"):
    first = context.new_page()
    sign_in(first, app, path=path)
    tabs = [first]
    for _ in range(count - 1):
        tab = context.new_page()
        tab.goto(app.url(path))
        tabs.append(tab)
    return tabs


def test_activity_in_one_tab_keeps_the_other_alive(live, context):
    app = live()
    typing, idle = open_tabs(context, app, 2)
    started = time.monotonic()
    while time.monotonic() - started < IDLE * 1.5:
        typing.locator("#section-1").press_sequentially("words ", delay=50)
        typing.wait_for_timeout(700)
        assert idle.locator(DIALOG).is_hidden()
    assert "/workspace" in idle.url
    assert app.record(context).is_open


def test_logout_in_one_tab_moves_the_other_within_a_second(live, context):
    app = live(idle_timeout="60s", warn_before="20s", touch_interval="5s")
    leaving, other = open_tabs(context, app, 2)
    clicked = time.monotonic()
    leaving.get_by_role("button", name="Sign out", exact=True).click()
    other.wait_for_url(EXPIRED, timeout=3000, wait_until="commit")  # the move, not the paint
    assert time.monotonic() - clicked <= 1.0
    assert "reason=logged_out" in other.url
    other.wait_for_load_state()
    assert "You signed out in another tab" in other.content()
    leaving.wait_for_url(re.compile(r"/login\?logged_out=1"))


def test_stay_signed_in_in_one_tab_closes_the_warning_in_the_other(live, context):
    app = live()
    answering, other = open_tabs(context, app, 2)
    for tab in (answering, other):
        tab.locator(DIALOG).wait_for(state="visible", timeout=(IDLE + 2) * 1000)
    answering.get_by_role("button", name="Stay signed in").click()
    other.locator(DIALOG).wait_for(state="hidden", timeout=1000)
    answering.wait_for_timeout(IDLE * 1000 // 2)
    assert "/workspace" in other.url and "/workspace" in answering.url


def test_five_tabs_make_one_status_request_per_poll_interval(live, context):
    app = live(idle_timeout="60s", warn_before="20s", touch_interval="5s", poll_interval="2s")
    open_tabs(context, app, 5)
    before = app.app.count("/session/status")
    time.sleep(7)  # three poll intervals and a half
    polls = app.app.count("/session/status") - before
    assert 2 <= polls <= 4, polls  # five pollers would make about fifteen


def test_a_revoke_on_the_server_pushes_every_tab_within_one_poll_interval(live, context):
    app = live(idle_timeout="60s", warn_before="20s", touch_interval="5s", poll_interval="2s")
    tabs = open_tabs(context, app, 3)
    revoked = time.monotonic()
    app.store.end(app.record(context).key, "revoked", int(time.time()))
    for tab in tabs:
        tab.wait_for_url(re.compile(r"reason=revoked"), timeout=4000, wait_until="commit")
    assert time.monotonic() - revoked <= 2 + 1
    tabs[-1].wait_for_load_state()
    assert "An administrator ended your session." in tabs[-1].content()


def test_without_web_locks_or_broadcast_channel_the_fallbacks_keep_tabs_in_step(live, chromium):
    app = live(idle_timeout="60s", warn_before="20s", touch_interval="5s", poll_interval="2s")
    context = chromium.new_context()
    context.add_init_script("delete Navigator.prototype.locks; delete window.BroadcastChannel;")
    try:
        tabs = open_tabs(context, app, 3)
        assert tabs[0].evaluate("!navigator.locks && !window.BroadcastChannel")
        before = app.app.count("/session/status")
        time.sleep(5)  # two poll intervals and a half
        polls = app.app.count("/session/status") - before
        assert 1 <= polls <= 3, polls  # one leader (a lease in localStorage), not three
        tabs[0].get_by_role("button", name="Sign out", exact=True).click()
        for tab in tabs[1:]:
            tab.wait_for_url(re.compile(r"reason=logged_out"), timeout=2000)
    finally:
        context.close()
