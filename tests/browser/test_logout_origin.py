"""The page script takes over only a form posting to this origin's logout URL."""
import json
import re

from tests.browser.conftest import sign_in

#: Another origin's /logout: a loopback address nothing listens on.
FOREIGN = "http://127.0.0.2:1/logout"

#: Two forms posting to /logout (another origin's, this origin's; both absolute URLs), and a
#: bubble-phase listener that records, per form, whether the page script (a capture-phase
#: listener on document) had prevented the submit. It stops the foreign one from navigating.
#: The record is kept in sessionStorage, which outlives the sign-out's navigation.
INJECT = """([foreign, own]) => {
  for (const [id, action] of [["foreign", foreign], ["own", own]]) {
    const form = document.createElement("form");
    form.id = id;
    form.method = "post";
    form.action = action;
    form.innerHTML = '<input type="hidden" name="csrf_token" value="x">';
    document.body.append(form);
  }
  window.addEventListener("submit", (event) => {
    const form = event.target;
    const seen = JSON.parse(sessionStorage.getItem("seen") || "{}");
    seen[form.id || form.className] = event.defaultPrevented;
    sessionStorage.setItem("seen", JSON.stringify(seen));
    if (form.id === "foreign") event.preventDefault();
  });
}"""


def seen(page) -> dict:
    return json.loads(page.evaluate("sessionStorage.getItem('seen') || '{}'"))


def test_only_this_origins_logout_form_is_intercepted(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    page.evaluate(INJECT, [FOREIGN, app.url("/logout")])
    # Same path, same method: only the origin tells the two forms apart.
    actions = page.evaluate("['foreign', 'own'].map((id) => new URL("
                            "document.getElementById(id).action))"
                            ".map((url) => [url.origin, url.pathname])")
    assert actions == [["http://127.0.0.2:1", "/logout"], [app.base, "/logout"]]

    # The submit event is dispatched within requestSubmit(): read the record before any
    # navigation a wrongly taken-over form would start.
    assert page.evaluate("document.getElementById('foreign').requestSubmit() ?? "
                         "JSON.parse(sessionStorage.getItem('seen'))") == {"foreign": False}
    page.wait_for_timeout(300)  # room for a wrongly started sign-out fetch to arrive
    assert app.app.count("/logout") == 0
    record = app.record(context)
    assert record.is_open
    assert page.url == app.url("/workspace")

    # The site's own sign-out form (the header's) still goes through the script.
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(re.compile(r"/login\?logged_out=1"), timeout=3000)
    assert seen(page) == {"foreign": False, "signout": True}
    assert app.app.count("/logout") == 1
    assert app.store.get(record.key).end_reason == "logged_out"
