"""``session-users``: manage users from the ini; and the Alembic migrations up and down."""
from __future__ import annotations

import io
import logging
import re

import pytest
from alembic import command
from argon2 import PasswordHasher
from pyramid.paster import get_appsettings
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.orm import Session
from webtest import TestApp

from session_expiry.clock import FrozenClock
from session_expiry.settings import Policy
from session_expiry.stores import session_key
from session_expiry.stores.redis import RedisStore
from session_expiry.stores.redis.layout import GROUP
from session_expiry.stores.sql import SqlStore, engine_for, session_events, session_outbox
from session_expiry_demo import make_app, models
from session_expiry_demo.models import User
from session_expiry_demo.scripts import users
from tests.conftest import (
    FETCH,
    ROOT,
    alembic_config,
    clear_redis,
    clear_sessions,
    login,
    migrate,
)
from tests.postgres import free_port


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


#: The ini files ``main`` set logging up from, in the current test.
logging_calls: list[str] = []


@pytest.fixture(autouse=True)
def no_logging_setup(monkeypatch):
    """fileConfig would reconfigure (and disable) the test run's loggers; record the call."""
    logging_calls.clear()
    monkeypatch.setattr(users, "setup_logging", logging_calls.append)


@pytest.fixture
def make_ini(tmp_path):
    """Writes a copy of testing.ini on ``url`` with ``settings`` of [app:main] replaced or added."""
    made = []

    def make(url: str, **settings) -> str:
        text = (ROOT / "testing.ini").read_text()
        for key, value in {"sqlalchemy.url": url, **settings}.items():
            text, count = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", f"{key} = {value}", text)
            if not count:
                text = text.replace("[app:main]\n", f"[app:main]\n{key} = {value}\n", 1)
        path = tmp_path / f"testing-{len(made)}.ini"
        path.write_text(text)
        made.append(path)
        return str(path)

    return make


@pytest.fixture
def ini(db_url, make_ini) -> str:
    """A copy of testing.ini (the memory store) whose database is a fresh migrated SQLite file."""
    return make_ini(db_url)


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


def add_user(url: str, username: str, password: str, admin: bool = False) -> str:
    """Adds the user; returns their id as the sessions keep it."""
    engine = create_engine(url)
    try:
        with Session(engine) as db, db.begin():
            user = User(username=username, is_admin=admin)
            user.set_password(password)
            db.add(user)
            db.flush()
            return str(user.id)
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


def run_in_a_transaction(url: str, argv: list[str]) -> tuple[users.Target | None, str]:
    out = io.StringIO()
    engine = create_engine(url)
    try:
        with Session(engine) as db, db.begin():
            target = users.run(users.parser().parse_args(["x.ini", *argv]), db, {}, out=out)
    finally:
        engine.dispose()
    return target, out.getvalue()


@pytest.mark.parametrize(("argv", "stdin_text", "message"), [
    pytest.param(["add", "carol", "--password-stdin"], "carol-password\n", "added carol\n",
                 id="add"),
    pytest.param(["add", "dave", "--admin", "--password-stdin"], "dave-password\n",
                 "added dave (admin)\n", id="add_admin"),
    pytest.param(["grant-admin", "erin"], "", "erin: grant-admin\n", id="grant_admin"),
    pytest.param(["list"], "", "erin\n", id="list"),
])
def test_run_reports_what_it_did(db_url, stdin, argv, stdin_text, message):
    add_user(db_url, "erin", "erin-password")
    stdin(stdin_text)
    target, out = run_in_a_transaction(db_url, argv)
    assert out == message
    assert target is None, "these commands leave the sessions alone"


@pytest.mark.parametrize(("argv", "done", "removed"), [
    pytest.param(["passwd", "erin", "--password-stdin"], "password of erin changed", False,
                 id="passwd"),
    pytest.param(["revoke-admin", "erin"], "erin: revoke-admin", False, id="revoke_admin"),
    pytest.param(["remove", "erin"], "removed erin", True, id="remove"),
    pytest.param(["sessions", "erin"], None, False, id="sessions"),
    pytest.param(["end-sessions", "erin"], None, False, id="end_sessions"),
])
def test_run_names_the_user_whose_sessions_end_after_the_commit(db_url, stdin, argv, done,
                                                                 removed):
    erin = add_user(db_url, "erin", "erin-password")
    add_user(db_url, "fred", "fred-password")
    stdin("new-erin-password\n")
    target, out = run_in_a_transaction(db_url, argv)
    assert out == "", "nothing is reported before the sessions are settled"
    assert target == users.Target(erin, "erin", done, removed)


def test_run_takes_a_user_id_for_the_sessions_of_a_removed_user(db_url):
    target, _ = run_in_a_transaction(db_url, ["end-sessions", "--user-id", "0042"])
    assert target == users.Target("42", "user 42")


@pytest.mark.parametrize("argv", [
    pytest.param(["passwd", "nobody", "--password-stdin"], id="passwd"),
    pytest.param(["grant-admin", "nobody"], id="grant_admin"),
    pytest.param(["revoke-admin", "nobody"], id="revoke_admin"),
    pytest.param(["remove", "nobody"], id="remove"),
    pytest.param(["sessions", "nobody"], id="sessions"),
    pytest.param(["end-sessions", "nobody"], id="end_sessions"),
])
def test_unknown_user_exits_2_with_a_message(make_ini, db_url, stdin, capsys, argv):
    add_user(db_url, "carol", "carol-password")
    stdin("long-enough-password\n")
    code, out, err = run_main([make_ini(db_url, **SQL), *argv], capsys)
    assert code == 2
    assert "session-users: no user 'nobody'" in err
    assert out == ""
    assert sorted(users_in(db_url)) == ["carol"]


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


@pytest.mark.parametrize("argv", [
    pytest.param([], id="no_command"),
    pytest.param(["remove"], id="remove_whom"),
    pytest.param(["sessions"], id="sessions_of_whom"),
    pytest.param(["end-sessions", "carol", "--user-id", "3"], id="name_and_id"),
    pytest.param(["end-sessions", "--user-id", "carol"], id="id_not_a_number"),
])
def test_missing_or_contradicting_arguments_are_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        users.parser().parse_args(["x.ini", *argv])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# -- the users' sessions ---------------------------------------------------------------------

#: The script's clock in these tests: FrozenClock's default start, 2027-01-15 08:00 UTC.
T0 = 1_800_000_000
#: testing.ini on the SQL store, the script's clock standing still at ``T0``.
SQL = {"session.type": "expiry:sql",
       "session_expiry.clock": "session_expiry.clock.FrozenClock"}
#: testing.ini on the Redis store (``session.url`` is the test's), the same clock.
REDIS = {**SQL, "session.type": "expiry:redis"}
#: The durations of testing.ini, for the sessions the tests open in the store themselves.
POLICY = Policy(idle_timeout=1200, absolute_timeout=8 * 3600, warn_before=120,
                touch_interval=120, secret="x" * 40)
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


@pytest.fixture(scope="module")
def postgres_users_url(postgres) -> str:
    url = postgres.create_database("unit_users_script")
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def shared_kind(request) -> str:
    """The shared store the script reaches: SQL on SQLite, SQL on PostgreSQL, or Redis."""
    return request.param


@pytest.fixture
def app_url(shared_kind, request) -> str:
    """The application database (the users; the SQL store's tables too): empty. The Redis
    store keeps its users in SQLite."""
    if shared_kind != "postgresql":
        return request.getfixturevalue("db_url")
    url = request.getfixturevalue("postgres_users_url")
    clear_sessions(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users"))
    engine.dispose()
    return url


@pytest.fixture
def redis_url(redis_server) -> str:
    """The suite's Redis server, emptied."""
    clear_redis(redis_server.url)
    return redis_server.url


@pytest.fixture
def shared_ini(shared_kind, app_url, make_ini, request) -> str:
    if shared_kind == "redis":
        return make_ini(app_url, **REDIS, **{"session.url": request.getfixturevalue("redis_url")})
    return make_ini(app_url, **SQL)


@pytest.fixture
def store(shared_kind, app_url, request):
    """The test's store (SQL on its database, or Redis), for opening sessions and looking at
    them."""
    if shared_kind == "redis":
        store = RedisStore(request.getfixturevalue("redis_url"), POLICY, FrozenClock(T0))
    else:
        store = SqlStore(engine_for(app_url), POLICY, FrozenClock(T0))
    yield store
    store.close()


@pytest.fixture
def ended_events(caplog) -> list[tuple[str, str]]:
    """(short session key, reason) of every ``SessionEnded``, from its log line."""
    caplog.set_level(logging.INFO, logger="session_expiry.events")

    class Events(list):
        def __call__(self):
            return [re.search(r"session=(\w+) user=\w+ reason=(\w+)", record.getMessage())
                    .groups() for record in caplog.records
                    if record.name == "session_expiry.events"]

    return Events()


def sign_in(store, user_id: str, name: str, at: int = T0 - 600, **where) -> str:
    key = session_key(f"{user_id}-{name}")
    store.open(key, user_id, at, **where)
    return key


def event_rows(store) -> list[tuple[str, str, bool]]:
    """(key, reason, notified) of each end event the store holds: the SQL store's event rows
    (notified: out of the outbox), the Redis store's stream entries (notified: acknowledged
    in the consumer group)."""
    if isinstance(store, RedisStore):
        return redis_event_rows(store)
    with store.engine.connect() as conn:
        sent = ~session_events.c.id.in_(select(session_outbox.c.event_id))
        rows = conn.execute(select(session_events.c.session_key, session_events.c.reason, sent)
                            .order_by(session_events.c.session_key))
        return [tuple(row) for row in rows]


def redis_event_rows(store: RedisStore) -> list[tuple[str, str, bool]]:
    client, rows = store.redis.client, []
    for partition in store.layout.partitions:
        entries = client.xrange(partition.events)
        if not entries:
            continue
        pending = {entry["message_id"] for entry in
                   client.xpending_range(partition.events, GROUP, "-", "+", 1000)}
        rows += [(fields["key"], fields["reason"], event_id not in pending)
                 for event_id, fields in entries]
    return sorted(rows)


ENDING = [
    pytest.param(["passwd", "carol", "--password-stdin"], "password of carol changed",
                 lambda carol: carol.check_password("a-brand-new-password")
                 and not carol.check_password("carol-password"), id="passwd"),
    pytest.param(["revoke-admin", "carol"], "carol: revoke-admin",
                 lambda carol: carol.is_admin is False, id="revoke_admin"),
    pytest.param(["remove", "carol"], "removed carol", lambda carol: carol is None, id="remove"),
]


@pytest.mark.parametrize(("argv", "done", "changed"), ENDING)
def test_a_change_ends_exactly_that_users_open_sessions_once_with_reason_revoked(
        shared_ini, app_url, store, ended_events, stdin, capsys, argv, done, changed):
    carol = add_user(app_url, "carol", "carol-password", admin=True)
    alice = add_user(app_url, "alice", "alice-password")
    laptop = sign_in(store, carol, "laptop")
    phone = sign_in(store, carol, "phone")
    earlier = sign_in(store, carol, "earlier", at=T0 - 3000)
    store.end(earlier, "logged_out", T0 - 2000)
    alices = sign_in(store, alice, "laptop")
    stdin("a-brand-new-password\n")

    code, out, err = run_main([shared_ini, *argv], capsys)

    assert code == 0, err
    assert out == f"{done}; 2 sessions ended\n"
    assert err == ""
    assert changed(users_in(app_url).get("carol"))
    for key in (laptop, phone):
        record = store.get(key)
        assert (record.end_reason, record.ended_at) == ("revoked", T0)
        assert store.load_data(key) is None, "an ended session keeps no data"
    assert store.get(earlier).end_reason == "logged_out", "an ended session stays as it ended"
    assert store.get(alices).is_open, "another user's session stays open"
    assert sorted(ended_events()) == sorted([(laptop[:12], "revoked"), (phone[:12], "revoked")])
    assert event_rows(store) == sorted([(earlier, "logged_out", True), (laptop, "revoked", True),
                                        (phone, "revoked", True)]), "one event row each, sent"


@pytest.mark.parametrize(("argv", "done", "changed"), ENDING)
def test_the_change_is_committed_before_the_first_session_ends(
        shared_ini, app_url, store, stdin, capsys, argv, done, changed):
    """Each SessionEnded finds the change already visible to any other connection."""
    carol = add_user(app_url, "carol", "carol-password", admin=True)
    sign_in(store, carol, "laptop")
    sign_in(store, carol, "phone")
    seen = []

    class LookAtTheUser(logging.Handler):
        def emit(self, record):
            seen.append(changed(users_in(app_url).get("carol")))

    handler = LookAtTheUser(level=logging.INFO)
    logger = logging.getLogger("session_expiry.events")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    stdin("a-brand-new-password\n")
    try:
        code, _, err = run_main([shared_ini, *argv], capsys)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert code == 0, err
    assert seen == [True, True]


def test_end_sessions_ends_them_once_and_prints_the_count(shared_ini, app_url, store,
                                                          ended_events, capsys):
    carol = add_user(app_url, "carol", "carol-password")
    alice = add_user(app_url, "alice", "alice-password")
    keys = [sign_in(store, carol, name) for name in ("laptop", "phone", "tablet")]
    alices = sign_in(store, alice, "laptop")

    assert run_main([shared_ini, "end-sessions", "carol"], capsys) == (
        0, "carol: 3 sessions ended\n", "")
    assert [store.get(key).end_reason for key in keys] == ["revoked"] * 3
    assert store.get(alices).is_open
    assert users_in(app_url)["carol"].check_password("carol-password"), "the user stays as is"

    assert run_main([shared_ini, "end-sessions", "carol"], capsys) == (
        0, "carol: 0 sessions ended\n", ""), "a second run finds nothing left to end"
    assert sorted(ended_events()) == sorted((key[:12], "revoked") for key in keys)
    assert [reason for _, reason, _ in event_rows(store)] == ["revoked"] * 3


def test_one_session_ended_is_said_in_the_singular(shared_ini, app_url, store, capsys):
    sign_in(store, add_user(app_url, "carol", "carol-password"), "laptop")
    assert run_main([shared_ini, "revoke-admin", "carol"], capsys) == (
        0, "carol: revoke-admin; 1 session ended\n", "")


def test_sessions_lists_the_open_sessions_most_recently_seen_first(
        shared_ini, app_url, store, capsys):
    carol = add_user(app_url, "carol", "carol-password")
    alice = add_user(app_url, "alice", "alice-password")
    laptop = sign_in(store, carol, "laptop", at=T0 - 3 * 3600, ip="203.0.113.5",
                     user_agent=FIREFOX)
    store.touch(laptop, T0 - 60)  # seen a minute ago: 19 minutes left
    phone = sign_in(store, carol, "phone", at=T0 - 600, ip="2001:db8::7", user_agent=IPHONE)
    forgotten = sign_in(store, carol, "forgotten", at=T0 - 7200)  # overdue, not swept yet
    ended = sign_in(store, carol, "ended", at=T0 - 300)
    store.end(ended, "logged_out", T0 - 200)
    sign_in(store, alice, "laptop")

    code, out, err = run_main([shared_ini, "sessions", "carol"], capsys)

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{laptop[:12]}  started 2027-01-15 05:00 UTC  last seen 2027-01-15 07:59 UTC  "
        "19 min left  203.0.113.5  Firefox 132 on Ubuntu",
        f"{phone[:12]}  started 2027-01-15 07:50 UTC  last seen 2027-01-15 07:50 UTC  "
        "10 min left  2001:db8::7  Mobile Safari 17 on iOS 17",
    ]  # the forgotten one is over already: it ends at its next request or sweep
    assert all(store.get(key).is_open for key in (laptop, phone, forgotten)), \
        "listing ends nothing"


def test_sessions_of_a_user_without_any(shared_ini, app_url, store, capsys):
    add_user(app_url, "carol", "carol-password")
    sign_in(store, add_user(app_url, "alice", "alice-password"), "laptop")
    assert run_main([shared_ini, "sessions", "carol"], capsys) == (0, "no open sessions\n", "")


def test_passwd_signs_out_a_browser_signed_in_through_the_app(shared_ini, app_url, stdin, capsys):
    add_user(app_url, "carol", "carol-password")
    add_user(app_url, "alice", "alice-password")
    settings = dict(get_appsettings(shared_ini))
    settings["session_expiry.clock"] = FrozenClock(T0)
    wsgi = make_app({}, **settings)
    try:
        carols, alices = TestApp(wsgi), TestApp(wsgi)
        login(carols, "carol")
        login(alices, "alice")
        assert carols.get("/api/notes", headers=FETCH).status_int == 200

        code, listed, err = run_main([shared_ini, "sessions", "carol"], capsys)
        assert (code, err, len(listed.splitlines())) == (0, "", 1)
        stdin("a-brand-new-password\n")
        assert run_main([shared_ini, "passwd", "carol", "--password-stdin"], capsys) == (
            0, "password of carol changed; 1 session ended\n", "")

        refused = carols.get("/api/notes", headers=FETCH, status=401)
        assert refused.json["reason"] == "revoked"
        assert alices.get("/api/notes", headers=FETCH).status_int == 200
    finally:
        wsgi.registry.session_expiry.store.close()


# -- the memory store: out of this process's reach ---------------------------------------------

@pytest.mark.parametrize("command", ["sessions", "end-sessions"])
def test_sessions_commands_refuse_the_memory_store_with_exit_2(ini, db_url, capsys, command):
    add_user(db_url, "carol", "carol-password")
    code, out, err = run_main([ini, command, "carol"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"session-users: {command} needs a shared store "
                          "(session.type = expiry:sql or expiry:redis)")
    assert "inside the server process" in err
    assert "/admin/sessions" in err and "Revoke every session" in err


@pytest.mark.parametrize(("argv", "done", "changed"), ENDING)
def test_a_change_with_the_memory_store_is_made_and_says_how_to_end_the_sessions(
        ini, db_url, stdin, capsys, argv, done, changed):
    carol = add_user(db_url, "carol", "carol-password", admin=True)
    stdin("a-brand-new-password\n")
    code, out, err = run_main([ini, *argv], capsys)
    assert code == 0
    assert out == f"{done}\n", "no count: nothing was ended"
    assert changed(users_in(db_url).get("carol"))
    assert err.startswith("session-users: note: carol's open sessions were not ended: "
                          "with session.type = expiry:memory")
    assert "stay signed in" in err and "restart the server" in err
    assert f"/admin/sessions/revoke?user={carol}" in err
    if argv[0] == "remove":  # the name no longer finds the user in the report
        assert "Revoke every session of carol?" in err
        assert "/admin/sessions?user=carol" not in err
    else:
        assert '/admin/sessions?user=carol → "Revoke every session of carol…"' in err


# -- the session database out of reach --------------------------------------------------------

@pytest.fixture(params=["sqlite_missing_directory", "sqlite_without_tables", "postgresql_down",
                        "redis_down"])
def unreachable_sessions(request, tmp_path) -> dict:
    """Settings of a shared store whose database (``session.url``) cannot be used: SQL, or a
    Redis that nothing listens for."""
    if request.param == "redis_down":
        return {**REDIS, "session.url": f"redis://127.0.0.1:{free_port()}/0"}
    url = {
        "sqlite_missing_directory": f"sqlite:///{tmp_path}/missing/sessions.sqlite",
        "sqlite_without_tables": f"sqlite:///{tmp_path}/empty.sqlite",
        "postgresql_down": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere",
    }[request.param]
    return {**SQL, "session.url": url}


def test_passwd_with_the_session_database_down_changes_it_and_exits_1(
        make_ini, db_url, unreachable_sessions, stdin, capsys):
    add_user(db_url, "carol", "carol-password")
    ini = make_ini(db_url, **unreachable_sessions)
    stdin("a-brand-new-password\n")
    code, out, err = run_main([ini, "passwd", "carol", "--password-stdin"], capsys)
    assert code == 1
    assert out == "password of carol changed\n"
    assert err.startswith("session-users: carol's open sessions were not ended: the session "
                          "store cannot be reached: ")
    assert err.endswith("The change is committed; once the store is back, run: "
                        f"session-users {ini} end-sessions carol\n")
    assert "Traceback" not in err
    assert users_in(db_url)["carol"].check_password("a-brand-new-password")


@pytest.mark.parametrize("command", ["sessions", "end-sessions"])
def test_sessions_commands_with_the_session_database_down_exit_1(
        make_ini, db_url, unreachable_sessions, capsys, command):
    add_user(db_url, "carol", "carol-password")
    code, out, err = run_main([make_ini(db_url, **unreachable_sessions), command, "carol"],
                              capsys)
    assert (code, out) == (1, "")
    assert err.startswith("session-users: the session store cannot be reached: ")
    assert "Traceback" not in err


def test_a_removed_users_sessions_are_ended_by_id_once_the_database_is_back(
        make_ini, db_url, tmp_path, capsys):
    sessions_url = f"sqlite:///{tmp_path / 'sessions.sqlite'}"
    migrate(sessions_url)
    store = SqlStore(engine_for(sessions_url), POLICY, FrozenClock(T0))
    try:
        carol = add_user(db_url, "carol", "carol-password")
        keys = [sign_in(store, carol, name) for name in ("laptop", "phone")]
        down = make_ini(db_url, **SQL, **{"session.url": f"sqlite:///{tmp_path}/gone/s.sqlite"})
        code, out, err = run_main([down, "remove", "carol"], capsys)
        assert (code, out) == (1, "removed carol\n")
        assert f"run: session-users {down} end-sessions --user-id {carol}\n" in err
        assert "carol" not in users_in(db_url)
        assert all(store.get(key).is_open for key in keys)

        back = make_ini(db_url, **SQL, **{"session.url": sessions_url})
        code, out, _ = run_main([back, "sessions", "--user-id", carol], capsys)
        assert (code, len(out.splitlines())) == (0, 2)
        assert run_main([back, "end-sessions", "--user-id", carol], capsys) == (
            0, f"user {carol}: 2 sessions ended\n", "")
        assert [store.get(key).end_reason for key in keys] == ["revoked", "revoked"]
    finally:
        store.close()


def test_a_removed_users_redis_sessions_are_ended_by_id_once_redis_is_back(
        make_ini, db_url, redis_url, capsys):
    store = RedisStore(redis_url, POLICY, FrozenClock(T0))
    try:
        carol = add_user(db_url, "carol", "carol-password")
        keys = [sign_in(store, carol, name) for name in ("laptop", "phone")]
        down = make_ini(db_url, **REDIS, **{"session.url": f"redis://127.0.0.1:{free_port()}/0"})
        code, out, err = run_main([down, "remove", "carol"], capsys)
        assert (code, out) == (1, "removed carol\n")
        assert f"run: session-users {down} end-sessions --user-id {carol}\n" in err
        assert "carol" not in users_in(db_url)
        assert all(store.get(key).is_open for key in keys)

        back = make_ini(db_url, **REDIS, **{"session.url": redis_url})
        code, out, _ = run_main([back, "sessions", "--user-id", carol], capsys)
        assert (code, len(out.splitlines())) == (0, 2)
        assert run_main([back, "end-sessions", "--user-id", carol], capsys) == (
            0, f"user {carol}: 2 sessions ended\n", "")
        assert [store.get(key).end_reason for key in keys] == ["revoked", "revoked"]
        assert event_rows(store) == sorted((key, "revoked", True) for key in keys)
    finally:
        store.close()


# -- migrations ------------------------------------------------------------------------------

def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_upgrade_downgrade_and_upgrade_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrations.sqlite'}"
    config = alembic_config(url)

    command.upgrade(config, "heads")
    assert "users" in tables(url)
    engine = create_engine(url)
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
    assert {"id", "username", "password_hash", "is_admin", "created"} <= columns

    command.downgrade(config, "base")
    assert "users" not in tables(url)

    command.upgrade(config, "heads")
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
