"""Real Chromium (Debian's package) driven by Playwright, against the app served by waitress.

Time passes for real on both sides: the sessions under test last seconds.
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from pyramid.paster import get_appsettings

from session_expiry.inputs import read_session_key
from session_expiry.ticket import read_ticket
from session_expiry_demo import make_app
from tests.conftest import ROOT, SECRET
from tests.wsgi_server import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Chromium's own network chatter is refused on this closed network: turn it off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = ROOT / "artifacts"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"

#: Short real timeouts: warned 4 s before an 8 s idle timeout.
IDLE, WARN = 8, 4
SHORT = {"idle_timeout": f"{IDLE}s", "warn_before": f"{WARN}s", "touch_interval": "1s",
         "absolute_timeout": "1h", "poll_interval": "60s"}


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Chromium is not installed: run `make test`, which installs "
                           "Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class CountingApp:
    """WSGI middleware that counts requests per path (status polls, extends)."""

    def __init__(self, app):
        self.app = app
        self.registry = app.registry
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            path = environ.get("PATH_INFO", "")
            self.counts[path] = self.counts.get(path, 0) + 1
        return self.app(environ, start_response)

    def count(self, path: str) -> int:
        with self.lock:
            return self.counts.get(path, 0)


class Live:
    """The app on a loopback port, and what a test needs to look inside it."""

    def __init__(self, app: CountingApp, base: str):
        self.app = app
        self.base = base
        self.setup = app.registry.session_expiry

    @property
    def store(self):
        return self.setup.store

    def url(self, path: str) -> str:
        return self.base + path

    def record(self, context):
        """The session record of the browser context (from its cookies)."""
        cookie = self.cookie(context, "session")
        return self.store.get(read_session_key(self.setup.cookie_secret, cookie))

    def ticket(self, context):
        return read_ticket(self.setup.ticket_secret, self.cookie(context, "auth_tkt"))

    @staticmethod
    def cookie(context, name):
        return next((c["value"] for c in context.cookies() if c["name"] == name), None)


@pytest.fixture
def live(database_url):
    """``live(**settings)``: serve the app with session_expiry.* overrides."""
    started = []

    def start(**overrides) -> Live:
        settings = dict(get_appsettings(str(ROOT / "testing.ini")))
        settings.update({"sqlalchemy.url": database_url, "session_expiry.secret": SECRET})
        settings.update({f"session_expiry.{k}": v for k, v in {**SHORT, **overrides}.items()})
        app = CountingApp(make_app({}, **settings))
        port, stop = serve(app)
        started.append((app, stop))
        return Live(app, f"http://127.0.0.1:{port}")

    yield start
    for app, stop in started:
        stop()
        app.registry.session_expiry.store.close()


@pytest.fixture
def context(chromium):
    context = chromium.new_context()
    yield context
    context.close()


def sign_in(page, live: Live, username="alice", path="/workspace"):
    """Sign in through the login form and land on ``path``."""
    page.goto(live.url(f"/login?came_from={path}"))
    page.fill("#username", username)
    page.fill("#password", username + "-password")
    page.click("button[type=submit]")
    page.wait_for_url(live.url(path))
