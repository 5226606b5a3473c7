"""The verdict on a request: a pure function of ticket, cookie, record and time.

No I/O here. The tween gathers the inputs, calls :func:`decide`, and acts on
the verdict; the stores call :func:`overdue_reason` to sweep.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .record import SessionRecord
    from .settings import Policy


class Reason(StrEnum):
    # Reasons a session ends (kept on its tombstone).
    IDLE_TIMEOUT = "idle_timeout"
    ABSOLUTE_TIMEOUT = "absolute_timeout"
    LOGGED_OUT = "logged_out"
    REVOKED = "revoked"
    ENDED_BY_USER = "ended_by_user"
    REAUTH_FAILED = "reauth_failed"  # the password was asked again, and wrong too often
    # Reasons a request is refused without a live session to end.
    TICKET_MISMATCH = "ticket_mismatch"
    TICKET_EXPIRED = "ticket_expired"
    SESSION_LOST = "session_lost"


#: Reasons a session ends, in the order the report shows them.
END_REASONS = (Reason.IDLE_TIMEOUT, Reason.ABSOLUTE_TIMEOUT, Reason.LOGGED_OUT,
               Reason.REVOKED, Reason.ENDED_BY_USER, Reason.REAUTH_FAILED)
#: Reasons a request is refused without a live session to end (counted, not sessions).
REFUSAL_REASONS = (Reason.TICKET_MISMATCH, Reason.TICKET_EXPIRED, Reason.SESSION_LOST)


class State(StrEnum):
    ANONYMOUS = "anonymous"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True)
class Ticket:
    """What a validly signed auth ticket says."""

    userid: str
    binding: str
    issued: int


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: Reason | None = None
    #: The session is open but overdue: the tween must end it with ``reason``.
    end_session: bool = False
    #: The session is active and its last touch is ``touch_interval`` or more ago.
    touch_due: bool = False


ANONYMOUS = Verdict(State.ANONYMOUS)
ACTIVE = Verdict(State.ACTIVE)
ACTIVE_TOUCH_DUE = Verdict(State.ACTIVE, touch_due=True)


def ticket_binding(session_key: str) -> str:
    """The token that binds an auth ticket to one session (tokens start with a letter)."""
    return "s" + session_key[:32]


def ending_reason(record: SessionRecord) -> Reason:
    """Why an open session will end if nobody touches it: its earlier deadline."""
    if record.absolute_deadline <= record.idle_deadline:
        return Reason.ABSOLUTE_TIMEOUT
    return Reason.IDLE_TIMEOUT


def overdue_reason(record: SessionRecord, now: int) -> Reason | None:
    """Why an open session is over at ``now``, or None if it is not (yet)."""
    return ending_reason(record) if now >= record.deadline else None


def decide(
    ticket: Ticket | None,
    session_key: str | None,
    record: SessionRecord | None,
    now: int,
    policy: Policy,
) -> Verdict:
    """Classify a request.

    ``ticket`` is None when the auth ticket is missing or forged, ``session_key``
    when the session cookie is missing or not validly signed, ``record`` when the
    store does not know the session. A ticket's own time decides only when there
    is no record to ask (``ticket_expired``).
    """
    if record is None:
        if ticket is None:
            return ANONYMOUS
        if now >= ticket.issued + policy.idle_timeout:
            return _refused(Reason.TICKET_EXPIRED)
        if session_key is None or ticket.binding != ticket_binding(session_key):
            return _refused(Reason.TICKET_MISMATCH)
        return _refused(Reason.SESSION_LOST)

    bound = ticket is not None and (
        ticket.binding == ticket_binding(record.key) and ticket.userid == record.user_id
    )
    if record.ended_at is not None:
        if ticket is not None and not bound:
            return _refused(Reason.TICKET_MISMATCH)
        return _refused(Reason(record.end_reason))

    # An open session past its deadline ends whoever asks: the record is the clock.
    reason = overdue_reason(record, now)
    if reason is not None:
        return Verdict(State.ENDED, reason, end_session=True)
    if not bound:
        return _refused(Reason.TICKET_MISMATCH)
    # A bound ticket of a live session is good whatever its own time says (a
    # response that reissued it may never have reached the browser): the record
    # is the one clock, and the tween brings the ticket back in step.
    return ACTIVE_TOUCH_DUE if now - record.last_seen >= policy.touch_interval else ACTIVE


def _refused(reason: Reason) -> Verdict:
    return Verdict(State.ENDED, reason)
