"""Properties of the pure functions, checked by Hypothesis over generated inputs.

- ``decide``: nobody is ACTIVE without a ticket bound to the record's own key and user, an
  open record and a time before both deadlines; the verdict's flags mean what they say.
- ``safe_path`` / ``same_site_path``: whatever comes in, what goes out is a local path, and
  stays one however often a later hop unquotes it or resolves its dot segments.
- ``merge``: exactly what its docstring promises, key by key.
- ``build_ticket`` / ``read_ticket``: a ticket changed in any one character is no ticket.

Deterministic (``derandomize``, no example database) so CI cannot flake, and small enough
to run in a few seconds.
"""
from __future__ import annotations

import logging
import re
import string
from urllib.parse import unquote, urljoin, urlsplit

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from session_expiry.decision import (
    Reason,
    State,
    Ticket,
    decide,
    ending_reason,
    ticket_binding,
)
from session_expiry.redirects import MAX_LENGTH, safe_path, same_site_path
from session_expiry.settings import Policy
from session_expiry.stores import SessionRecord, merge, session_key
from session_expiry.ticket import build_ticket, derive_secret, read_ticket

PROPERTIES = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])
#: For the composite inputs (decisions, three-way merges), which cost more to draw.
COMPOSITE = settings(PROPERTIES, max_examples=100)

NOW = 1_800_000_000
KEYS = [session_key(f"session-{i}") for i in range(3)]
USERS = ["1", "2", "42"]
END_REASONS = ["idle_timeout", "absolute_timeout", "logged_out", "revoked", "ended_by_user"]


# -- decide -------------------------------------------------------------------------------------

@st.composite
def policies(draw) -> Policy:
    idle = draw(st.integers(60, 7200))
    warn = draw(st.integers(1, idle - 1))
    return Policy(idle_timeout=idle, absolute_timeout=draw(st.integers(idle, 10 * idle)),
                  warn_before=warn, touch_interval=draw(st.integers(1, idle - warn)),
                  secret="x" * 40)


@st.composite
def records(draw, policy: Policy, ended: bool | None = None) -> SessionRecord:
    created = draw(st.integers(NOW - 3 * policy.absolute_timeout, NOW + 60))
    last_seen = draw(st.integers(created, created + 2 * policy.absolute_timeout))
    if ended is None:
        ended = draw(st.sampled_from([False, False, True]))
    # Mostly consistent deadlines, sometimes anything (a store may hold odd rows), sometimes
    # both at one instant.
    idle_deadline = draw(st.one_of(st.just(last_seen + policy.idle_timeout),
                                   st.integers(created, last_seen + 2 * policy.idle_timeout)))
    return SessionRecord(
        key=draw(st.sampled_from(KEYS)), user_id=draw(st.sampled_from(USERS)),
        created=created, last_seen=last_seen, idle_deadline=idle_deadline,
        absolute_deadline=draw(st.one_of(
            st.just(created + policy.absolute_timeout),
            st.integers(created, created + 2 * policy.absolute_timeout),
            st.just(idle_deadline))),
        ended_at=draw(st.integers(created, NOW + 60)) if ended else None,
        end_reason=draw(st.sampled_from(END_REASONS)) if ended else None,
    )


ISSUED = st.integers(NOW - 10 * 86400, NOW + 86400)


def tickets() -> st.SearchStrategy[Ticket | None]:
    bindings = st.one_of(st.sampled_from([ticket_binding(key) for key in KEYS]),
                         st.sampled_from(["", "s", "s" + "0" * 32, KEYS[0][:32], KEYS[0]]))
    return st.none() | st.builds(Ticket, userid=st.sampled_from([*USERS, "", "admin"]),
                                 binding=bindings, issued=ISSUED)


def tickets_for(record: SessionRecord) -> st.SearchStrategy[Ticket | None]:
    """No ticket, its own, one off by the user or by the session, or any."""
    others = [key for key in KEYS if key != record.key]
    return st.one_of(
        tickets(),
        st.builds(Ticket, userid=st.just(record.user_id),
                  binding=st.just(ticket_binding(record.key)), issued=ISSUED),
        st.builds(Ticket, userid=st.sampled_from([u for u in USERS if u != record.user_id]),
                  binding=st.just(ticket_binding(record.key)), issued=ISSUED),
        st.builds(Ticket, userid=st.just(record.user_id),
                  binding=st.sampled_from([ticket_binding(key) for key in others]),
                  issued=ISSUED),
    )


def near(instant: int) -> st.SearchStrategy[int]:
    return st.integers(instant - 2, instant + 2)


@st.composite
def decisions(draw, with_record: bool | None = None, ended: bool | None = None):
    """(ticket, session_key, record, now, policy) as the tween could pass them, with times
    often at the edges (deadlines, the touch interval, the ticket's timeout)."""
    policy = draw(policies())
    if with_record is None:
        with_record = draw(st.sampled_from([True, True, True, False]))
    record = draw(records(policy, ended)) if with_record else None
    ticket = draw(tickets() if record is None else tickets_for(record))
    # The tween looks the record up by the cookie's key; without a record any key may come.
    cookie_key = record.key if record is not None else draw(st.none() | st.sampled_from(KEYS))
    instants = [st.integers(NOW - 4 * policy.absolute_timeout, NOW + 4 * policy.absolute_timeout)]
    if record is not None:
        instants += [st.integers(record.last_seen, max(record.last_seen, record.deadline + 2)),
                     near(record.last_seen + policy.touch_interval), near(record.deadline),
                     near(record.idle_deadline), near(record.absolute_deadline)]
    if ticket is not None:
        instants.append(near(ticket.issued + policy.idle_timeout))
    now = draw(st.one_of(instants))
    return ticket, cookie_key, record, now, policy


def bound(ticket: Ticket | None, record: SessionRecord) -> bool:
    return (ticket is not None and ticket.binding == ticket_binding(record.key)
            and ticket.userid == record.user_id)


@COMPOSITE
@given(decisions())
def test_active_only_with_a_bound_ticket_of_an_open_session_before_its_deadlines(inputs):
    ticket, _cookie_key, record, now, _policy = inputs
    verdict = decide(*inputs)
    if verdict.state is State.ACTIVE:
        assert record is not None and record.ended_at is None
        assert bound(ticket, record)
        assert now < record.idle_deadline and now < record.absolute_deadline
        assert verdict.reason is None and not verdict.end_session


@st.composite
def live_sessions_with_their_ticket(draw):
    policy = draw(policies())
    record = draw(records(policy, ended=False))
    ticket = Ticket(userid=record.user_id, binding=ticket_binding(record.key),
                    issued=draw(ISSUED))
    now = draw(st.one_of(
        st.integers(NOW - 4 * policy.absolute_timeout, NOW + 4 * policy.absolute_timeout),
        st.integers(record.last_seen, max(record.last_seen, record.deadline + 2)),
        near(record.last_seen + policy.touch_interval), near(record.deadline)))
    return ticket, record.key, record, now, policy


@COMPOSITE
@given(live_sessions_with_their_ticket())
def test_a_bound_ticket_of_an_open_session_before_its_deadlines_is_active(inputs):
    _ticket, _cookie_key, record, now, _policy = inputs
    verdict = decide(*inputs)
    # The record is the one clock: the ticket's own time does not matter while it is live.
    assert (verdict.state is State.ACTIVE) == (now < record.deadline)


@COMPOSITE
@given(decisions())
def test_without_a_record_never_active_and_nothing_to_end(inputs):
    ticket, cookie_key, _record, now, policy = inputs
    verdict = decide(ticket, cookie_key, None, now, policy)
    assert verdict.state is not State.ACTIVE
    assert not verdict.end_session and not verdict.touch_due
    if ticket is None:
        assert verdict.state is State.ANONYMOUS and verdict.reason is None
    elif now >= ticket.issued + policy.idle_timeout:
        assert verdict.reason is Reason.TICKET_EXPIRED
    else:
        assert verdict.reason in (Reason.TICKET_MISMATCH, Reason.SESSION_LOST)
        assert (verdict.reason is Reason.SESSION_LOST) == (
            cookie_key is not None and ticket.binding == ticket_binding(cookie_key))


@COMPOSITE
@given(decisions(with_record=True, ended=True))
def test_an_ended_record_is_never_active_nor_ended_again(inputs):
    ticket, _cookie_key, record, _now, _policy = inputs
    verdict = decide(*inputs)
    assert verdict.state is State.ENDED and not verdict.end_session and not verdict.touch_due
    if ticket is not None and not bound(ticket, record):
        assert verdict.reason is Reason.TICKET_MISMATCH
    else:  # the tombstone tells the true reason
        assert verdict.reason == Reason(record.end_reason)


@COMPOSITE
@given(decisions())
def test_end_session_exactly_for_open_overdue_records_with_their_timeout(inputs):
    _ticket, _cookie_key, record, now, _policy = inputs
    verdict = decide(*inputs)
    overdue = record is not None and record.ended_at is None and now >= record.deadline
    # An open session past its deadline ends whoever asks, ticket or not.
    assert verdict.end_session == overdue
    if overdue:
        assert verdict.state is State.ENDED
        assert verdict.reason is ending_reason(record)
        assert verdict.reason in (Reason.IDLE_TIMEOUT, Reason.ABSOLUTE_TIMEOUT)
        expected = (Reason.ABSOLUTE_TIMEOUT if record.absolute_deadline <= record.idle_deadline
                    else Reason.IDLE_TIMEOUT)
        assert verdict.reason is expected


@st.composite
def touches(draw):
    """A live session and its ticket, asked about a few seconds around its touch interval."""
    policy = draw(policies())
    last_seen = draw(st.integers(NOW - 3600, NOW))
    record = SessionRecord(key=draw(st.sampled_from(KEYS)), user_id=draw(st.sampled_from(USERS)),
                           created=last_seen - draw(st.integers(0, 60)), last_seen=last_seen,
                           idle_deadline=last_seen + policy.idle_timeout,
                           absolute_deadline=last_seen + policy.absolute_timeout)
    ticket = Ticket(userid=record.user_id, binding=ticket_binding(record.key), issued=last_seen)
    now = last_seen + draw(st.one_of(near(policy.touch_interval),
                                     st.integers(0, policy.idle_timeout - 1)))
    return ticket, record.key, record, now, policy


@COMPOSITE
@given(decisions() | touches())
def test_touch_due_only_when_active_and_the_interval_has_passed(inputs):
    _ticket, _cookie_key, record, now, policy = inputs
    verdict = decide(*inputs)
    if verdict.touch_due:
        assert verdict.state is State.ACTIVE
    if verdict.state is State.ACTIVE:
        assert verdict.touch_due == (now - record.last_seen >= policy.touch_interval)


@COMPOSITE
@given(decisions())
def test_a_reason_exactly_when_ended(inputs):
    verdict = decide(*inputs)
    assert (verdict.reason is not None) == (verdict.state is State.ENDED)


@COMPOSITE
@given(decisions(with_record=True), st.none() | st.sampled_from(KEYS))
def test_with_a_record_the_binding_is_judged_against_the_records_own_key(inputs, other_key):
    """The cookie's claim does not matter once the record is known: only the record's key."""
    ticket, _cookie_key, record, now, policy = inputs
    assert decide(ticket, other_key, record, now, policy) == decide(*inputs)


# -- safe_path and same_site_path ---------------------------------------------------------------

#: Pieces of URLs, benign and hostile, so examples look like what attackers send.
URL_PIECES = [
    "/", "//", "\\", "/\\", "\\/", ".", "..", "./", "../", "%2F", "%2f", "%5C", "%5c", "%25",
    "%252F", "%2e", "%2E", "%09", "%0a", "%0d", "%00", "%20", "%E2%80%A8", "http:", "https:",
    "HTTPS:", "javascript:", "data:", ":", "@", "?", "#", "&", "=", ";", "evil.example",
    "localhost", "workspace", "a", "\t", "\n", "\r", " ", "\x00", "\x7f", "\u2028", "\u00e9",
    "\uff0f", "\u3002", "\u0435", "%", "%%", "%G0", "+",
]
url_like = st.lists(st.sampled_from(URL_PIECES), max_size=12).map("".join)
#: Paths of segments: dot segments and empty ones among them.
segment_paths = st.lists(st.sampled_from(["", ".", "..", "%2e", "%2E%2e", "a", "evil.example"]),
                         min_size=1, max_size=6).map(lambda segments: "/" + "/".join(segments))
candidates = st.one_of(
    url_like,
    url_like.map(lambda rest: "/" + rest),  # starts like a local path, then anything
    url_like.map(lambda rest: "/a" + rest),
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(string.printable + "\u00e9\u2028\uff0f\x7f"),
            max_size=60),
    segment_paths,
    # around the length limit
    st.integers(MAX_LENGTH - 2, MAX_LENGTH + 2).map(lambda n: "/" + "a" * (n - 1)),
)

CONTROL = {chr(i) for i in range(0x20)} | {"\x7f"}


def assert_local(path: str) -> None:
    """A path on this site, ASCII and printable, however often a later hop unquotes it."""
    assert path.startswith("/"), path
    assert path.isascii(), path
    assert not set(path) & (CONTROL | {" "}), path
    decoded = path
    for _ in range(6):
        assert decoded.startswith("/") and not decoded.startswith(("//", "/\\")), (path, decoded)
        assert "\\" not in decoded, (path, decoded)
        assert not set(decoded) & CONTROL, (path, decoded)
        parts = urlsplit(decoded)
        assert not parts.scheme and not parts.netloc, (path, decoded)
        decoded = unquote(decoded)


@PROPERTIES
@given(candidates)
def test_safe_path_always_returns_a_local_path(candidate):
    assert_local(safe_path(candidate))


@PROPERTIES
@given(candidates)
def test_safe_path_is_idempotent(candidate):
    once = safe_path(candidate)
    assert safe_path(once) == once


@PROPERTIES
@given(candidates)
def test_safe_path_either_keeps_the_candidate_or_falls_back(candidate):
    kept_a, kept_b = safe_path(candidate, fallback="/A"), safe_path(candidate, fallback="/B")
    if kept_a == "/A":  # refused: the fallback, whichever it is
        assert kept_b == "/B"
    else:  # kept: the same path, whatever the fallback
        assert kept_a == kept_b
        assert unquote(kept_a) == unquote(candidate)  # percent-encoded at most, never changed
        assert len(candidate) <= MAX_LENGTH


PLAIN = string.ascii_letters + string.digits + "-._~?&=;:@+!$'()*,"


@PROPERTIES
@given(st.sampled_from(PLAIN), st.text(alphabet=st.sampled_from(PLAIN + "/"), max_size=60))
def test_safe_path_returns_plain_local_paths_unchanged(first, rest):
    candidate = "/" + first + rest
    assume(not re.search(r"/\.\.?(/|$)", candidate))  # dot segments: see the test below
    assert safe_path(candidate) == candidate


DISGUISES = ["//", "/\\", "\\\\", "\\/", "/%2F", "/%2f", "%2F%2F", "/%5C", "/%5c", "/%252F",
             "/%25252F", " //", "\t//", "/\t/", "/\n/", "/\r/", "/%09/", "/%0a/", "/%00/",
             "https://", "HtTp://", "https:", "javascript:", "data:", "//@", "\\", "%2F/"]


@PROPERTIES
@given(st.sampled_from(DISGUISES), st.sampled_from(["evil.example", "localhost@evil.example",
                                                    "evil\u3002example", "\u0435vil.example",
                                                    "alert(1)", ""]), url_like)
def test_safe_path_refuses_network_paths_and_schemes_however_disguised(disguise, host, rest):
    assert safe_path(disguise + host + rest) == "/"


@PROPERTIES
@given(segment_paths | candidates)
@example("/.//evil.example")
@example("/a/..//evil.example")
@example("/%2e//evil.example")
def test_safe_path_stays_on_site_after_dot_segments_are_resolved(candidate):
    """What WebOb (urljoin) and browsers make of a Location: dot segments resolved, %2e read
    as a dot. ``/.//evil.example`` must not become the path ``//evil.example``."""
    resolved = urljoin("http://localhost/", safe_path(candidate).replace("%2e", ".")
                       .replace("%2E", "."))
    parts = urlsplit(resolved)
    assert parts.scheme == "http" and parts.netloc == "localhost", resolved
    assert not parts.path.startswith("//"), resolved


HOST = "https://app.example"


@PROPERTIES
@given(st.one_of(candidates, candidates.map(lambda rest: HOST + rest),
                 candidates.map(lambda rest: HOST + "/" + rest)))
def test_same_site_path_is_none_or_a_local_path(url):
    path = same_site_path(url, HOST)
    if path is not None:
        assert_local(path)
        assert safe_path(path) == path


@PROPERTIES
@given(st.sampled_from(["https://evil.example", "http://app.example", "//app.example",
                        "https://app.example.evil.example", "https://app.example@evil.example",
                        "https://app.example:443", "HTTPS://APP.EXAMPLE", "javascript:"]),
       candidates)
def test_same_site_path_refuses_other_origins(origin, rest):
    assert same_site_path(origin + "/" + rest, HOST) is None


@PROPERTIES
@given(candidates)
def test_same_site_path_of_this_site_is_the_safe_path(rest):
    path = "/" + rest
    expected = safe_path(path, fallback="")
    assert same_site_path(HOST + path, HOST) == (expected or None)


# -- merge --------------------------------------------------------------------------------------

MISSING = object()
NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
#: JSON-like values of one kind each (1 == True == 1.0 in Python, not in JSON).
VALUES = st.one_of(st.integers(-2, 2), st.sampled_from(["x", "y", ""]),
                   st.lists(st.integers(0, 1), max_size=2))
SESSIONS = st.dictionaries(NAMES, VALUES, max_size=5)


@st.composite
def edits(draw, base: dict) -> dict:
    """``base`` with some keys changed, deleted or added, as one request would."""
    edited = dict(base)
    for name in draw(st.lists(NAMES, max_size=5)):
        if draw(st.booleans()) and name in edited:
            del edited[name]
        else:
            edited[name] = draw(VALUES)
    return edited


@st.composite
def three_way(draw):
    base = draw(SESSIONS)
    return base, draw(edits(base)), draw(edits(base))


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def merged_with_warnings(base, ours, theirs):
    handler = Warnings()
    logger = logging.getLogger("session_expiry.stores")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        return merge(base, ours, theirs, key="0123456789abcdef"), handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@COMPOSITE
@given(three_way())
def test_merge_takes_our_changes_and_keeps_theirs_otherwise(inputs):
    base, ours, theirs = inputs
    copies = [dict(d) for d in inputs]
    merged, _ = merged_with_warnings(base, ours, theirs)
    assert [base, ours, theirs] == copies, "merge must not change its arguments"
    for name in base.keys() | ours.keys() | theirs.keys():
        before, after = base.get(name, MISSING), ours.get(name, MISSING)
        if before != after:  # changed (or added, or deleted) on our side: ours wins
            assert merged.get(name, MISSING) == after, name
        else:  # not ours to change: whatever they have (changed or not, deleted or not)
            assert merged.get(name, MISSING) == theirs.get(name, MISSING), name
    assert merged.keys() <= ours.keys() | theirs.keys()


@COMPOSITE
@given(three_way())
def test_merge_warns_exactly_when_both_changed_a_key_differently(inputs):
    base, ours, theirs = inputs
    _, messages = merged_with_warnings(base, ours, theirs)
    conflicts = {
        name for name in base.keys() | ours.keys()
        if base.get(name, MISSING) != ours.get(name, MISSING)
        and theirs.get(name, MISSING) not in (base.get(name, MISSING), ours.get(name, MISSING))
    }
    assert len(messages) == len(conflicts)
    for name in conflicts:
        assert any(repr(name) in message for message in messages)


@COMPOSITE
@given(three_way())
def test_merge_of_a_request_that_changed_nothing_is_theirs_and_of_no_other_writer_is_ours(
        inputs):
    base, ours, theirs = inputs
    assert merged_with_warnings(base, dict(base), theirs)[0] == theirs
    assert merged_with_warnings(base, ours, dict(base))[0] == ours


@COMPOSITE
@given(three_way())
def test_merge_of_two_requests_changing_different_keys_keeps_both(inputs):
    base, ours, theirs = inputs
    changed_ours = {n for n in base.keys() | ours.keys()
                    if base.get(n, MISSING) != ours.get(n, MISSING)}
    changed_theirs = {n for n in base.keys() | theirs.keys()
                      if base.get(n, MISSING) != theirs.get(n, MISSING)}
    assume(not changed_ours & changed_theirs)
    merged, messages = merged_with_warnings(base, ours, theirs)
    assert not messages
    # Order does not matter when the changes do not overlap.
    assert merged == merged_with_warnings(base, theirs, ours)[0]


# -- tickets ------------------------------------------------------------------------------------

SECRET = derive_secret("test-secret-0123456789-0123456789-0123456789", "auth-ticket")


@PROPERTIES
@given(st.sampled_from(USERS), st.sampled_from(KEYS), st.integers(0, 2**31 - 1),
       st.data())
def test_a_ticket_changed_in_one_character_is_no_ticket(userid, key, issued, data):
    value = build_ticket(SECRET, userid, ticket_binding(key), issued)
    original = read_ticket(SECRET, value)
    assert original == Ticket(userid=userid, binding=ticket_binding(key), issued=issued)
    assert read_ticket(derive_secret("another-secret-0123456789-0123456789", "auth-ticket"),
                       value) is None
    position = data.draw(st.integers(0, len(value) - 1))
    replacement = data.draw(st.sampled_from(string.ascii_letters + string.digits + "!-_ \u00e9"))
    assume(replacement != value[position])
    forged = value[:position] + replacement + value[position + 1:]
    # A hex digit of the timestamp in the other case reads as the same time: the same ticket.
    assert read_ticket(SECRET, forged) in (None, original)
    assert read_ticket(SECRET, value[:data.draw(st.integers(0, len(value) - 1))]) is None
