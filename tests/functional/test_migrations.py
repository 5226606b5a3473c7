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

from session_expiry.settings import Policy
from session_expiry.stores import SessionRecord
from session_expiry.stores.sql import SqlStore
from tests.conftest import ROOT, login, seed_users

BIN = Path(sys.executable).parent
TABLES = {"users", "sessions", "session_events", "session_outbox", "session_refusals",
          "session_failures"}
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


def test_sessions_holds_open_sessions_and_no_index_covers_a_column_a_touch_changes(
        empty_database):
    command.upgrade(alembic_config(empty_database), "head")
    engine = sa.create_engine(empty_database)
    inspector = sa.inspect(engine)
    indexed = {column for index in inspector.get_indexes("sessions")
               for column in index["column_names"]}
    assert "sweep_at" in indexed and "user_id" in indexed
    assert not indexed & {"last_seen", "idle_deadline", "data", "version"}  # touches stay HOT
    columns = {column["name"] for column in inspector.get_columns("sessions")}
    assert not columns & {"ended_at", "end_reason"}, "an ended session leaves the table"
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            options = conn.execute(sa.text(
                "SELECT reloptions FROM pg_class WHERE relname = 'sessions'")).scalar()
        assert "fillfactor=70" in options
    engine.dispose()


def test_tombstones_move_into_their_events_and_back(empty_database):
    """0006: an ended session's record moves from ``sessions`` into its ``ended`` event (an
    event whose tombstone was pruned keeps what it knows); a downgrade moves it back."""
    config = alembic_config(empty_database)
    command.upgrade(config, "0005")
    engine = sa.create_engine(empty_database)
    start, end = datetime(2027, 1, 15, 8, 0, tzinfo=UTC), datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    session = sa.text(
        "INSERT INTO sessions (key, user_id, data, version, created, last_seen, idle_deadline, "
        "absolute_deadline, sweep_at, ended_at, end_reason, ip, user_agent) VALUES "
        "(:key, '1', :data, 0, :start, :seen, :idle, :absolute, :idle, :ended, :reason, "
        "'192.0.2.1', 'UA')")
    event = sa.text("INSERT INTO session_events (session_key, user_id, kind, reason, at, "
                    "duration) VALUES (:key, '1', 'ended', 'revoked', :end, 3600)")
    seen = datetime(2027, 1, 15, 8, 50, tzinfo=UTC)
    idle, absolute = datetime(2027, 1, 15, 9, 10, tzinfo=UTC), datetime(2027, 1, 15, 16, 0,
                                                                         tzinfo=UTC)
    record = {"start": start, "seen": seen, "idle": idle, "absolute": absolute}
    try:
        with engine.begin() as conn:
            conn.execute(session, {"key": "open", "data": "{}", "ended": None, "reason": None,
                                   **record})
            conn.execute(session, {"key": "ended", "data": None, "ended": end,
                                   "reason": "revoked", **record})
            conn.execute(event, {"key": "ended", "end": end})
            conn.execute(event, {"key": "pruned", "end": end})  # its tombstone is gone
        command.upgrade(config, "head")
        store = SqlStore(engine, Policy(), clock=lambda: 0)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT key FROM sessions")).all() == [("open",)]
        ended, pruned = store.get("ended"), store.get("pruned")
        assert ended == SessionRecord(
            key="ended", user_id="1", created=int(start.timestamp()),
            last_seen=int(seen.timestamp()), idle_deadline=int(idle.timestamp()),
            absolute_deadline=int(absolute.timestamp()), ended_at=int(end.timestamp()),
            end_reason="revoked", ip="192.0.2.1", user_agent="UA")
        assert pruned == SessionRecord(
            key="pruned", user_id="1", created=int(start.timestamp()),
            last_seen=int(end.timestamp()), idle_deadline=int(end.timestamp()),
            absolute_deadline=int(end.timestamp()), ended_at=int(end.timestamp()),
            end_reason="revoked")
        assert store.get("open").is_open
        store.close()
        command.downgrade(config, "0005")
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, end_reason FROM sessions "
                                        "ORDER BY key")).all()
        assert [tuple(row) for row in rows] == [("ended", "revoked"), ("open", None),
                                                ("pruned", "revoked")]
    finally:
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
