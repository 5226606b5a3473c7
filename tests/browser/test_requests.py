"""The page's own requests: a 401 pushes, the fetch helper sends the CSRF token,
and the Session-Expires-In header of any answer refreshes the countdown."""
import re
import time

from tests.browser.conftest import IDLE, WARN, sign_in

DIALOG = "dialog.session-expiry-dialog"
REVOKED = re.compile(r"/session-expired\?reason=revoked&came_from=%2Fworkspace$")
XHR = """() => {
  const request = new XMLHttpRequest();
  request.open("GET", "/api/notes");
  request.send();
}"""


def revoke(live, context):
    assert live.store.end(live.record(context).key, "revoked", int(time.time())) is not None


def test_a_fetch_answered_401_session_expired_pushes(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    revoke(app, context)
    started = time.monotonic()
    page.evaluate("() => { fetch('/api/notes'); }")
    page.wait_for_url(REVOKED, timeout=3000)
    assert time.monotonic() - started <= 1.0
    assert page.locator(".reason").inner_text() == "An administrator ended your session."


def test_an_xhr_answered_401_session_expired_pushes(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    revoke(app, context)
    started = time.monotonic()
    page.evaluate(XHR)
    page.wait_for_url(REVOKED, timeout=3000)
    assert time.monotonic() - started <= 1.0
    assert page.locator(".reason").inner_text() == "An administrator ended your session."


def test_the_fetch_helper_rejects_a_401_and_the_page_is_pushed(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    revoke(app, context)
    with page.expect_navigation(url=REVOKED, timeout=3000):
        error = page.evaluate("""async () => {
          try { await window.sessionExpiry.fetch('/api/notes'); return null; }
          catch (error) { return {name: error.name, reason: error.reason}; }
        }""")
    assert error == {"name": "SessionExpiredError", "reason": "revoked"}


POST_DRAFT = """async (useHelper) => {
  const init = {method: 'POST', body: JSON.stringify({field: 'title', value: 'x'}),
                headers: {'Content-Type': 'application/json'}};
  const response = await (useHelper ? window.sessionExpiry.fetch : fetch)('/api/draft', init);
  return {status: response.status, body: await response.json()};
}"""


def test_the_fetch_helper_sends_the_csrf_token_and_a_plain_fetch_does_not(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    plain = page.evaluate(POST_DRAFT, False)
    assert plain == {"status": 400, "body": {"error": "bad_csrf_token"}}
    helped = page.evaluate(POST_DRAFT, True)
    assert helped == {"status": 200, "body": {"saved": "draft_title"}}
    assert "/workspace" in page.url  # neither answer pushed anyone out


def test_a_response_header_refreshes_the_countdown(live, context):
    app = live(touch_interval="1s")
    page = context.new_page()
    sign_in(page, app)
    loaded = time.monotonic()
    page.wait_for_timeout(3000)
    touched_at = time.monotonic()
    answer = page.evaluate("""async () => {
      const response = await fetch('/api/notes');
      return {status: response.status, expiresIn: response.headers.get('Session-Expires-In')};
    }""")
    assert answer["status"] == 200
    assert int(answer["expiresIn"]) >= IDLE - 1  # the server touched: a full idle timeout again

    dialog = page.locator(DIALOG)
    # Not at the original warning time (4 s after load) ...
    page.wait_for_timeout(max(0, (loaded + IDLE - WARN + 1.0 - time.monotonic()) * 1000))
    assert dialog.is_hidden()
    assert "/workspace" in page.url
    # ... but at the new one, warn_before ahead of the refreshed deadline.
    dialog.wait_for(state="visible", timeout=(IDLE + 2) * 1000)
    shown = time.monotonic() - touched_at
    assert IDLE - WARN - 1.0 <= shown <= IDLE - WARN + 1.0, shown
