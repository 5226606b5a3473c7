"""Alembic owns the schema: upgrade and downgrade on SQLite and PostgreSQL, from the inis."""
import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from pyramid.paster import get_app
from webtest import TestApp

from tests.conftest import ROOT, login, seed_users

BIN = Path(sys.executable).parent
TABLES = {"users", "sessions", "session_events", "session_outbox", "session_refusals"}
_databases = itertools.count(1)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.sqlite'}"
    postgres = request.getfixturevalue("postgres")
    return postgres.create_database(f"migrate_{next(_databases)}")


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database):
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert tables(empty_database) == TABLES
    command.downgrade(config, "0001")
    assert tables(empty_database) == {"users"}
    command.downgrade(config, "base")
    assert tables(empty_database) == set()
    command.upgrade(config, "head")
    assert tables(empty_database) == TABLES


def test_the_sweeper_and_outbox_indexes_are_partial_and_touch_columns_are_not_indexed(
        empty_database):
    command.upgrade(alembic_config(empty_database), "head")
    engine = sa.create_engine(empty_database)
    inspector = sa.inspect(engine)
    indexed = {column for index in inspector.get_indexes("sessions")
               for column in index["column_names"]}
    assert "sweep_at" in indexed and "user_id" in indexed
    assert not indexed & {"last_seen", "idle_deadline", "data", "version"}  # touches stay HOT
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            options = conn.execute(sa.text(
                "SELECT reloptions FROM pg_class WHERE relname = 'sessions'")).scalar()
            definitions = dict(conn.execute(sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
                "('ix_sessions_sweep_at', 'ix_sessions_user_id')")).all())
        assert "fillfactor=70" in options
        assert all("WHERE (ended_at IS NULL)" in definitions[name]  # ending adds no entry
                   for name in ("ix_sessions_sweep_at", "ix_sessions_user_id"))
    engine.dispose()


def test_the_outbox_moves_to_its_own_table_and_back_with_the_pending_events(empty_database):
    """0004: the events not notified yet are the outbox's rows; a downgrade marks the
    others sent (at the time they happened) and leaves the pending ones unmarked."""
    config = alembic_config(empty_database)
    command.upgrade(config, "0003")
    engine = sa.create_engine(empty_database)
    event = sa.text("INSERT INTO session_events (id, session_key, user_id, kind, reason, at, "
                    "duration, notified_at) VALUES (:id, :key, '1', 'ended', 'revoked', "
                    ":at, 5, :notified)")
    at = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            conn.execute(event, {"id": 1, "key": "sent", "at": at, "notified": at})
            conn.execute(event, {"id": 2, "key": "pending", "at": at, "notified": None})
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT event_id FROM session_outbox")).all() == [(2,)]
            assert "notified_at" not in {column["name"] for column in
                                         sa.inspect(conn).get_columns("session_events")}
        command.downgrade(config, "0003")
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT session_key, notified_at IS NULL "
                                        "FROM session_events ORDER BY id")).all()
        assert [(key, bool(pending)) for key, pending in rows] == [("sent", False),
                                                                    ("pending", True)]
        assert "session_outbox" not in tables(empty_database)
    finally:
        engine.dispose()


@pytest.mark.parametrize("ini", ["development.ini", "production.ini"])
def test_alembic_runs_from_the_shipped_inis_with_the_url_from_the_environment(
        ini, tmp_path, postgres):
    url = postgres.create_database(f"cli_{ini.split('.')[0]}")
    copy = tmp_path / ini
    text = (ROOT / ini).read_text()
    # Leave the URL out of the ini, as production.ini does: the environment fills it.
    copy.write_text("\n".join(line for line in text.splitlines()
                              if not line.startswith("sqlalchemy.url")))
    (tmp_path / "migrations").symlink_to(ROOT / "migrations")
    done = subprocess.run([str(BIN / "alembic"), "-c", str(copy), "upgrade", "head"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "SQLALCHEMY_URL": url})
    assert done.returncode == 0, done.stderr
    assert tables(url) == TABLES


def test_alembic_migrates_a_separate_session_database_too(tmp_path, postgres, monkeypatch):
    app_url = postgres.create_database(f"split_app_{next(_databases)}")
    session_url = postgres.create_database(f"split_sessions_{next(_databases)}")
    ini = tmp_path / "split.ini"
    ini.write_text((ROOT / "production.ini").read_text())
    (tmp_path / "migrations").symlink_to(ROOT / "migrations")
    done = subprocess.run([str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "SQLALCHEMY_URL": app_url,
                               "SESSION_URL": session_url})
    assert done.returncode == 0, done.stderr
    assert tables(app_url) == TABLES and tables(session_url) == TABLES
    monkeypatch.setenv("SQLALCHEMY_URL", app_url)
    monkeypatch.setenv("SESSION_URL", session_url)
    monkeypatch.setenv("SESSION_EXPIRY_SECRET", "s" * 48)
    text = ini.read_text().replace("session.secure = true", "session.secure = false")
    text = text.replace("session.key = __Host-session", "session.key = session")
    ini.write_text(text)  # WebTest speaks plain HTTP: no Secure, so no __Host- cookies
    # The app keeps its users in one database and its sessions in the other.
    seed_users(app_url)
    app = TestApp(get_app(str(ini)))
    try:
        login(app)
        assert app.get("/api/notes", headers={"Accept": "application/json"}).status_int == 200
    finally:
        app.app.registry.session_expiry.store.close()
    count = "SELECT count(*) FROM sessions"
    for url, expected in ((session_url, 1), (app_url, 0)):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text(count)).scalar() == expected
        engine.dispose()


def test_a_removed_users_id_is_never_given_to_a_new_user(empty_database):
    command.upgrade(alembic_config(empty_database), "head")
    engine = sa.create_engine(empty_database)
    insert = sa.text("INSERT INTO users (username, password_hash, is_admin, created) "
                     "VALUES (:name, 'x', false, CURRENT_TIMESTAMP) RETURNING id")
    try:
        with engine.begin() as conn:
            conn.execute(insert, {"name": "first"})
            removed = conn.execute(insert, {"name": "removed"}).scalar()
            conn.execute(sa.text("DELETE FROM users WHERE id = :id"), {"id": removed})
            newcomer = conn.execute(insert, {"name": "newcomer"}).scalar()
        assert newcomer > removed
    finally:
        engine.dispose()
