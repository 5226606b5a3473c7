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
from session_expiry.stores.sql import SqlStore
from tests.conftest import ROOT, alembic_config, clear_redis, login, seed_users
from tests.postgres import free_port

BIN = Path(sys.executable).parent
TABLES = {"users", "sessions", "session_events", "session_outbox", "session_refusals",
          "session_failures"}
_databases = itertools.count(1)


def release_0_1(url: str, revision: str = "0007") -> None:
    """The database at ``url`` as session-expiry 0.1.0's migrations left it."""
    config = Config()
    config.set_main_option("script_location", str(ROOT / "tests" / "data" / "migrations-0.1"))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, revision)


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
    command.upgrade(config, "heads")
    assert tables(empty_database) == TABLES
    command.downgrade(config, "session_expiry@base")
    assert tables(empty_database) == {"users"}
    command.downgrade(config, "base")
    assert tables(empty_database) == set()
    command.upgrade(config, "heads")
    assert tables(empty_database) == TABLES


def test_sessions_holds_open_sessions_and_no_index_covers_a_column_a_touch_changes(
        empty_database):
    command.upgrade(alembic_config(empty_database), "heads")
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
    done = subprocess.run([str(BIN / "alembic"), "-c", str(copy), "upgrade", "heads"],
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
    done = subprocess.run([str(BIN / "alembic"), "-c", str(ini), "upgrade", "heads"],
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


def test_alembic_with_the_redis_store_migrates_the_app_database_and_leaves_redis_alone(
        tmp_path, redis_server):
    """production.ini with ``SESSION_URL=redis://…``: ``alembic upgrade heads`` migrates
    ``sqlalchemy.url`` (the users) and takes the session URL for what it is, a Redis server
    that needs no tables, not a second database."""
    clear_redis(redis_server.url)
    app_url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    ini = tmp_path / "production.ini"
    ini.write_text((ROOT / "production.ini").read_text().replace(
        "session.type = expiry:sql", "session.type = expiry:redis"))
    assert "session.type = expiry:redis" in ini.read_text()
    (tmp_path / "migrations").symlink_to(ROOT / "migrations")
    done = subprocess.run([str(BIN / "alembic"), "-c", str(ini), "upgrade", "heads"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "SQLALCHEMY_URL": app_url,
                               "SESSION_URL": redis_server.url,
                               "SESSION_EXPIRY_SECRET": "s" * 48})
    assert done.returncode == 0, done.stderr
    assert "users" in tables(app_url)
    with redis_server.client() as client:
        assert client.dbsize() == 0, "nothing written to Redis"


def test_a_removed_users_id_is_never_given_to_a_new_user(empty_database):
    command.upgrade(alembic_config(empty_database), "heads")
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


# -- a database of session-expiry 0.1.0 --------------------------------------------------------

def schema(url: str) -> dict:
    """Each session table's columns, keys and indexes, as the database reflects them."""
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    try:
        return {table: {
            "columns": {column["name"]: (str(column["type"]), column["nullable"])
                        for column in inspector.get_columns(table)},
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted((u["name"], tuple(u["column_names"]))
                             for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]),
                               tuple(i.get("include_columns") or ()))
                              for i in inspector.get_indexes(table)),
        } for table in sorted(TABLES - {"users"})}
    finally:
        engine.dispose()


def versions(url: str, table: str = "alembic_version") -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars())  # noqa: S608
    finally:
        engine.dispose()


def test_the_add_ons_branch_makes_the_tables_release_0_1_left(empty_database, request):
    """Two ways to the same tables: a database made by 0.1.0 and one made by this release."""
    old = empty_database
    new = (request.getfixturevalue("postgres").create_database(f"migrate_{next(_databases)}")
           if old.startswith("postgresql") else old.replace(".sqlite", "-new.sqlite"))
    release_0_1(old)
    command.upgrade(alembic_config(new), "heads")
    assert schema(new) == schema(old)


def test_a_database_of_release_0_1_upgrades_without_loss(empty_database):
    release_0_1(empty_database)
    seed_users(empty_database)
    store = SqlStore(sa.create_engine(empty_database), Policy(secret="x" * 40), clock=lambda: 0)
    now = int(datetime.now(UTC).timestamp())
    try:
        store.open("a" * 64, "1", now)
        store.save_data("a" * 64, {"draft": "kept"})
        store.open("b" * 64, "2", now)
        store.end("b" * 64, "logged_out", now + 5)
        store.count_refusal("ticket_mismatch", now)
        store.flush_refusals()
    finally:
        store.close()

    command.upgrade(alembic_config(empty_database), "heads")

    assert versions(empty_database) == {"0007", "se0001"}
    assert tables(empty_database) == TABLES
    store = SqlStore(sa.create_engine(empty_database), Policy(secret="x" * 40), clock=lambda: 0)
    try:
        assert store.load_data("a" * 64).values() == {"draft": "kept"}
        assert store.get("b" * 64).end_reason == "logged_out"
        assert store.summary(now + 10).refused_by_reason["ticket_mismatch"] == 1
    finally:
        store.close()
    engine = sa.create_engine(empty_database)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 3
    engine.dispose()


# -- session-expiry-db: the tables for a host app without Alembic --------------------------------

def store_ini(tmp_path, url: str) -> Path:
    """testing.ini on the SQL store at ``url``, without the demo's [alembic] section."""
    text = (ROOT / "testing.ini").read_text()
    text = text.replace("session.type = expiry:memory", "session.type = expiry:sql")
    text = "\n".join(f"sqlalchemy.url = {url}" if line.startswith("sqlalchemy.url") else line
                     for line in text.splitlines())
    path = tmp_path / "host.ini"
    path.write_text(text)
    return path


def session_expiry_db(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "session-expiry-db"), *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_session_expiry_db_creates_the_tables_and_a_second_run_changes_nothing(
        empty_database, tmp_path):
    ini = str(store_ini(tmp_path, empty_database))
    for _ in range(2):
        done = session_expiry_db(ini, "upgrade")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "session tables up to date: se0001 (head)\n"
    assert tables(empty_database) == (TABLES - {"users"}) | {"session_expiry_alembic_version"}
    assert versions(empty_database, "session_expiry_alembic_version") == {"se0001"}
    done = session_expiry_db(ini, "current")
    assert (done.returncode, done.stdout) == (0, "session tables at: se0001 (head)\n")


def test_session_expiry_db_after_the_hosts_alembic_made_the_tables_only_records_them(
        empty_database, tmp_path):
    command.upgrade(alembic_config(empty_database), "heads")
    before = schema(empty_database)
    done = session_expiry_db(str(store_ini(tmp_path, empty_database)), "upgrade")
    assert done.returncode == 0, done.stderr
    assert schema(empty_database) == before
    assert versions(empty_database, "session_expiry_alembic_version") == {"se0001"}


def test_session_expiry_db_refuses_a_database_with_only_some_of_the_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'partial.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sessions (key VARCHAR(64) PRIMARY KEY)"))
    engine.dispose()
    done = session_expiry_db(str(store_ini(tmp_path, url)), "upgrade")
    assert done.returncode == 2
    assert "holds the session tables ['sessions'] but not all of them" in done.stderr
    assert "Traceback" not in done.stderr


def test_session_expiry_db_says_when_the_database_cannot_be_reached(tmp_path):
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    done = session_expiry_db(str(store_ini(tmp_path, url)), "upgrade")
    assert done.returncode == 1
    assert done.stderr.startswith("session-expiry-db: the session database cannot be reached")


def test_session_expiry_db_with_bad_settings_names_them(tmp_path):
    ini = store_ini(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite'}")
    ini.write_text(ini.read_text().replace("[app:main]", "[app:main]\nsession_expiry.idle = 5m"))
    done = session_expiry_db(str(ini), "upgrade")
    assert done.returncode == 2
    assert "session_expiry.idle: is not a session-expiry setting" in done.stderr


def test_session_expiry_db_with_the_redis_store_says_so_without_a_traceback(tmp_path,
                                                                           redis_server):
    """The Redis store has no tables: the command says so plainly (it is not "the database
    cannot be reached", exit 1), and never takes the Redis URL for a database's."""
    ini = store_ini(tmp_path, f"sqlite:///{tmp_path / 'app.sqlite'}")
    ini.write_text(ini.read_text().replace(
        "session.type = expiry:sql",
        f"session.type = expiry:redis\nsession.url = {redis_server.url}"))
    clear_redis(redis_server.url)
    done = session_expiry_db(str(ini), "upgrade")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == ("session tables: none needed; session.type = expiry:redis keeps "
                           "the sessions in Redis\n")
    assert not (tmp_path / "app.sqlite").exists() or tables(
        f"sqlite:///{tmp_path / 'app.sqlite'}") == set()
    with redis_server.client() as client:
        assert client.dbsize() == 0, "nothing written to Redis"
