"""A farm on one machine: app servers and sweepers as real processes, one real PostgreSQL."""
from __future__ import annotations

import http.cookiejar
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, SECRET, migrate, seed_users
from tests.postgres import free_port

BIN = Path(sys.executable).parent
_databases = itertools.count(1)


@pytest.fixture
def farm_url(postgres) -> str:
    """A fresh migrated PostgreSQL database with the test users."""
    url = postgres.create_database(f"farm_{next(_databases)}")
    migrate(url)
    seed_users(url)
    return url


def write_ini(directory: Path, url: str, port: int = 0, **settings) -> Path:
    """testing.ini with the SQL store on ``url``, listening on ``port``."""
    text = (ROOT / "testing.ini").read_text()
    text = text.replace("session.type = expiry:memory", "session.type = expiry:sql")
    text = text.replace("listen = 127.0.0.1:6544", f"listen = 127.0.0.1:{port}")
    overrides = {"sqlalchemy.url": url, "session_expiry.secret": SECRET}
    overrides.update({f"session_expiry.{key}": value for key, value in settings.items()})
    lines = [f"{key} = {value}" for key, value in overrides.items()]
    text = "\n".join(line for line in text.splitlines()
                     if line.partition("=")[0].strip() not in overrides)
    text = text.replace("[app:main]", "[app:main]\n" + "\n".join(lines), 1)
    path = directory / f"farm-{port or 'sweeper'}.ini"
    path.write_text(text)
    return path


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode()[-2000:] if process.stderr else ""
            raise RuntimeError(f"the server exited with {process.returncode}:\n{errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds}s")


@pytest.fixture
def servers(tmp_path, farm_url):
    """Start app servers (``pserve``) on free loopback ports; stop them afterwards."""
    started = []

    def start(**settings) -> str:
        port = free_port()
        ini = write_ini(tmp_path, farm_url, port, **settings)
        process = subprocess.Popen([str(BIN / "pserve"), str(ini)], cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(process)
        wait_for_port(port, process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=10)


class Browser:
    """One browser: a cookie jar shared by every server it talks to, no redirects followed."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def request(self, url, data=None, headers=None):
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        request = urllib.request.Request(url, data=body, headers={
            "Accept": "application/json", **(headers or {})})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, url, **kw):
        status, headers, body = self.request(url, **kw)
        return status, headers, json.loads(body) if body else None

    def login(self, base, username="alice"):
        self.request(base + "/login", headers={"Accept": "text/html"})
        status, _, _ = self.request(base + "/login", data={
            "username": username, "password": username + "-password",
            "csrf_token": self.cookie("csrf_token")}, headers={"Accept": "text/html"})
        assert status == 303

    def logout(self, base):
        status, _, _ = self.request(base + "/logout", data={
            "csrf_token": self.cookie("csrf_token")}, headers={"Accept": "text/html"})
        assert status == 303


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def run_sweeper(ini: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "session-sweeper"), str(ini), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)
