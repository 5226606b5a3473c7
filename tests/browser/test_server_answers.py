"""The page trusts the server's word, and only that: not a 503, not another user's session."""
import re
import time

from tests.browser.conftest import sign_in

SLOW = {"idle_timeout": "60s", "warn_before": "20s", "touch_interval": "5s",
        "poll_interval": "2s"}


def test_a_status_answered_503_never_pushes_anyone_out(live, context):
    app = live(**SLOW)
    page = context.new_page()
    sign_in(page, app)
    page.route("**/session/status", lambda route: route.fulfill(
        status=503, content_type="application/json", body='{"error": "unavailable"}'))
    before = app.app.count("/session/status")
    page.wait_for_timeout(5000)  # two polls and a half, each answered 503
    assert "/workspace" in page.url
    assert app.record(context).is_open
    assert app.app.count("/session/status") == before  # every poll was answered by the route
    page.unroute("**/session/status")
    app.store.end(app.record(context).key, "revoked", int(time.time()))
    page.wait_for_url(re.compile(r"reason=revoked"), timeout=4000, wait_until="commit")


def test_a_page_of_one_user_leaves_when_another_signs_in_in_the_same_browser(live, context):
    app = live(**SLOW)
    alice = context.new_page()
    sign_in(alice, app, "alice")
    # alice's session ends without her page hearing of it (no tab told it) ...
    token = app.cookie(context, "csrf_token")
    context.request.post(app.url("/logout"), form={"csrf_token": token}, max_redirects=0)
    # ... and bob signs in in another tab: alice's page must not take his session for hers.
    bob = context.new_page()
    sign_in(bob, app, "bob")
    alice_text = alice.locator("#title")
    alice_text.fill("alice's notes")
    # Her page leaves within a poll; the expired page, seeing a live session (bob's),
    # sends the tab on to the page as bob sees it, and alice's text is not shown to him.
    alice.locator(".signout strong", has_text="bob").wait_for(timeout=5000)
    assert alice.locator("#title").input_value() == ""
    assert "/workspace" in bob.url


def test_the_fetch_helper_sends_the_csrf_token_only_to_this_site(live, context):
    app = live(**SLOW)
    page = context.new_page()
    sign_in(page, app)
    seen = {}

    def elsewhere(route):
        seen.update(route.request.headers)
        route.fulfill(status=200, body="{}", headers={"Access-Control-Allow-Origin": "*"},
                      content_type="application/json")

    page.route("http://elsewhere.test/**", elsewhere)
    status = page.evaluate("""async () => {
        const response = await window.sessionExpiry.fetch("http://elsewhere.test/api",
            {method: "POST", body: "{}", credentials: "omit"});
        return response.status;
    }""")
    assert status == 200
    assert seen and "x-csrf-token" not in seen
