"""The Beaker backend: a thin adapter from Beaker's namespace API to our store.

Registered as ``expiry:memory`` and ``expiry:sql`` under the
``beaker.backends`` entry point. The store object arrives through the session
factory's options (pyramid_beaker passes unknown options on to the backend),
so two apps in one process never share a store by accident.

Beaker hands the backend base64 of its JSON serializer's output (zlib-packed
JSON) and wants the same back; the store keeps plain JSON.
"""
from __future__ import annotations

import base64
import json
import logging
import zlib

from beaker.container import NamespaceManager
from beaker.synchronization import null_synchronizer

from . import EMPTY, StoreUnavailable, session_key

log = logging.getLogger(__name__)

_BEAKER_KEY = "session"
#: Beaker's bookkeeping that the session record already holds or that is configuration.
_NOT_STORED = ("_accessed_time", "_domain", "_path")


def from_beaker(value: str) -> dict:
    data = json.loads(zlib.decompress(base64.b64decode(value)).decode("utf-8"))
    for name in _NOT_STORED:
        data.pop(name, None)
    return data


def to_beaker(data: dict) -> str:
    # Any _accessed_time tells Beaker (and pyramid_beaker's ``session.new``) that the
    # session was loaded, not created; the record keeps the real last-seen time.
    data = {**data, "_accessed_time": data.get("_creation_time", 0)}
    return base64.b64encode(zlib.compress(json.dumps(data).encode("utf-8"))).decode("ascii")


class StoreNamespace(NamespaceManager):
    """One session's data, as Beaker sees it."""

    def __init__(self, namespace, store=None, **ignored):
        super().__init__(namespace)
        if store is None:
            raise ValueError("session.type expiry:* needs config.include('session_expiry')")
        self.store = store
        self.key = session_key(namespace)
        #: What this request loaded: the base its changes are merged from.
        self.loaded = EMPTY

    def get_creation_lock(self, key):
        return null_synchronizer()

    def __getitem__(self, name):
        data = self.store.load_data(self.key) if name == _BEAKER_KEY else None
        if data is None:
            raise KeyError(name)
        self.loaded = data
        return to_beaker(data.values)

    def __contains__(self, name):
        return name == _BEAKER_KEY and self.store.load_data(self.key) is not None

    def has_key(self, name):
        return name in self

    def __setitem__(self, name, value):
        if name != _BEAKER_KEY:
            return
        try:
            self.store.save_data(self.key, from_beaker(value), base=self.loaded)
        except StoreUnavailable as error:
            # Beaker saves after the answer was made: nothing to tell but the log.
            log.error("session %s: data not saved, the store is unavailable: %s",
                      self.key[:12], error)

    def set_value(self, name, value, expiretime=None):
        self[name] = value

    def __delitem__(self, name):
        if name == _BEAKER_KEY:
            self.do_remove()

    def do_remove(self):
        self.store.save_data(self.key, {}, base=None)

    def keys(self):
        return [_BEAKER_KEY] if _BEAKER_KEY in self else []
