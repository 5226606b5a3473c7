"""``session-users``: manage users from the ini; and the Alembic migrations up and down."""
from __future__ import annotations

import io
import re

import pytest
from alembic import command
from alembic.config import Config
from argon2 import PasswordHasher
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from session_expiry.app import models
from session_expiry.app.models import User
from session_expiry.app.scripts import users
from tests.conftest import ROOT, migrate


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    """Argon2 at its cheapest: these tests are about the script, not the hash's cost."""
    monkeypatch.setattr(models, "_hasher",
                        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def db_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'users.sqlite'}"
    migrate(url)
    return url


@pytest.fixture
def ini(tmp_path, db_url, monkeypatch) -> str:
    """A copy of testing.ini whose database is a fresh migrated SQLite file."""
    text = (ROOT / "testing.ini").read_text()
    text, count = re.subn(r"(?m)^sqlalchemy\.url\s*=.*$", f"sqlalchemy.url = {db_url}", text)
    assert count == 1
    path = tmp_path / "testing.ini"
    path.write_text(text)
    # fileConfig would reconfigure (and disable) the test run's loggers; record the call instead.
    logging_calls.clear()
    monkeypatch.setattr(users, "setup_logging", logging_calls.append)
    return str(path)


#: The ini files ``main`` set logging up from, in the current test.
logging_calls: list[str] = []


@pytest.fixture
def stdin(monkeypatch):
    def feed(text: str):
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
    return feed


def users_in(url: str) -> dict[str, User]:
    engine = create_engine(url)
    try:
        with Session(engine) as db:
            found = {user.username: user for user in db.scalars(select(User))}
            db.expunge_all()
            return found
    finally:
        engine.dispose()


def add_user(url: str, username: str, password: str, admin: bool = False) -> None:
    engine = create_engine(url)
    try:
        with Session(engine) as db, db.begin():
            user = User(username=username, is_admin=admin)
            user.set_password(password)
            db.add(user)
    finally:
        engine.dispose()


def run_main(argv, capsys):
    code = users.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_add_reads_the_password_from_stdin_and_stores_a_hash(ini, db_url, stdin, capsys):
    stdin("carol-password\n")
    code, _, err = run_main([ini, "add", "carol", "--password-stdin"], capsys)
    assert code == 0, err
    carol = users_in(db_url)["carol"]
    assert carol.is_admin is False
    assert carol.password_hash != "carol-password"
    assert carol.check_password("carol-password")
    assert not carol.check_password("wrong-password")
    assert logging_calls == [ini]


def test_add_admin(ini, db_url, stdin, capsys):
    stdin("dave-password\n")
    code, _, err = run_main([ini, "add", "dave", "--admin", "--password-stdin"], capsys)
    assert code == 0, err
    assert users_in(db_url)["dave"].is_admin is True


def test_list_prints_the_users_to_stdout_in_order_with_admin_flag(ini, db_url, stdin, capsys):
    stdin("carol-password\n")
    assert users.main([ini, "add", "carol", "--password-stdin"]) == 0
    add_user(db_url, "bert", "bert-password", admin=True)
    capsys.readouterr()
    code, out, _ = run_main([ini, "list"], capsys)
    assert code == 0
    assert out.splitlines() == ["bert  admin", "carol"]


def test_grant_and_revoke_admin(ini, db_url, capsys):
    add_user(db_url, "carol", "carol-password")
    assert users.main([ini, "grant-admin", "carol"]) == 0
    assert users_in(db_url)["carol"].is_admin is True
    assert users.main([ini, "revoke-admin", "carol"]) == 0
    assert users_in(db_url)["carol"].is_admin is False


def test_passwd_changes_the_password(ini, db_url, stdin, capsys):
    add_user(db_url, "carol", "carol-password")
    stdin("a-brand-new-password\n")
    code, _, err = run_main([ini, "passwd", "carol", "--password-stdin"], capsys)
    assert code == 0, err
    carol = users_in(db_url)["carol"]
    assert carol.check_password("a-brand-new-password")
    assert not carol.check_password("carol-password")


@pytest.mark.parametrize(("argv", "stdin_text", "message"), [
    pytest.param(["add", "carol", "--password-stdin"], "carol-password\n", "added carol\n",
                 id="add"),
    pytest.param(["add", "dave", "--admin", "--password-stdin"], "dave-password\n",
                 "added dave (admin)\n", id="add_admin"),
    pytest.param(["passwd", "erin", "--password-stdin"], "new-erin-password\n",
                 "password of erin changed\n", id="passwd"),
    pytest.param(["grant-admin", "erin"], "", "erin: grant-admin\n", id="grant_admin"),
    pytest.param(["revoke-admin", "erin"], "", "erin: revoke-admin\n", id="revoke_admin"),
    pytest.param(["list"], "", "erin\n", id="list"),
])
def test_run_reports_what_it_did(db_url, stdin, argv, stdin_text, message):
    add_user(db_url, "erin", "erin-password")
    stdin(stdin_text)
    out = io.StringIO()
    engine = create_engine(db_url)
    try:
        with Session(engine) as db, db.begin():
            users.run(users.parser().parse_args(["x.ini", *argv]), db, {}, out=out)
    finally:
        engine.dispose()
    assert out.getvalue() == message


@pytest.mark.parametrize("argv", [
    pytest.param(["passwd", "nobody", "--password-stdin"], id="passwd"),
    pytest.param(["grant-admin", "nobody"], id="grant_admin"),
    pytest.param(["revoke-admin", "nobody"], id="revoke_admin"),
])
def test_unknown_user_exits_2_with_a_message(ini, db_url, stdin, capsys, argv):
    stdin("long-enough-password\n")
    code, _, err = run_main([ini, *argv], capsys)
    assert code == 2
    assert "session-users:" in err and "nobody" in err
    assert "nobody" not in users_in(db_url)


def test_duplicate_user_exits_2_and_keeps_the_first(ini, db_url, stdin, capsys):
    add_user(db_url, "carol", "carol-password")
    stdin("other-password\n")
    code, _, err = run_main([ini, "add", "carol", "--admin", "--password-stdin"], capsys)
    assert code == 2
    assert "exists already" in err
    carol = users_in(db_url)["carol"]
    assert carol.check_password("carol-password")
    assert carol.is_admin is False


@pytest.mark.parametrize("password", ["", "short", "7-chars"])
def test_short_password_exits_2_and_adds_nobody(ini, db_url, stdin, capsys, password):
    stdin(password + "\n")
    code, _, err = run_main([ini, "add", "carol", "--password-stdin"], capsys)
    assert code == 2
    assert "8 characters" in err
    assert "carol" not in users_in(db_url)


def test_short_new_password_keeps_the_old_one(ini, db_url, stdin, capsys):
    add_user(db_url, "carol", "carol-password")
    stdin("short\n")
    code, _, err = run_main([ini, "passwd", "carol", "--password-stdin"], capsys)
    assert code == 2 and "8 characters" in err
    assert users_in(db_url)["carol"].check_password("carol-password")


def test_seed_demo_adds_demo_users_once(ini, db_url, capsys):
    assert users.main([ini, "seed-demo"]) == 0
    found = users_in(db_url)
    assert found["alice"].check_password("alice") and not found["alice"].is_admin
    assert found["admin"].check_password("admin") and found["admin"].is_admin
    before = {name: user.password_hash for name, user in found.items()}
    assert users.main([ini, "seed-demo"]) == 0
    after = users_in(db_url)
    assert sorted(after) == ["admin", "alice"], "a second run adds nobody"
    assert {name: user.password_hash for name, user in after.items()} == before


def test_seed_demo_keeps_an_existing_alice(db_url):
    add_user(db_url, "alice", "alice-own-password")
    out = io.StringIO()
    engine = create_engine(db_url)
    try:
        with Session(engine) as db, db.begin():
            users.run(users.parser().parse_args(["x.ini", "seed-demo"]), db,
                      {"sqlalchemy.url": db_url}, out=out)
    finally:
        engine.dispose()
    assert out.getvalue() == "added demo user admin (password 'admin')\n"
    assert users_in(db_url)["alice"].check_password("alice-own-password")


@pytest.mark.parametrize("url", [
    "postgresql://db.example/app", "postgresql+psycopg://u:p@db/app", "mysql://db/app", "",
])
def test_seed_demo_refuses_a_database_that_is_not_sqlite(url):
    args = users.parser().parse_args(["production.ini", "seed-demo"])

    class NoDatabase:
        def __getattr__(self, name):
            raise AssertionError("seed-demo touched the database before refusing")

    with pytest.raises(users.UsageError, match="SQLite"):
        users.run(args, NoDatabase(), {"sqlalchemy.url": url}, out=io.StringIO())


def test_missing_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        users.parser().parse_args(["x.ini"])
    assert exit_info.value.code == 2


# -- migrations ------------------------------------------------------------------------------

def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    return config


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_upgrade_downgrade_and_upgrade_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrations.sqlite'}"
    config = alembic_config(url)

    command.upgrade(config, "head")
    assert "users" in tables(url)
    engine = create_engine(url)
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
    assert {"id", "username", "password_hash", "is_admin", "created"} <= columns

    command.downgrade(config, "base")
    assert "users" not in tables(url)

    command.upgrade(config, "head")
    assert "users" in tables(url)
    engine = create_engine(url)
    try:
        with Session(engine) as db, db.begin():
            user = User(username="frank")
            user.set_password("frank-password")
            db.add(user)
        with Session(engine) as db:
            assert db.scalar(select(User.username)) == "frank"
    finally:
        engine.dispose()
