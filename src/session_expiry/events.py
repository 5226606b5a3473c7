"""``SessionEnded``: fired exactly once per session, whoever ended it."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .stores import SessionRecord

log = logging.getLogger("session_expiry.events")


@dataclass(frozen=True)
class SessionEnded:
    """A session ended. ``record`` is its tombstone (no data)."""

    record: SessionRecord

    @property
    def reason(self) -> str:
        return self.record.end_reason

    @property
    def user_id(self) -> str:
        return self.record.user_id

    @property
    def duration(self) -> int:
        """Seconds from sign-in to the end."""
        return self.record.ended_at - self.record.created


def log_session_ended(event: SessionEnded) -> None:
    """The default subscriber: one line per ended session, hashed id only."""
    log.info(
        "session ended: session=%s user=%s reason=%s duration=%ss",
        event.record.key[:12], event.user_id, event.reason, event.duration,
    )
