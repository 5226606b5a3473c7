"""axe-core finds nothing on the login page, the workspace, the expired page, and the
workspace with the warning open; a screenshot of the open dialog is kept as an artifact."""
import re
import time

from tests.browser.conftest import ARTIFACTS, AXE, sign_in

DIALOG = "dialog.session-expiry-dialog"
SCREENSHOT = ARTIFACTS / "session-expiry-dialog.png"


def axe_violations(page) -> list[dict]:
    """Run axe-core (the npm package ``make test`` installs) on the page as it is now."""
    assert AXE.is_file(), f"{AXE} is missing: run `make test` (npm ci installs axe-core)"
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document)")
    assert result["passes"], "axe checked nothing?"
    return result["violations"]


def describe(violations) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + ", ".join(str(node["target"]) for node in v["nodes"])
        for v in violations)


def assert_no_violations(page):
    violations = axe_violations(page)
    assert violations == [], describe(violations)


def test_the_login_page(live, context):
    app = live()
    page = context.new_page()
    page.goto(app.url("/login?came_from=/workspace"))
    assert page.locator("h1").inner_text() == "Sign in"
    assert_no_violations(page)


def test_the_workspace_while_signed_in(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    page.wait_for_function("window.sessionExpiry !== undefined", timeout=5000)
    assert page.locator(DIALOG).count() == 1  # the (closed) dialog is on the page too
    assert_no_violations(page)


def test_the_expired_page(live, context):
    app = live()
    page = context.new_page()
    sign_in(page, app)
    app.store.end(app.record(context).key, "revoked", int(time.time()))
    page.reload()
    page.wait_for_url(re.compile(r"/session-expired\?reason=revoked"), timeout=3000)
    assert page.locator("h1").inner_text() == "Your session has ended"
    assert_no_violations(page)


def test_the_workspace_with_the_warning_open(live, context):
    # 20 s to respond (WCAG 2.2.1), warned after 4 s: time enough to run axe meanwhile.
    app = live(idle_timeout="24s", warn_before="20s")
    page = context.new_page()
    sign_in(page, app)
    dialog = page.locator(DIALOG)
    dialog.wait_for(state="visible", timeout=8000)
    page.wait_for_timeout(300)  # the countdown text is written, focus is on the button
    assert page.evaluate("document.activeElement.textContent") == "Stay signed in"

    ARTIFACTS.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.is_file()
    assert SCREENSHOT.stat().st_size > 0
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert_no_violations(page)
    assert dialog.is_visible()  # axe ran against the open dialog, not a page pushed away
    assert "/workspace" in page.url
