"""The auth ticket: built from the record's ``now``, read without ever raising."""
from __future__ import annotations

import re

import pytest
from pyramid.authentication import AuthTicket

from session_expiry.decision import Ticket, ticket_binding
from session_expiry.stores import session_key
from session_expiry.ticket import (
    HASHALG,
    IP,
    MAX_LENGTH,
    build_ticket,
    derive_secret,
    read_ticket,
)

SECRET = derive_secret("a-test-secret-that-is-long-enough-0123456789", "auth-ticket")
OTHER_SECRET = derive_secret("another-secret-that-is-long-enough-987654", "auth-ticket")
NOW = 1_800_000_000
BINDING = ticket_binding(session_key("the-session-id"))


@pytest.fixture
def good() -> str:
    return build_ticket(SECRET, "42", BINDING, NOW)


@pytest.mark.parametrize(("userid", "now"), [
    ("42", NOW), ("1", NOW + 1), ("alice", 1_000_000_000), ("user@example.com", NOW),
    ("a b/c", NOW),
])
def test_built_ticket_reads_back_as_given(userid, now):
    value = build_ticket(SECRET, userid, BINDING, now)
    assert read_ticket(SECRET, value) == Ticket(userid=userid, binding=BINDING, issued=now)


def test_ticket_is_a_cookie_safe_ascii_string(good):
    assert isinstance(good, str)
    assert good.isascii()
    assert not any(char in good for char in ' ;,"\r\n')
    assert len(good) <= MAX_LENGTH


def test_ticket_issued_time_is_the_given_now_not_the_wall_clock():
    past = 1_000_000_000
    assert read_ticket(SECRET, build_ticket(SECRET, "42", BINDING, past)).issued == past


def test_expired_ticket_still_reads_the_decision_judges_time():
    old = build_ticket(SECRET, "42", BINDING, NOW - 365 * 86400)
    ticket = read_ticket(SECRET, old)
    assert ticket is not None
    assert ticket.issued == NOW - 365 * 86400


def test_quoted_cookie_value_reads(good):
    assert read_ticket(SECRET, f'"{good}"') == Ticket("42", BINDING, NOW)


def test_ticket_signed_with_another_secret_reads_as_none():
    forged = build_ticket(OTHER_SECRET, "42", BINDING, NOW)
    assert read_ticket(SECRET, forged) is None


def _tamper(value: str, index: int, char: str) -> str:
    return value[:index] + char + value[index + 1:]


@pytest.mark.parametrize("mangle", [
    pytest.param(lambda t: t[:-1], id="last_char_cut"),
    pytest.param(lambda t: t[:-10], id="truncated"),
    pytest.param(lambda t: t[:130], id="truncated_into_timestamp"),
    pytest.param(lambda t: t[:100], id="truncated_into_digest"),
    pytest.param(lambda t: t.replace("!", "", 1), id="separator_removed"),
    pytest.param(lambda t: _tamper(t, 0, "0" if t[0] != "0" else "1"), id="digest_tampered"),
    pytest.param(lambda t: _tamper(t, 130, "f" if t[130] != "f" else "e"),
                 id="timestamp_tampered"),
    pytest.param(lambda t: t.replace("!42!", "!43!", 1) if "!42!" in t
                 else t.replace("42!", "43!", 1), id="userid_changed"),
    pytest.param(lambda t: t.replace(BINDING, "s" + "0" * 32), id="binding_changed"),
    pytest.param(lambda t: t + "x", id="trailing_junk"),
], )
def test_tampered_ticket_reads_as_none(good, mangle):
    value = mangle(good)
    assert value != good
    assert read_ticket(SECRET, value) is None


@pytest.mark.parametrize("value", [
    pytest.param(None, id="none"),
    pytest.param("", id="empty"),
    pytest.param("garbage", id="garbage"),
    pytest.param("!!!", id="only_separators"),
    pytest.param("0" * 128 + "zzzzzzzz" + "42!s!", id="timestamp_not_hex"),
    pytest.param("0" * 136 + "42", id="no_separator_after_userid"),
    pytest.param("é" * 200, id="non_ascii_everywhere"),
    pytest.param("\x00\x01\x02" * 50, id="control_bytes"),
    pytest.param("😀" * 300, id="emoji"),
], )
def test_garbage_reads_as_none_without_raising(value):
    assert read_ticket(SECRET, value) is None


@pytest.mark.parametrize("place", [
    pytest.param(5, id="in_digest"),
    pytest.param(127, id="last_digest_char"),
    pytest.param(131, id="in_timestamp"),
    pytest.param(136, id="in_userid"),
    pytest.param(-2, id="in_tokens"),
])
def test_ticket_with_a_non_ascii_character_reads_as_none_without_raising(good, place):
    index = place % len(good)
    value = _tamper(good, index, "é")
    assert read_ticket(SECRET, value) is None


def test_oversized_ticket_reads_as_none_even_when_validly_signed():
    value = build_ticket(SECRET, "u" * (MAX_LENGTH + 1), BINDING, NOW)
    assert len(value) > MAX_LENGTH
    assert read_ticket(SECRET, value) is None


def test_oversized_garbage_reads_as_none():
    assert read_ticket(SECRET, "a" * (MAX_LENGTH + 1)) is None
    assert read_ticket(SECRET, "é" * 100_000) is None


def test_ticket_with_more_than_one_token_has_no_binding():
    value = AuthTicket(SECRET, "42", IP, tokens=(BINDING, "sother"), time=NOW,
                       hashalg=HASHALG).cookie_value()
    ticket = read_ticket(SECRET, value)
    assert ticket is not None
    assert ticket.binding == ""
    assert ticket.binding != BINDING


def test_ticket_without_tokens_has_no_binding():
    value = AuthTicket(SECRET, "42", IP, tokens=(), time=NOW, hashalg=HASHALG).cookie_value()
    ticket = read_ticket(SECRET, value)
    assert ticket is not None and ticket.binding == ""


def test_ticket_bound_to_an_address_does_not_read():
    # Tickets are never bound to an address; one that is must not pass as ours.
    value = AuthTicket(SECRET, "42", "10.0.0.1", tokens=(BINDING,), time=NOW,
                       hashalg=HASHALG).cookie_value()
    assert read_ticket(SECRET, value) is None


def test_derive_secret_gives_a_different_key_per_purpose():
    master = "a-test-secret-that-is-long-enough-0123456789"
    ticket_key = derive_secret(master, "auth-ticket")
    cookie_key = derive_secret(master, "session-cookie")
    assert ticket_key != cookie_key
    assert master not in (ticket_key, cookie_key)
    assert derive_secret(master, "auth-ticket") == ticket_key, "derivation is deterministic"
    assert derive_secret(master + "x", "auth-ticket") != ticket_key
    assert re.fullmatch(r"[0-9a-f]{64}", ticket_key), "256 bits, as hex"


def test_ticket_signed_with_the_cookie_key_does_not_read_with_the_ticket_key():
    master = "a-test-secret-that-is-long-enough-0123456789"
    value = build_ticket(derive_secret(master, "session-cookie"), "42", BINDING, NOW)
    assert read_ticket(derive_secret(master, "auth-ticket"), value) is None
