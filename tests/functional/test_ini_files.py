"""The shipped ini files start as they are."""
import subprocess
import sys
import time
import urllib.request

import pytest
from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_app, get_appsettings
from webtest import TestApp

from tests.conftest import PAGE, ROOT, clear_redis, migrate, seed_users
from tests.farm.conftest import Browser
from tests.wsgi_server import serve


def test_development_ini_as_shipped_starts_and_serves_the_login_page():
    app = get_app(str(ROOT / "development.ini"))
    port, stop = serve(app)
    base = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(base + "/login", timeout=5) as response:
            body = response.read().decode()
            assert response.status == 200
            assert 'name="csrf_token"' in body and "Sign in" in body
            assert "csrf_token=" in response.headers["Set-Cookie"]
    finally:
        stop()
        app.registry.session_expiry.store.close()


def test_development_ini_uses_the_memory_store_and_the_documented_timeouts():
    settings = get_appsettings(str(ROOT / "development.ini"))
    assert settings["session.type"] == "expiry:memory"
    assert settings["session_expiry.idle_timeout"] == "20m"


def test_production_ini_takes_secret_and_database_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SESSION_EXPIRY_SECRET", "p" * 48)
    monkeypatch.setenv("SQLALCHEMY_URL", f"sqlite:///{tmp_path / 'prod.sqlite'}")
    app = get_app(str(ROOT / "production.ini"))
    try:
        assert app.registry.settings["session_expiry.secret"] == "p" * 48
        assert app.registry.settings["sqlalchemy.url"].endswith("prod.sqlite")
        assert app.registry.session_expiry.policy.cookie_secure is True
    finally:
        app.registry.session_expiry.store.close()


def test_production_cookies_carry_the_host_prefix_secure_and_no_domain(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'prod.sqlite'}"
    migrate(url)
    seed_users(url)
    monkeypatch.setenv("SESSION_EXPIRY_SECRET", "p" * 48)
    monkeypatch.setenv("SQLALCHEMY_URL", url)
    app = get_app(str(ROOT / "production.ini"))
    try:
        browser = TestApp(app, extra_environ={"wsgi.url_scheme": "https", "HTTP_HOST": "localhost",
                                              "SERVER_PORT": "443"})
        browser.get("/login")
        token = browser.cookies["__Host-csrf_token"].strip('"')
        answer = browser.post("/login", {"username": "alice", "password": "alice-password",
                                         "csrf_token": token},
                               headers={**PAGE, "Origin": "https://localhost"})
        assert answer.status_int == 303
        set_cookies = answer.headers.getall("Set-Cookie")
        names = {line.split("=", 1)[0] for line in set_cookies}
        assert names == {"__Host-session", "__Host-auth_tkt", "__Host-csrf_token"}
        for line in set_cookies:
            attributes = [part.strip().lower() for part in line.split(";")[1:]]
            assert "secure" in attributes and "path=/" in attributes, line
            assert not any(part.startswith("domain=") for part in attributes), line
        assert browser.get("/api/notes", headers={"Accept": "application/json"}).json["user"] \
            == "alice"
    finally:
        app.registry.session_expiry.store.close()


def test_production_ini_without_a_secret_stops_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.delenv("SESSION_EXPIRY_SECRET", raising=False)
    monkeypatch.setenv("SQLALCHEMY_URL", f"sqlite:///{tmp_path / 'prod.sqlite'}")
    with pytest.raises(ConfigurationError, match=r"session_expiry\.secret.*SESSION_EXPIRY_SECRET"):
        get_app(str(ROOT / "production.ini"))


def test_an_ini_with_a_contradiction_stops_start_up(tmp_path):
    ini = tmp_path / "bad.ini"
    text = (ROOT / "development.ini").read_text()
    ini.write_text(text.replace("session.samesite = Lax",
                                "session.samesite = Lax\nsession.timeout = 600"))
    with pytest.raises(ConfigurationError, match=r"session\.timeout"):
        get_app(str(ini))


def story(base: str, store) -> None:
    """Sign in, see the seconds left, let the session expire, sign in again, sign out."""
    browser = Browser()
    browser.login(base, "alice")
    status, headers, body = browser.json(base + "/api/notes")
    # Real time: whole seconds, rounded down, a few seconds at most after signing in.
    assert status == 200 and 1195 <= int(headers["Session-Expires-In"]) <= 1200

    store.sweep(int(time.time()) + 1200)  # twenty minutes later, nobody came back
    status, _, body = browser.json(base + "/api/notes")
    assert (status, body["reason"]) == (401, "idle_timeout")
    status, headers, _ = browser.request(base + "/workspace", headers={
        "Sec-Fetch-Mode": "navigate", "Accept": "text/html"})
    assert status == 303 and "reason=idle_timeout" in headers["Location"]
    browser.login(base, "alice")
    assert browser.json(base + "/api/notes")[0] == 200
    browser.logout(base)
    status, _, body = browser.json(base + "/api/notes")
    assert (status, body["reason"]) == (401, "logged_out")


@pytest.mark.parametrize("store_line", [
    "session.type = expiry:memory",
    "session.type = expiry:sql",
    "session.type = expiry:redis\nsession.url = {redis_url}",
], ids=["memory", "sql", "redis"])
def test_development_ini_and_a_copy_with_the_other_store_pass_the_same_story(
        tmp_path, store_line, request):
    if "{redis_url}" in store_line:  # the suite's Redis server, emptied
        redis_url = request.getfixturevalue("redis_server").url
        clear_redis(redis_url)
        store_line = store_line.format(redis_url=redis_url)
    text = (ROOT / "development.ini").read_text()
    assert "session.type = expiry:memory" in text
    (tmp_path / "development.ini").write_text(
        text.replace("session.type = expiry:memory", store_line))
    (tmp_path / "migrations").symlink_to(ROOT / "migrations")
    (tmp_path / "var").mkdir()
    ini = str(tmp_path / "development.ini")
    bin_dir = f"{sys.executable.rsplit('/', 1)[0]}"
    for command in (["alembic", "-c", ini, "upgrade", "heads"],
                    ["session-users", ini, "add", "alice", "--password-stdin"]):
        subprocess.run([f"{bin_dir}/{command[0]}", *command[1:]], input="alice-password\n",
                       check=True, capture_output=True, text=True, timeout=120)
    app = get_app(ini)
    port, stop = serve(app)
    base = f"http://127.0.0.1:{port}"
    try:
        story(base, app.registry.session_expiry.store)
    finally:
        stop()
        app.registry.session_expiry.store.close()
