"""A session's identity and lifecycle: the id's size, the key it is stored under, and the
record every store keeps. Pure: no I/O, imported by the decision and by every store."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

#: Random bytes in a session id (ASVS 5.0 7.2.3 asks for at least 128 bits).
SESSION_ID_BYTES = 32


def session_key(session_id: str) -> str:
    """The key a session is stored under: SHA-256 of its id, in hex."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session's lifecycle. Times are whole seconds since the epoch, UTC."""

    key: str
    user_id: str
    created: int
    last_seen: int
    idle_deadline: int
    absolute_deadline: int
    ended_at: int | None = None
    end_reason: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    @property
    def deadline(self) -> int:
        """When the session ends unless touched: the earlier of its two deadlines."""
        return min(self.idle_deadline, self.absolute_deadline)

    def remaining(self, now: float) -> float:
        """Seconds until the session ends unless touched (an int for a whole-second ``now``)."""
        return max(0, self.deadline - now)

    @classmethod
    def opened(cls, key: str, user_id, now: int, policy, *, ip: str | None = None,
               user_agent: str | None = None) -> SessionRecord:
        """A session opened at ``now`` for ``user_id`` (as text), both deadlines from
        ``policy`` (its ``idle_timeout`` and ``absolute_timeout``)."""
        return cls(key=key, user_id=str(user_id), created=now, last_seen=now,
                   idle_deadline=now + policy.idle_timeout,
                   absolute_deadline=now + policy.absolute_timeout,
                   ip=ip, user_agent=user_agent)

    def touched(self, now: int, idle_timeout: int) -> SessionRecord:
        """Touched at ``now``; a request that started earlier never moves it back."""
        return replace(self, last_seen=max(self.last_seen, now),
                       idle_deadline=max(self.idle_deadline, now + idle_timeout))

    def ended(self, now: int, reason: str) -> SessionRecord:
        return replace(self, ended_at=now, end_reason=str(reason))
