"""Session stores: one lifecycle contract, one read model for the report, several backends.

A store keeps, per session, the lifecycle record and the session data in one
entry, keyed by a hash of the session id (never the raw id). Ending is one
operation, conditional on the session being open, so each session ends
exactly once and the store reports it exactly once through ``on_end``.

- :mod:`.contract`: what a store does (``SessionStore``; with the report's
  ``ReportReads``, a ``Store``);
- :mod:`.readmodel`: what the report asks a store, and the figures made of it;
- :mod:`.data`, :mod:`.sweeping`: what every store shares;
- :mod:`.memory`, :mod:`.sql`: the stores, each a module of its own;
- :mod:`.beaker`: the thin adapter that makes them Beaker backends.

Depends on the pure core only (``record``, ``decision``, ``events``, ``settings``,
``throttle``); nothing here imports the tween, the views or the report.
"""
from ..record import SessionRecord, session_key
from .contract import SessionStore, Store, StoreUnavailable
from .data import EMPTY, MAX_WRITE_ATTEMPTS, SessionData, encode, merge
from .readmodel import ReportReads
from .sweeping import OnEnd, SweepResult, SweepThread, report

__all__ = ("EMPTY", "MAX_WRITE_ATTEMPTS", "OnEnd", "ReportReads", "SessionData", "SessionRecord",
           "SessionStore", "Store", "StoreUnavailable", "SweepResult", "SweepThread", "encode",
           "merge", "report", "session_key")
