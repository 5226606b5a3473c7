"""The verdict on a request, as a table: ticket x session cookie x record x time -> verdict."""
from __future__ import annotations

import pytest

from session_expiry.decision import (
    ANONYMOUS,
    Reason,
    State,
    Ticket,
    Verdict,
    decide,
    overdue_reason,
    ticket_binding,
)
from session_expiry.settings import Policy
from session_expiry.stores import SessionRecord, session_key

NOW = 1_800_000_000
IDLE = 1200
ABSOLUTE = 8 * 3600
TOUCH = 120
POLICY = Policy(idle_timeout=IDLE, absolute_timeout=ABSOLUTE, warn_before=120,
                touch_interval=TOUCH, secret="x" * 40)

KEY = session_key("the-session-id")
OTHER_KEY = session_key("another-session-id")
USER = "42"


def record(key=KEY, user_id=USER, created=NOW - 600, last_seen=NOW - 60, idle_deadline=None,
           absolute_deadline=None, ended_at=None, end_reason=None) -> SessionRecord:
    return SessionRecord(
        key=key, user_id=user_id, created=created, last_seen=last_seen,
        idle_deadline=last_seen + IDLE if idle_deadline is None else idle_deadline,
        absolute_deadline=created + ABSOLUTE if absolute_deadline is None else absolute_deadline,
        ended_at=ended_at, end_reason=end_reason,
    )


def ticket(userid=USER, key=KEY, issued=NOW - 60) -> Ticket:
    return Ticket(userid=userid, binding=ticket_binding(key), issued=issued)


def tombstone(reason: str, **kwargs) -> SessionRecord:
    return record(ended_at=NOW - 30, end_reason=reason, **kwargs)


def ended(reason: Reason) -> Verdict:
    return Verdict(State.ENDED, reason)


def overdue(reason: Reason) -> Verdict:
    return Verdict(State.ENDED, reason, end_session=True)


ACTIVE = Verdict(State.ACTIVE, touch_due=False)
ACTIVE_TOUCH_DUE = Verdict(State.ACTIVE, touch_due=True)

# (id, ticket, session_key, record, now, expected verdict)
CASES = [
    # -- anonymous: nobody signed in, or nothing left to tell ----------------------------
    ("anonymous_without_ticket_or_cookie", None, None, None, NOW, ANONYMOUS),
    ("anonymous_without_ticket_and_cookie_of_unknown_session", None, KEY, None, NOW, ANONYMOUS),
    # -- active ------------------------------------------------------------------------
    ("active_seen_a_minute_ago_touch_not_due", ticket(), KEY, record(last_seen=NOW - 60), NOW,
     ACTIVE),
    ("active_seen_just_now_touch_not_due", ticket(issued=NOW), KEY, record(last_seen=NOW), NOW,
     ACTIVE),
    ("active_one_second_before_touch_interval_touch_not_due", ticket(issued=NOW - TOUCH + 1),
     KEY, record(last_seen=NOW - TOUCH + 1), NOW, ACTIVE),
    ("active_exactly_touch_interval_after_last_seen_touch_due", ticket(issued=NOW - TOUCH), KEY,
     record(last_seen=NOW - TOUCH), NOW, ACTIVE_TOUCH_DUE),
    ("active_long_after_last_seen_touch_due", ticket(issued=NOW - 900), KEY,
     record(last_seen=NOW - 900), NOW, ACTIVE_TOUCH_DUE),
    ("active_one_second_before_idle_deadline", ticket(issued=NOW - IDLE + 1), KEY,
     record(last_seen=NOW - IDLE + 1), NOW, ACTIVE_TOUCH_DUE),
    ("active_one_second_before_absolute_deadline", ticket(issued=NOW - 10), KEY,
     record(created=NOW - ABSOLUTE + 1, last_seen=NOW - 10), NOW, ACTIVE),
    # -- open but overdue: the tween must end it ----------------------------------------
    ("open_session_at_idle_deadline_ends_with_idle_timeout", ticket(issued=NOW - IDLE), KEY,
     record(last_seen=NOW - IDLE), NOW, overdue(Reason.IDLE_TIMEOUT)),
    ("open_session_past_idle_deadline_ends_with_idle_timeout", ticket(issued=NOW - IDLE - 50),
     KEY, record(last_seen=NOW - IDLE - 50), NOW, overdue(Reason.IDLE_TIMEOUT)),
    ("open_session_past_idle_deadline_ends_even_without_ticket", None, KEY,
     record(last_seen=NOW - IDLE - 50), NOW, overdue(Reason.IDLE_TIMEOUT)),
    ("open_session_past_idle_deadline_ends_even_with_foreign_ticket", ticket(key=OTHER_KEY),
     KEY, record(last_seen=NOW - IDLE - 50), NOW, overdue(Reason.IDLE_TIMEOUT)),
    ("open_session_at_absolute_deadline_ends_with_absolute_timeout", ticket(issued=NOW - 10),
     KEY, record(created=NOW - ABSOLUTE, last_seen=NOW - 10), NOW,
     overdue(Reason.ABSOLUTE_TIMEOUT)),
    ("open_session_past_absolute_deadline_while_active_ends_with_absolute_timeout",
     ticket(issued=NOW - 5), KEY, record(created=NOW - ABSOLUTE - 100, last_seen=NOW - 5), NOW,
     overdue(Reason.ABSOLUTE_TIMEOUT)),
    ("both_deadlines_passed_idle_earlier_ends_with_idle_timeout", ticket(issued=NOW - 2000), KEY,
     record(idle_deadline=NOW - 100, absolute_deadline=NOW - 50), NOW,
     overdue(Reason.IDLE_TIMEOUT)),
    ("both_deadlines_passed_absolute_earlier_ends_with_absolute_timeout",
     ticket(issued=NOW - 2000), KEY, record(idle_deadline=NOW - 50, absolute_deadline=NOW - 100),
     NOW, overdue(Reason.ABSOLUTE_TIMEOUT)),
    ("both_deadlines_at_same_instant_ends_with_absolute_timeout", ticket(issued=NOW - 2000), KEY,
     record(idle_deadline=NOW - 10, absolute_deadline=NOW - 10), NOW,
     overdue(Reason.ABSOLUTE_TIMEOUT)),
    # -- tombstones: the true reason, never ended twice ---------------------------------
    *[
        (f"tombstone_{reason}_with_bound_ticket_returns_{reason}", ticket(), KEY,
         tombstone(reason), NOW, ended(Reason(reason)))
        for reason in ("logged_out", "revoked", "ended_by_user", "reauth_failed", "idle_timeout",
                       "absolute_timeout")
    ],
    *[
        (f"tombstone_{reason}_without_ticket_returns_{reason}", None, KEY,
         tombstone(reason), NOW, ended(Reason(reason)))
        for reason in ("logged_out", "revoked", "ended_by_user", "reauth_failed", "idle_timeout",
                       "absolute_timeout")
    ],
    ("tombstone_past_its_deadlines_is_not_ended_again", ticket(issued=NOW - 5000), KEY,
     tombstone("logged_out", last_seen=NOW - 5000), NOW, ended(Reason.LOGGED_OUT)),
    # -- ticket_mismatch -----------------------------------------------------------------
    ("ticket_bound_to_another_session_is_a_mismatch", ticket(key=OTHER_KEY), KEY, record(), NOW,
     ended(Reason.TICKET_MISMATCH)),
    ("ticket_of_another_user_is_a_mismatch", ticket(userid="7"), KEY, record(), NOW,
     ended(Reason.TICKET_MISMATCH)),
    ("no_ticket_with_open_record_is_a_mismatch", None, KEY, record(), NOW,
     ended(Reason.TICKET_MISMATCH)),
    ("ticket_without_session_cookie_is_a_mismatch", ticket(), None, None, NOW,
     ended(Reason.TICKET_MISMATCH)),
    ("ticket_bound_elsewhere_with_cookie_of_unknown_session_is_a_mismatch",
     ticket(key=OTHER_KEY), KEY, None, NOW, ended(Reason.TICKET_MISMATCH)),
    ("foreign_ticket_with_tombstone_is_a_mismatch", ticket(key=OTHER_KEY), KEY,
     tombstone("logged_out"), NOW, ended(Reason.TICKET_MISMATCH)),
    ("ticket_of_another_user_with_tombstone_is_a_mismatch", ticket(userid="7"), KEY,
     tombstone("revoked"), NOW, ended(Reason.TICKET_MISMATCH)),
    # -- ticket_expired --------------------------------------------------------------------
    ("expired_ticket_with_unknown_record_is_ticket_expired", ticket(issued=NOW - IDLE), KEY, None,
     NOW, ended(Reason.TICKET_EXPIRED)),
    ("expired_ticket_without_session_cookie_is_ticket_expired", ticket(issued=NOW - IDLE - 1),
     None, None, NOW, ended(Reason.TICKET_EXPIRED)),
    ("stale_bound_ticket_of_a_live_session_is_active_the_record_is_the_clock",
     ticket(issued=NOW - IDLE), KEY, record(last_seen=NOW - 10), NOW, ACTIVE),
    ("ticket_one_second_before_expiry_with_open_record_is_active",
     ticket(issued=NOW - IDLE + 1), KEY, record(last_seen=NOW - 10), NOW, ACTIVE),
    # -- session_lost ----------------------------------------------------------------------
    ("valid_bound_ticket_with_unknown_record_is_session_lost", ticket(), KEY, None, NOW,
     ended(Reason.SESSION_LOST)),
]


@pytest.mark.parametrize(("ticket", "key", "record", "now", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_decide(ticket, key, record, now, expected):
    assert decide(ticket, key, record, now, POLICY) == expected


def test_every_reason_is_covered_by_the_decision_table():
    reasons = {case[-1].reason for case in CASES}
    assert reasons - {None} == set(Reason)
    assert {case[-1].state for case in CASES} == set(State)
    assert any(case[-1].end_session for case in CASES)


def test_only_open_overdue_sessions_are_to_be_ended():
    for case_id, *inputs, expected in CASES:
        if expected.end_session:
            assert expected.reason in (Reason.IDLE_TIMEOUT, Reason.ABSOLUTE_TIMEOUT), case_id
            assert inputs[2] is not None and inputs[2].is_open, case_id


def test_decide_does_not_use_the_wall_clock():
    # Far in the past relative to the real clock: the verdict depends only on ``now``.
    early = 1_000_000
    rec = record(created=early, last_seen=early, idle_deadline=early + IDLE,
                 absolute_deadline=early + ABSOLUTE)
    assert decide(ticket(issued=early), KEY, rec, early + 1, POLICY).state is State.ACTIVE


@pytest.mark.parametrize(("rec", "now", "expected"), [
    pytest.param(record(idle_deadline=NOW + 1, absolute_deadline=NOW + 100), NOW, None,
                 id="before_both_deadlines_none"),
    pytest.param(record(idle_deadline=NOW, absolute_deadline=NOW + 100), NOW,
                 Reason.IDLE_TIMEOUT, id="at_idle_deadline_idle_timeout"),
    pytest.param(record(idle_deadline=NOW - 1, absolute_deadline=NOW + 100), NOW,
                 Reason.IDLE_TIMEOUT, id="past_idle_deadline_idle_timeout"),
    pytest.param(record(idle_deadline=NOW + 100, absolute_deadline=NOW), NOW,
                 Reason.ABSOLUTE_TIMEOUT, id="at_absolute_deadline_absolute_timeout"),
    pytest.param(record(idle_deadline=NOW + 100, absolute_deadline=NOW - 1), NOW,
                 Reason.ABSOLUTE_TIMEOUT, id="past_absolute_deadline_absolute_timeout"),
    pytest.param(record(idle_deadline=NOW - 100, absolute_deadline=NOW - 50), NOW,
                 Reason.IDLE_TIMEOUT, id="both_passed_idle_earlier_idle_timeout"),
    pytest.param(record(idle_deadline=NOW - 50, absolute_deadline=NOW - 100), NOW,
                 Reason.ABSOLUTE_TIMEOUT, id="both_passed_absolute_earlier_absolute_timeout"),
    pytest.param(record(idle_deadline=NOW - 5, absolute_deadline=NOW - 5), NOW,
                 Reason.ABSOLUTE_TIMEOUT, id="both_passed_same_instant_absolute_timeout"),
])
def test_overdue_reason(rec, now, expected):
    assert overdue_reason(rec, now) == expected


@pytest.mark.parametrize("key", [
    session_key("x"), "0" * 64, "9f" * 32, "-leading-dash" + "a" * 51, KEY,
])
def test_ticket_binding_starts_with_a_letter_and_names_the_key(key):
    binding = ticket_binding(key)
    assert binding[0].isalpha()
    assert binding == "s" + key[:32]
    assert "," not in binding and "!" not in binding


def test_ticket_binding_differs_per_session():
    assert ticket_binding(KEY) != ticket_binding(OTHER_KEY)
    assert ticket_binding(KEY) == ticket_binding(KEY)
