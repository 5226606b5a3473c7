"""``SessionEnded``: fired exactly once per session, whoever ended it."""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("session_expiry.events")


@dataclass(frozen=True)
class SessionEnded:
    """A session ended. The stores build it; Pyramid subscribers receive it."""

    session_key: str
    user_id: str
    reason: str
    ended_at: int
    #: Seconds from sign-in to the end.
    duration: int

    @classmethod
    def of(cls, record) -> SessionEnded:
        """The event for a session's tombstone record."""
        return cls(record.key, record.user_id, record.end_reason, record.ended_at,
                   record.ended_at - record.created)


def log_session_ended(event: SessionEnded) -> None:
    """One line per ended session, hashed id only."""
    log.info(
        "session ended: session=%s user=%s reason=%s duration=%ss",
        event.session_key[:12], event.user_id, event.reason, event.duration,
    )


def announcer(registry):
    """The stores' ``on_end``: the log line, then the application's subscribers.

    The line is not a Pyramid subscriber itself: one subscriber makes Pyramid
    notify four events (``NewRequest`` ...) on every request, for an event
    that comes once per session.
    """
    def announce(event: SessionEnded) -> None:
        log_session_ended(event)
        registry.notify(event)

    return announce
