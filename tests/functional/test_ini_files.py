"""The shipped ini files start as they are."""
import threading
import urllib.request

import pytest
from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_app, get_appsettings
from waitress.server import create_server

from tests.conftest import ROOT


def serve(app):
    """Serve ``app`` with waitress on a free loopback port; returns (base_url, stop)."""
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    port = server.effective_port
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop():
        server.close()
        thread.join(timeout=5)

    return f"http://127.0.0.1:{port}", stop


def test_development_ini_as_shipped_starts_and_serves_the_login_page():
    app = get_app(str(ROOT / "development.ini"))
    base, stop = serve(app)
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
