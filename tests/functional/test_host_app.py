"""The add-on as an adopter gets it: the wheel, built from this tree and installed (not
editable) into a fresh virtualenv beside a small host app (tests/hostapp: its own users,
login view, Jinja2 layout with the figures snippet, a protected page, a JSON endpoint).
The tables are made both ways (the host's Alembic; session-expiry-db), and the host app is
driven with WebTest on the memory store, on SQLite and on Redis (the ``[redis]`` extra), then
swept by session-sweeper."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, clear_redis

HOST = ROOT / "tests" / "hostapp"
SESSION_TABLES = {"sessions", "session_events", "session_outbox", "session_refusals",
                  "session_failures"}
#: What only the demo needs: none of it may come with the add-on.
DEMO_PACKAGES = {"argon2-cffi", "waitress", "pyramid-tm", "zope-sqlalchemy", "psycopg",
                 "session-expiry-demo"}


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=600, check=False, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the add-on's wheel and WebTest (to drive the host app)."""
    place = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the wheel is made of: no build/ left by an earlier build here.
    source = place / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md",
                 "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", place / "dist", source)
    wheel = next((place / "dist").glob("session_expiry-*.whl"))
    run(sys.executable, "-m", "venv", place / "venv")
    pip = (place / "venv" / "bin" / "python", "-m", "pip", "--disable-pip-version-check")
    run(*pip, "install", "-q", wheel)
    # What the wheel alone brought (WebTest, installed next to drive the host app, brings
    # waitress of its own).
    (place / "installed.json").write_text(run(*pip, "list", "--format=json").stdout)
    run(*pip, "install", "-q", "WebTest")
    run(*pip, "install", "-q", f"{wheel}[redis]")  # the Redis store's extra, as an adopter adds it
    return place / "venv"


@pytest.fixture
def redis_url(redis_server) -> str:
    """The suite's Redis server, emptied."""
    clear_redis(redis_server.url)
    return redis_server.url


def host_ini(tmp_path: Path, store: str, url: str, session_url: str | None = None) -> Path:
    """The host's ini on ``store``, its database at ``url``; ``session_url``: the store's own
    (the Redis store's server)."""
    text = (HOST / "host.ini").read_text()
    if session_url is not None:
        text = text.replace("session.type = {store}",
                            "session.type = {store}\nsession.url = " + session_url)
    text = text.replace("{store}", store).replace("{url}", url)
    text = text.replace("%(here)s/alembic", str(HOST / "alembic"))
    path = tmp_path / "host.ini"
    path.write_text(text)
    return path


def in_venv(venv: Path, command: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """A command of the virtualenv, with the host app importable and nothing of this tree."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(HOST)
    return run(venv / "bin" / command, *args, cwd=cwd, env=env)


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_wheel_brings_the_add_on_and_nothing_of_the_demo(venv, tmp_path):
    listed = (venv.parent / "installed.json").read_text()
    installed = {package["name"].lower().replace("_", "-") for package in json.loads(listed)}
    assert "session-expiry" in installed
    assert installed & DEMO_PACKAGES == set()
    scripts = {path.name for path in (venv / "bin").iterdir()}
    assert {"session-expiry-db", "session-sweeper"} <= scripts
    assert "session-users" not in scripts
    where = in_venv(venv, "python", "-c", "import session_expiry; print(session_expiry.__file__)",
                    cwd=tmp_path).stdout
    assert where.startswith(str(venv)), "the installed wheel, not this tree"
    done = subprocess.run([venv / "bin" / "python", "-c", "import session_expiry_demo"],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode != 0 and "No module named 'session_expiry_demo'" in done.stderr


def test_the_hosts_alembic_takes_the_add_ons_tables_with_one_change(venv, tmp_path):
    url = f"sqlite:///{tmp_path / 'host.sqlite'}"
    ini = host_ini(tmp_path, "expiry:sql", url)
    for _ in range(2):  # a second run has nothing to do
        in_venv(venv, "alembic", "-c", ini, "upgrade", "heads", cwd=tmp_path)
    assert tables(url) == SESSION_TABLES | {"notes", "alembic_version"}
    heads = in_venv(venv, "alembic", "-c", ini, "heads", cwd=tmp_path).stdout
    assert "(session_expiry)" in heads and "(hostapp)" in heads


def test_session_expiry_db_makes_the_tables_of_a_host_without_alembic(venv, tmp_path):
    url = f"sqlite:///{tmp_path / 'host.sqlite'}"
    ini = host_ini(tmp_path, "expiry:sql", url)
    done = in_venv(venv, "session-expiry-db", ini, "upgrade", cwd=tmp_path)
    assert done.stdout.startswith("session tables up to date: se0001")
    assert tables(url) == SESSION_TABLES | {"session_expiry_alembic_version"}


def make_tables(venv: Path, ini: Path, tables_by: str | None, cwd: Path) -> None:
    """The session tables made the way ``tables_by`` says: the add-on's command
    (``session-expiry-db``), or the host's Alembic (``alembic``); None: no tables."""
    if tables_by == "session-expiry-db":
        in_venv(venv, "session-expiry-db", ini, "upgrade", cwd=cwd)
    elif tables_by == "alembic":
        in_venv(venv, "alembic", "-c", ini, "upgrade", "heads", cwd=cwd)


@pytest.mark.parametrize(("store", "tables_by"), [
    ("expiry:memory", None), ("expiry:sql", "session-expiry-db"), ("expiry:sql", "alembic"),
    ("expiry:redis", None)])
def test_the_host_app_signs_in_tells_the_page_and_ends_idle_sessions(venv, tmp_path, store,
                                                                     tables_by, request):
    url = f"sqlite:///{tmp_path / 'host.sqlite'}"
    session_url = request.getfixturevalue("redis_url") if store == "expiry:redis" else None
    ini = host_ini(tmp_path, store, url, session_url)
    make_tables(venv, ini, tables_by, tmp_path)
    facts = json.loads(in_venv(venv, "python", HOST / "drive.py", ini, "story",
                               cwd=tmp_path).stdout)
    assert facts["anonymous_page"] == [303, "http://localhost/login"]
    assert facts["anonymous_fetch"][0] == 401
    assert facts["anonymous_fetch"][1]["error"] == "not_authenticated"
    assert facts["sign_in"] == 303
    assert facts["page"] == {"status": 200, "expires_in": "1200", "layout": True,
                             "figures": True}
    assert facts["data"] == [200, {"user": "carol", "items": [1, 2, 3]}, "1200"]
    status, body = facts["idle_fetch"]
    assert (status, body["error"], body["reason"]) == (401, "session_expired", "idle_timeout")
    status, location = facts["idle_page"]
    assert status == 303
    assert location.startswith("http://localhost/session-expired?reason=idle_timeout")
    assert facts["expired_page"] == {"status": 200, "says": True, "why": True,
                                     "sign_in_again": True}
    assert facts["guesses"] == [400, 400, 400, 429], "the host's sign-in is throttled"


@pytest.mark.parametrize(("store", "tables_by"), [
    ("expiry:sql", "session-expiry-db"), ("expiry:sql", "alembic"), ("expiry:redis", None)])
def test_session_sweeper_ends_the_hosts_overdue_sessions(venv, tmp_path, store, tables_by,
                                                         request):
    url = f"sqlite:///{tmp_path / 'host.sqlite'}"
    session_url = request.getfixturevalue("redis_url") if store == "expiry:redis" else None
    ini = host_ini(tmp_path, store, url, session_url)
    make_tables(venv, ini, tables_by, tmp_path)
    facts = json.loads(in_venv(venv, "python", HOST / "drive.py", ini, "overdue",
                               cwd=tmp_path).stdout)
    assert facts == {"sign_in": 303}
    swept = in_venv(venv, "session-sweeper", ini, "--once", cwd=tmp_path).stdout
    assert "ended=1 (idle_timeout=1)" in swept
    again = in_venv(venv, "session-sweeper", ini, "--once", cwd=tmp_path).stdout
    assert "ended=0" in again
