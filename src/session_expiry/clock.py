"""Clocks. The store and the tween read time only through one of these.

A clock is any callable returning seconds since the epoch (``time.time`` is
one). ``FrozenClock`` is the injectable test clock: it moves only when told.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pyramid.exceptions import ConfigurationError
from pyramid.path import DottedNameResolver

system_clock = time.time


class FrozenClock:
    """A clock that stands still until ``advance`` moves it (thread-safe)."""

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        with self._lock:
            self._now = float(now)


def resolve_clock(value) -> Callable[[], float]:
    """The ``session_expiry.clock`` setting: a callable, a dotted name, or unset."""
    if value is None or value == "":
        return system_clock
    if isinstance(value, str):
        try:
            value = DottedNameResolver().maybe_resolve(value.strip())
        except (ImportError, ValueError) as error:
            raise ConfigurationError(f"session_expiry.clock: {error}; write a dotted name "
                                     "such as session_expiry.clock.FrozenClock") from None
        if isinstance(value, type):
            value = value()
    if not callable(value):
        raise ConfigurationError("session_expiry.clock: not a callable; write a dotted name of "
                                 "one returning epoch seconds, or leave it out")
    return value
