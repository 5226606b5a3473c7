"""The Beaker backend: a thin adapter from Beaker's namespace API to our store.

Registered as ``expiry:memory`` and ``expiry:sql`` under the
``beaker.backends`` entry point. The store object arrives through the session
factory's options (pyramid_beaker passes unknown options on to the backend),
so two apps in one process never share a store by accident.

The session factory (:func:`session_factory`) hands Beaker the session the
tween judged, by id, and nothing else: Beaker never parses the Cookie header,
and the backend refuses any other session's key. Invalidating or deleting the
session ends it, as ``forget()`` does. A view that only reads gets the data
as read, in Beaker's own session class; what Beaker derives from the factory's
options (namespace, cookie, settings) is added when something writes.

Beaker hands the backend the session's dict as it is and gets a dict back
(:class:`JudgedSession` skips Beaker's serializer, zlib and base64): the store
keeps the data as JSON itself, and a read-only request decodes nothing twice.
"""
from __future__ import annotations

import logging
import secrets
import time

from beaker.container import NamespaceManager
from beaker.session import Session, SignedCookie
from beaker.synchronization import null_synchronizer
from pyramid_beaker import BeakerSessionFactoryConfig

from ..record import SESSION_ID_BYTES, session_key
from . import EMPTY, SessionData, encode

log = logging.getLogger(__name__)

_BEAKER_KEY = "session"
#: Beaker's bookkeeping that the session record already holds or that is configuration.
_NOT_STORED = ("_accessed_time", "_domain", "_path")


def from_beaker(value: dict) -> dict:
    """The data to store from what Beaker saves: without Beaker's bookkeeping."""
    return {name: item for name, item in value.items() if name not in _NOT_STORED}


def data_size(session) -> int:
    """Bytes the session's data takes at rest (JSON, as the stores keep it)."""
    data = {name: value for name, value in session.items()
            if name not in (*_NOT_STORED, "_creation_time")}
    return len(encode(data).encode("utf-8"))


def loaded_accessed_time(data: dict) -> float:
    """The ``_accessed_time`` Beaker is given for stored data.

    Any ``_accessed_time`` tells Beaker (and pyramid_beaker's ``session.new``) that
    the session was loaded, not created; the record keeps the real last-seen time.
    """
    return data.get("_creation_time", 0)


def to_beaker(data: dict) -> dict:
    """What Beaker loads from the stored data."""
    return {**data, "_accessed_time": loaded_accessed_time(data)}


class StoreNamespace(NamespaceManager):
    """One session's data, as Beaker sees it."""

    def __init__(self, namespace, store=None, expiry=None, **ignored):
        super().__init__(namespace)
        if store is None:
            raise ValueError("session.type expiry:* needs config.include('session_expiry')")
        self.store = store
        #: The request's ``session_expiry``: only the session it judged may be used.
        self.expiry = expiry
        judged = expiry is not None and namespace == expiry.session_id
        self.key = expiry.session_key if judged else session_key(namespace)
        #: What this request loaded: the base its changes are merged from.
        self.loaded = EMPTY

    @property
    def judged(self) -> bool:
        """True when this is the session the tween judged for this request."""
        if self.expiry is None or self.key == self.expiry.session_key:
            return True
        log.warning("refused session %s: not the one this request holds, if any"
                    " (signing in starts one)", self.key[:12])
        return False

    def get_creation_lock(self, key):
        return null_synchronizer()

    def __getitem__(self, name):
        data = self.store.load_data(self.key) if name == _BEAKER_KEY and self.judged else None
        if data is None:
            raise KeyError(name)
        self.loaded = data
        return to_beaker(data.values())

    def __contains__(self, name):
        return name == _BEAKER_KEY and self.judged and self.store.load_data(self.key) is not None

    def has_key(self, name):
        return name in self

    def __setitem__(self, name, value):
        # StoreUnavailable goes up to the tween, which saves before the answer leaves.
        if name == _BEAKER_KEY and self.judged:
            self.store.save_data(self.key, from_beaker(value), base=self.loaded)

    def set_value(self, name, value, expiretime=None):
        self[name] = value

    def __delitem__(self, name):
        if name == _BEAKER_KEY:
            self.do_remove()

    def do_remove(self):
        if self.judged:
            self.store.save_data(self.key, {}, base=None)

    def keys(self):
        return [_BEAKER_KEY] if _BEAKER_KEY in self else []


def new_session_id() -> str:
    """A session id: 256 random bits, hex (Beaker's own are uuid4: 122 bits)."""
    return secrets.token_hex(SESSION_ID_BYTES)


class JudgedSession(Session):
    """Beaker's session with our ids, renewed without reading the new id's data, and
    handing the namespace its dict as it is: the store keeps JSON itself, and the
    settings refuse pickle and ``encrypt_key``, so there is nothing to encode."""

    def _encrypt_data(self, session_data=None):
        return dict(session_data or self)

    def _decrypt_data(self, session_data):
        return session_data

    def _create_id(self, set_new=True):
        self.id = new_session_id()
        if set_new:
            self.is_new = True
            self.last_accessed = None
        if self.use_cookies:
            self._update_cookie_out(set_cookie=not set_new)

    @classmethod
    def read(cls, configured: dict, data: SessionData | None, now: float) -> JudgedSession:
        """The judged session as Beaker's own loads it, from ``data`` (None: it ended since
        it was judged, and is a new, empty one, as Beaker's own ``load`` makes it).

        Holds the data and what Beaker derives from it, not yet what it derives from the
        options: :meth:`equip` adds that when something needs it (a write, Beaker's
        attributes), which a request that only reads never does.
        """
        session = cls.__new__(cls)
        if data is None:
            values = {"_creation_time": now}
            session.is_new, session.last_accessed = True, None
        else:
            values = data.values()  # decoded for this request: nothing else holds it
            session.is_new, session.last_accessed = False, loaded_accessed_time(values)
        values["_accessed_time"] = now
        session.update(configured["_config"])  # what Beaker's ``clear`` leaves
        session.update(values)
        session.accessed_dict = values  # Beaker's copy of the data as loaded
        return session

    def equip(self, configured: dict, request: dict, id: str, expiry,
              data: SessionData | None) -> None:
        """Add what Beaker's ``__init__`` derives from the factory's options (derived once, in
        ``configured``), less what our namespace makes needless: a lock (the store locks)
        and Beaker's timeout (the record is the clock; the settings refuse it)."""
        namespace_args = {**configured["namespace_args"], "expiry": expiry}
        namespace = configured["namespace_class"](id, **namespace_args)
        namespace.loaded = data or EMPTY  # the base this request's changes are merged from
        state = vars(self)
        state.update({**configured, **state}, request=request, id=id, namespace=namespace,
                     namespace_args=namespace_args, cookie=SignedCookie(configured["secret"]),
                     was_invalidated=False)
        request["set_cookie"] = True

    def renew(self):
        """A fresh id and no data. Beaker's ``invalidate`` would load the new id's
        data at once, before the request has adopted it (nothing is there to read)."""
        self.clear()
        self.was_invalidated = True
        self._create_id()
        self["_accessed_time"] = self["_creation_time"] = time.time()


def session_factory(judged, **options):
    """pyramid_beaker's session factory, bound to the session the tween judged:
    ``judged(request)`` (``session_expiry.tween.session_expiry``, handed in by
    ``includeme``, so that this adapter depends on nothing above the stores).

    Beaker is given the id of the request's active session (None otherwise) and
    an empty Cookie header, so it never reads a cookie the tween did not judge.
    No response callback: the tween saves (``SessionExpiry.save_session``).
    """
    base = BeakerSessionFactoryConfig(**options)
    configured = vars(JudgedSession({}, **options))  # a new session's; ids and data differ
    params = {**base._options, "session_class": JudgedSession}

    class ExpirySession(base):
        def __init__(self, request):
            # Beaker's ``SessionObject.__init__`` without its per-request copy of the options:
            # what differs per request is the judged session, and ``_read`` reads it here.
            expiry = judged(request)
            self.__dict__.update(_params=params, _environ=None, _sess=None, _headers={},
                                 _expiry=expiry, _equipped=False, _loaded=None)

        def _read(self) -> JudgedSession:
            """The session, to read from: the judged session's data, read once."""
            state = self.__dict__
            session = state["_sess"]
            if session is None:
                expiry = state["_expiry"]
                if not expiry.holds_session:
                    return self._session()
                data = expiry.store.load_data(expiry.session_key) if expiry.active else None
                state["_loaded"] = data
                state["_sess"] = session = JudgedSession.read(configured, data, time.time())
            return session

        def _session(self) -> JudgedSession:
            """The session with all of Beaker's attributes: to write, to save, to renew."""
            state = self.__dict__
            if not state["_equipped"]:
                expiry = state["_expiry"]
                state["_headers"] = headers = {"cookie_out": None, "cookie": None}
                if state["_sess"] is not None or expiry.holds_session:
                    self._read().equip(configured, headers, expiry.session_id, expiry,
                                       state["_loaded"])
                else:  # a new session (sign-in); never one named by the Cookie header
                    state["_sess"] = JudgedSession(headers, expiry=expiry, **params)
                state["_equipped"] = True
            return state["_sess"]

        # What a view reads is served by ``_read``: a request that only reads never
        # builds Beaker's namespace, cookie and options (SessionObject's own ``_session``).
        def get(self, key, default=None):
            return self._read().get(key, default)

        def __getitem__(self, key):
            return self._read()[key]

        def __contains__(self, key):
            return key in self._read()

        def has_key(self, key):
            return key in self._read()

        def __iter__(self):
            return iter(self._read().keys())

        def keys(self):
            return self._read().keys()

        def values(self):
            return self._read().values()

        def items(self):
            return self._read().items()

        @property
        def new(self) -> bool:
            return self._read().last_accessed is None

        def invalidate(self):
            """End the session, as ``forget()`` does (an old cookie replayed later loads
            nothing), and forget its data."""
            self.__dict__["_expiry"].logout()
            self._session().clear()

        def delete(self):
            self.invalidate()

        def renew(self):
            """A fresh random id and no data (sign-in: no fixation); ends nothing."""
            self._session().renew()
            self.save()

    return ExpirySession
