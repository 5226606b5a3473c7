"""Typed input survives the end of a session (WCAG 2.2.5), for the same user only."""
import json
import re
import time

from playwright.sync_api import expect

from tests.browser.conftest import IDLE, sign_in

DRAFT_PREFIX = "session-expiry:draft:"
DRAFT_KEYS = f"Object.keys(sessionStorage).filter((key) => key.startsWith({DRAFT_PREFIX!r}))"
TYPED = {"#title": "Quarterly report", "#section-1": "First thoughts,\nover two lines.",
         "#section-3": "Third section: numbers to check."}
EXPIRED = re.compile(r"/session-expired\?")


def type_and_expire(page, live):
    """Sign in, type into the workspace, and wait (idle) for the push to the expired page."""
    sign_in(page, live)
    for selector, text in TYPED.items():
        page.fill(selector, text)
    typed = time.monotonic()
    page.wait_for_url(EXPIRED, timeout=(IDLE + 4) * 1000)
    assert time.monotonic() - typed <= IDLE + 2
    assert "reason=idle_timeout" in page.url
    assert page.evaluate(DRAFT_KEYS) == [DRAFT_PREFIX + "/workspace"]


def sign_in_again(page, live, username):
    """From the expired page: "Sign in again", the login form, back where the person was."""
    page.get_by_role("link", name="Sign in again").click()
    page.wait_for_url(re.compile(r"/login\?came_from=%2Fworkspace$"), timeout=5000)
    page.fill("#username", username)
    page.fill("#password", username + "-password")
    page.click("button[type=submit]")
    page.wait_for_url(live.url("/workspace"), timeout=5000)
    page.wait_for_function("window.sessionExpiry !== undefined", timeout=5000)


def test_typed_input_is_restored_after_signing_in_again(live, context):
    app = live()
    page = context.new_page()
    type_and_expire(page, app)

    sign_in_again(page, app, "alice")
    for selector, text in TYPED.items():
        expect(page.locator(selector)).to_have_value(text, timeout=2000)
    for untouched in ("#section-2", "#section-4", "#section-8"):
        expect(page.locator(untouched)).to_have_value("")
    status = page.get_by_role("status").and_(page.locator("#session-expiry-status"))
    expect(status).to_have_text(
        "What you typed before your session ended has been restored.", timeout=2000)
    assert page.evaluate(DRAFT_KEYS) == []  # the saved copy is gone once restored
    assert page.evaluate("sessionStorage.length") == 0


def test_a_draft_is_not_restored_for_another_user(live, context):
    app = live()
    page = context.new_page()
    type_and_expire(page, app)

    sign_in_again(page, app, "bob")
    assert page.locator(".site-header strong").inner_text() == "bob"
    for selector in TYPED:
        expect(page.locator(selector)).to_have_value("")
    page.wait_for_timeout(300)  # the announcement would be written 100 ms after load
    assert page.locator("#session-expiry-status").count() == 0
    assert page.evaluate(DRAFT_KEYS) == []  # and alice's text is not left behind either
    assert page.evaluate("sessionStorage.length") == 0


INJECT = """() => {
  const form = document.getElementById("workspace-form");
  form.insertAdjacentHTML("beforeend", `
    <label for="pin">PIN</label><input type="password" id="pin" name="pin">
    <input type="hidden" id="token" name="token">
    <label for="upload">File</label><input type="file" id="upload" name="upload">
    <label for="secret">Secret</label>
    <input type="text" id="secret" name="secret" data-session-expiry-ignore>
    <fieldset data-session-expiry-ignore><legend>Private</legend>
      <label for="inside">Inside</label><input type="text" id="inside" name="inside">
      <label for="note">Note</label><textarea id="note" name="note"></textarea>
    </fieldset>
    <label for="card">Card</label><input type="text" id="card" name="card" autocomplete="cc-number">
    <label for="nickname">Nickname</label><input type="text" id="nickname" name="nickname">`);
  document.getElementById("token").value = "hidden-value-4471";
}"""
SECRETS = {"#pin": "pin-value-9182", "#secret": "secret-value-5530",
           "#inside": "inside-value-6604", "#note": "note-value-2217",
           "#card": "4111111111111111"}
NEVER_SAVED = {"pin", "token", "upload", "secret", "inside", "note", "card", "csrf_token"}


def test_passwords_hidden_file_and_ignored_fields_are_never_saved_nor_sent(live, context):
    app = live()
    page = context.new_page()
    sent = []
    context.on("request", lambda request: sent.append((request.url, request.post_data or "")))
    sign_in(page, app)
    page.evaluate(INJECT)
    page.fill("#title", "Kept title")
    page.fill("#nickname", "kept-nickname")
    for selector, text in SECRETS.items():
        page.fill(selector, text)
    page.set_input_files("#upload", files=[{"name": "upload-name-3390.txt",
                                            "mimeType": "text/plain",
                                            "buffer": b"file-content-8841"}])
    sent.clear()  # from here on: the push, and nothing of the page's fields may travel

    app.store.end(app.record(context).key, "revoked", int(time.time()))
    page.evaluate("() => { fetch('/api/notes'); }")
    page.wait_for_url(EXPIRED, timeout=3000)
    assert "reason=revoked" in page.url

    keys = page.evaluate(DRAFT_KEYS)
    assert keys == [DRAFT_PREFIX + "/workspace"]
    draft = json.loads(page.evaluate(f"sessionStorage.getItem({keys[0]!r})"))
    saved = {entry["name"]: entry.get("value") for entry in draft["fields"]}
    assert saved == {"title": "Kept title", "nickname": "kept-nickname"}
    assert not NEVER_SAVED & saved.keys()
    raw = page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    for secret in [*SECRETS.values(), "hidden-value-4471", "upload-name-3390", "file-content"]:
        assert secret not in raw

    # Nothing typed went to the server: not in the expired page's address, not in any request.
    assert sent, "the push made no request at all?"
    for value in ["Kept title", "Kept+title", "Kept%20title", "kept-nickname",
                  *SECRETS.values()]:
        for url, body in sent:
            assert value not in url and value not in body, (value, url)
    assert app.app.count("/api/draft") == 0
    assert not [url for url, body in sent if body]  # the push posts nothing at all
