"""The Beaker backend: Beaker's namespace API over our store, keyed by a hash of the id."""
from __future__ import annotations

import shutil
import time

import pytest

from session_expiry.clock import FrozenClock
from session_expiry.settings import Policy
from session_expiry.stores import EMPTY, SessionData, StoreUnavailable, session_key
from session_expiry.stores.beaker import JudgedSession, StoreNamespace, from_beaker, to_beaker
from session_expiry.stores.memory import MemoryStore
from session_expiry.stores.sql import SqlStore, engine_for
from tests.conftest import migrate

T0 = 1_800_000_000
POLICY = Policy(secret="x" * 40)
RAW_ID = "0123456789abcdef0123456789abcdef"
KEY = session_key(RAW_ID)



class SpyStore:
    """Delegates to a real store and records the key of every call."""

    def __init__(self, store):
        self.store = store
        self.calls = []

    def __getattr__(self, name):
        method = getattr(self.store, name)

        def spy(key, *args, **kwargs):
            self.calls.append((name, key))
            return method(key, *args, **kwargs)

        return spy


LOADED = SessionData.of({"a": 1, "_creation_time": float(T0)}, 3)


class UnavailableStore:
    """A store whose database went down after the request read the session."""

    def __init__(self, loaded=LOADED):
        self.loaded = loaded
        self.saves = []

    def load_data(self, key):
        return self.loaded

    def save_data(self, key, values, base=EMPTY):
        self.saves.append((key, values, base))
        raise StoreUnavailable("connection refused")


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapter") / "template.sqlite"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["memory", "sqlite"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def store(kind, request, tmp_path):
    if kind == "memory":
        store = MemoryStore(POLICY, FrozenClock(T0))
    else:
        path = tmp_path / "sessions.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        store = SqlStore(engine_for(f"sqlite:///{path}"), POLICY, FrozenClock(T0))
    yield store
    store.close()


def values(store, key=KEY):
    data = store.load_data(key)
    return None if data is None else data.values()


# -- the wire format ----------------------------------------------------------------------

DATA = [
    {},
    {"cart": [1, 2, 3]},
    {"name": "Zoë ✓", "nested": {"a": None, "b": True, "c": 1.5}},
    {"_creation_time": 1_800_000_000.25, "flash": ["saved"]},
]


@pytest.mark.parametrize("data", DATA)
def test_to_beaker_adds_an_accessed_time_and_leaves_the_data_alone(data):
    value = to_beaker(data)
    # An _accessed_time tells Beaker the session was loaded, not created.
    assert value.pop("_accessed_time") == data.get("_creation_time", 0)
    assert value == data


@pytest.mark.parametrize("data", DATA)
def test_to_beaker_and_from_beaker_round_trip(data):
    assert from_beaker(to_beaker(data)) == data


def test_from_beaker_strips_beakers_bookkeeping():
    value = {"_accessed_time": 1.5, "_domain": "example.com", "_path": "/",
             "_creation_time": 1.0, "user": "alice"}
    assert from_beaker(value) == {"_creation_time": 1.0, "user": "alice"}


def test_beaker_hands_the_namespace_its_dict_as_it_is():
    """No serializer, zlib or base64 between Beaker and the store: it keeps JSON itself."""
    session = JudgedSession({}, use_cookies=False, type="expiry:memory",
                            store=MemoryStore(POLICY, FrozenClock(T0)))
    data = {"cart": [1], "name": "Zoë"}
    assert session._encrypt_data(data) == data
    assert session._decrypt_data(data) is data


# -- the namespace ------------------------------------------------------------------------------

def test_namespace_refuses_to_be_built_without_a_store():
    with pytest.raises(ValueError, match="session_expiry"):
        StoreNamespace(namespace=RAW_ID)


def test_namespace_uses_the_sha256_of_the_raw_id(store):
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    assert namespace.key == KEY
    assert namespace.key != RAW_ID
    assert len(namespace.key) == 64


def test_namespace_of_unknown_session_raises_key_error(store):
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    with pytest.raises(KeyError):
        namespace["session"]
    assert "session" not in namespace
    assert not namespace.has_key("session")
    assert namespace.keys() == []


def test_namespace_of_ended_session_raises_key_error(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    store.end(KEY, "logged_out", T0 + 1)
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    with pytest.raises(KeyError):
        namespace["session"]
    assert "session" not in namespace


def test_namespace_reads_an_open_session(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"cart": [1, 2]})
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    assert namespace["session"] == {"cart": [1, 2], "_accessed_time": 0}
    assert "session" in namespace
    assert namespace.keys() == ["session"]


def test_namespace_knows_only_the_session_item(store):
    store.open(KEY, "42", T0)
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    with pytest.raises(KeyError):
        namespace["other"]
    assert "other" not in namespace


def test_namespace_writes_through_save_data_under_the_hashed_key(store):
    store.open(KEY, "42", T0)
    spy = SpyStore(store)
    namespace = StoreNamespace(namespace=RAW_ID, store=spy)
    namespace["session"] = {"cart": [3], "_accessed_time": 9.0}
    assert ("save_data", KEY) in spy.calls
    assert all(key == KEY for _, key in spy.calls), spy.calls
    assert all(key != RAW_ID for _, key in spy.calls)
    assert values(store) == {"cart": [3]}
    assert store.get(RAW_ID) is None, "the raw id is never a key"


def test_namespace_set_value_writes_like_setitem(store):
    store.open(KEY, "42", T0)
    StoreNamespace(namespace=RAW_ID, store=store).set_value("session", {"a": 1})
    assert values(store) == {"a": 1}


def test_namespace_reads_under_the_hashed_key(store):
    spy = SpyStore(store)
    namespace = StoreNamespace(namespace=RAW_ID, store=spy)
    with pytest.raises(KeyError):
        namespace["session"]
    assert spy.calls and all(key == KEY for _, key in spy.calls)


def test_namespace_write_to_an_ended_session_does_not_resurrect_it(store):
    store.open(KEY, "42", T0)
    store.end(KEY, "revoked", T0 + 1)
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    namespace["session"] = {"back": True}
    assert store.load_data(KEY) is None
    assert store.get(KEY).end_reason == "revoked"


def test_namespace_write_for_an_unknown_session_creates_nothing(store):
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    namespace["session"] = {"planted": True}
    assert store.get(KEY) is None
    assert store.load_data(KEY) is None


def test_namespace_remove_purges_the_data(store):
    """Beaker's ``remove()``: the namespace's whole contents go, read or not."""
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    namespace.remove()
    assert values(store) == {}


def test_namespace_remove_after_a_read_purges_the_data(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    namespace["session"]
    namespace.remove()
    assert values(store) == {}


def test_namespace_delete_purges_the_data(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"secret": "data"})
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    del namespace["session"]
    assert values(store) == {}


# -- the merge base ------------------------------------------------------------------------------

def test_namespace_starts_with_an_empty_merge_base(store):
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    assert namespace.loaded == EMPTY


def test_namespace_keeps_what_it_loaded_as_the_merge_base(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"cart": [1]})
    namespace = StoreNamespace(namespace=RAW_ID, store=store)
    namespace["session"]
    assert namespace.loaded == store.load_data(KEY)
    assert namespace.loaded.version > 0


def test_namespace_saves_its_changes_from_what_it_loaded(store):
    store.open(KEY, "42", T0)
    store.save_data(KEY, {"a": 0, "b": 0})
    first = StoreNamespace(namespace=RAW_ID, store=store)
    second = StoreNamespace(namespace=RAW_ID, store=store)
    first["session"], second["session"]  # two requests read the session
    first["session"] = {"a": 1, "b": 0}
    second["session"] = {"a": 0, "b": 2}
    assert values(store) == {"a": 1, "b": 2}, "neither request's change is lost"


def test_namespace_hands_the_merge_base_to_the_store():
    stub = UnavailableStore(SessionData.of({"a": 1}, 7))
    namespace = StoreNamespace(namespace=RAW_ID, store=stub)
    namespace["session"]
    with pytest.raises(StoreUnavailable):
        namespace["session"] = {"a": 2}
    assert stub.saves == [(KEY, {"a": 2}, SessionData.of({"a": 1}, 7))]


# -- a store that went down -----------------------------------------------------------------------

def test_namespace_save_to_an_unavailable_store_raises_for_the_tween_to_answer():
    stub = UnavailableStore()
    namespace = StoreNamespace(namespace=RAW_ID, store=stub)
    with pytest.raises(StoreUnavailable):
        namespace["session"] = {"a": 2}
    with pytest.raises(StoreUnavailable):
        namespace.set_value("session", {"a": 3})
    assert len(stub.saves) == 2


def test_beaker_save_to_an_unavailable_store_raises_before_the_answer_leaves():
    stub = UnavailableStore()
    session = JudgedSession({}, id=RAW_ID, type="expiry:sql", store=stub, data_serializer="json",
                      save_accessed_time=False, use_cookies=False)
    assert session["a"] == 1
    session["b"] = 2
    with pytest.raises(StoreUnavailable):
        session.save()  # the tween saves before the answer leaves: it answers 503
    assert [saved for _, saved, _ in stub.saves] == [{**LOADED.values(), "b": 2}]


def test_namespace_read_from_an_unavailable_store_raises():
    class Down:
        def load_data(self, key):
            raise StoreUnavailable("connection refused")

    namespace = StoreNamespace(namespace=RAW_ID, store=Down())
    with pytest.raises(StoreUnavailable):
        namespace["session"]
    with pytest.raises(StoreUnavailable):
        "session" in namespace  # noqa: B015 (the lookup is the point)


# -- end to end through a real Beaker session ------------------------------------------------

def beaker_session(store, session_id=RAW_ID) -> JudgedSession:
    kind = "expiry:sql" if isinstance(store, SqlStore) else "expiry:memory"
    return JudgedSession({}, id=session_id, type=kind, store=store,
                   data_serializer="json", save_accessed_time=False, use_cookies=False)


def test_beaker_session_saves_and_loads_through_the_store(store):
    store.open(KEY, "42", T0)
    session = beaker_session(store)
    assert isinstance(session.namespace, StoreNamespace)
    session["cart"] = [1, 2]
    session["user"] = "Zoë"
    session.save()

    stored = values(store)
    assert stored["cart"] == [1, 2] and stored["user"] == "Zoë"
    assert "_accessed_time" not in stored
    assert store.get(RAW_ID) is None

    again = beaker_session(store)
    assert again["cart"] == [1, 2]
    assert again["user"] == "Zoë"
    assert not again.is_new


def judged(configured: dict, store) -> JudgedSession:
    """The judged session as ``session_factory`` builds it: read, then equipped."""
    data = store.load_data(KEY)
    session = JudgedSession.read(configured, data, time.time())
    session.equip(configured, {"cookie": None}, RAW_ID, None, data)
    return session


def test_a_judged_session_built_from_the_configuration_is_the_one_beaker_builds(store):
    """``JudgedSession.equip`` copies what Beaker's ``__init__`` derives from the options:
    the session it builds has every attribute, item and value Beaker's own has (a Beaker
    that sets one more attribute fails here, not in a request)."""
    store.open(KEY, "42", T0)
    seeded = beaker_session(store)
    seeded["cart"] = [1]
    seeded.save()
    options = {"type": "expiry:memory", "store": store, "data_serializer": "json",
               "key": "session", "secret": "s" * 40, "httponly": True, "secure": True,
               "samesite": "Lax"}
    configured = vars(JudgedSession({}, **options))
    ours = judged(configured, store)
    beakers = JudgedSession({"cookie": None}, id=RAW_ID, **options, expiry=None)

    assert dict(ours) == {**dict(beakers), "_accessed_time": ours["_accessed_time"]}
    assert ours["cart"] == [1] and not ours.is_new
    # Objects of their own, alike: the serializer is stateless, the rest per session.
    differ = {"namespace", "cookie", "accessed_dict", "request", "serializer"}
    assert vars(ours).keys() == vars(beakers).keys()
    assert {name: value for name, value in vars(ours).items() if name not in differ} == {
        name: value for name, value in vars(beakers).items() if name not in differ}
    assert ours.namespace.key == beakers.namespace.key == KEY
    assert type(ours.serializer) is type(beakers.serializer)
    assert ours.accessed_dict.keys() == beakers.accessed_dict.keys()
    assert ours.namespace_args is not configured["namespace_args"]
    assert ours.cookie is not configured["cookie"] and not ours.cookie


def test_a_judged_session_ended_before_it_is_loaded_loads_empty_as_beakers_own(store):
    """Ended between the verdict and the first read (another tab signed out): the loaded
    session is a new, empty one, as Beaker's own ``load`` makes it, and holds nothing."""
    store.open(KEY, "42", T0)
    seeded = beaker_session(store)
    seeded["secret"] = "data"
    seeded.save()
    store.end(KEY, "logged_out", T0 + 1)
    options = {"type": "expiry:memory", "store": store, "data_serializer": "json",
               "key": "session", "secret": "s" * 40}
    configured = vars(JudgedSession({}, **options))

    ours = judged(configured, store)
    beakers = JudgedSession({"cookie": None}, id=RAW_ID, **options, expiry=None)

    assert ours.is_new and beakers.is_new
    assert ours.last_accessed is None and beakers.last_accessed is None
    assert ours.keys() == beakers.keys() and "secret" not in ours
    assert ours.accessed_dict.keys() == beakers.accessed_dict.keys()


def test_beaker_session_of_an_ended_session_loads_empty_and_cannot_write_it_back(store):
    store.open(KEY, "42", T0)
    session = beaker_session(store)
    session["secret"] = "data"
    session.save()
    store.end(KEY, "logged_out", T0 + 1)

    replayed = beaker_session(store)
    assert replayed.is_new
    assert "secret" not in replayed
    replayed["planted"] = True
    replayed.save()
    assert store.load_data(KEY) is None
    assert store.get(KEY).end_reason == "logged_out"


def test_beaker_sessions_with_different_ids_do_not_share_data(store):
    other_id = "fedcba9876543210fedcba9876543210"
    store.open(KEY, "1", T0)
    store.open(session_key(other_id), "2", T0)
    first = beaker_session(store)
    first["who"] = "one"
    first.save()
    second = beaker_session(store, other_id)
    assert "who" not in second
    second["who"] = "two"
    second.save()
    assert beaker_session(store)["who"] == "one"
    assert beaker_session(store, other_id)["who"] == "two"


def test_two_beaker_sessions_of_one_id_writing_different_keys_keep_both(store):
    store.open(KEY, "42", T0)
    first, second = beaker_session(store), beaker_session(store)  # two concurrent requests
    first["a"] = 1
    second["b"] = 2
    first.save()
    second.save()
    assert values(store)["a"] == 1 and values(store)["b"] == 2
    assert beaker_session(store)["a"] == 1
