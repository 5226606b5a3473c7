"""A session's data as the stores keep it: compact JSON text, read at a version, and the
merge of two requests' changes by key. Pure: no I/O."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger("session_expiry.stores")

#: How often a conditional data write is tried before giving up on a busy session.
MAX_WRITE_ATTEMPTS = 5


def encode(values: dict) -> str:
    """Session data as the stores keep it: compact JSON text."""
    return json.dumps(values, separators=(",", ":"))


#: Values a request cannot change in place: a copy of a dict of them is as good as a decode.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})
#: Data texts up to this length keep their decoding (below): most sessions' data.
_KEPT_TEXT = 1024


@lru_cache(maxsize=4096)
def _flat_values(text: str) -> dict | None:
    """``text`` decoded, if none of its values can be changed in place; else None.

    Decoded once per distinct text, not per request: a session whose data did not
    change since the last request costs a lookup and a copy. Never handed out itself.
    """
    values = json.loads(text)
    return values if all(type(value) in _IMMUTABLE for value in values.values()) else None


@dataclass(frozen=True, slots=True)
class SessionData:
    """A session's data as loaded: its JSON text and the version it was read at.

    Kept as text, decoded afresh by :meth:`values`: the objects a request gets
    are its own, so changing one in place (a list in the session, then
    ``session.changed()``) cannot change the base its changes are measured from.
    """

    text: str
    version: int = 0

    @classmethod
    def of(cls, values: dict, version: int = 0) -> SessionData:
        return cls(encode(values), version)

    def values(self) -> dict:
        """The values, decoded from the text: objects nobody else holds."""
        if len(self.text) <= _KEPT_TEXT:
            flat = _flat_values(self.text)
            if flat is not None:
                return dict(flat)
        return json.loads(self.text)


EMPTY = SessionData("{}", 0)

_MISSING = object()


def merge(base: dict, ours: dict, theirs: dict, key: str = "") -> dict:
    """Apply the keys this request changed (``base`` -> ``ours``) onto ``theirs``.

    ``theirs`` is what another request wrote meanwhile. A key changed on one
    side only keeps that change; a key changed on both sides takes ours (the
    last writer wins), and that is logged.
    """
    merged = dict(theirs)
    for name in base.keys() | ours.keys():
        before, after = base.get(name, _MISSING), ours.get(name, _MISSING)
        if before == after:
            continue  # this request did not change it
        if theirs.get(name, _MISSING) not in (before, after):
            log.warning("session %s: key %r was changed by two requests at once; "
                        "the last write wins", key[:12], name)
        if after is _MISSING:
            merged.pop(name, None)
        else:
            merged[name] = after
    return merged
