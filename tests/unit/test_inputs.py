"""What the tween reads from a request: a cookie counts only when every parser reads the same
single value; the client's address is the WSGI server's."""
from __future__ import annotations

import pytest
from beaker.session import SignedCookie
from webob import Request

from session_expiry.inputs import (
    USER_AGENT_LENGTH,
    CookieReader,
    agreed_cookies,
    parameters_readable,
    peer_address,
    read_session_id,
    readable_cookie_header,
    user_agent,
)
from session_expiry.stores.beaker import new_session_id
from session_expiry.ticket import build_ticket

A = "a" * 64
B = "b" * 64
SECRET = "cookie-secret"


@pytest.mark.parametrize(("header", "expected"), [
    pytest.param(f"session={A}", A, id="one"),
    pytest.param(f"other=1; session={A}; x=2", A, id="among_others"),
    pytest.param(f'session="{A}"', A, id="quoted"),
    pytest.param(f"session={A}; session={A}", A, id="the_same_twice"),
    pytest.param("", None, id="no_header"),
    pytest.param("other=1", None, id="absent"),
    pytest.param(f"session={A}; session={B}", None, id="two_values"),
    pytest.param(f"session={B}; session={A}", None, id="two_values_reordered"),
    pytest.param(f'session={B}; junk="a; session={A}; auth_tkt=t', None,
                 id="stray_quote_hides_the_second_from_one_parser"),
    pytest.param(f'junk="a; session={A}', None, id="only_one_parser_sees_it"),
    pytest.param(f"session={A}\x7f", None, id="control_character"),
])
def test_a_cookie_counts_only_when_every_parser_reads_one_same_value(header, expected):
    assert agreed_cookies(header, ("session",)) == {"session": expected}


@pytest.mark.parametrize(("header", "kept"), [
    pytest.param(f"session={A}; lang=fran\xc3\xa7ais; t=1", f"session={A}; t=1", id="utf8"),
    pytest.param(f"session={A}; junk=\xff\xfe; t=1", f"session={A}; t=1", id="not_utf8"),
    pytest.param(f"session=\xff{A}; t=1", " t=1", id="in_the_value"),
    pytest.param(f"\xffsession={A}; t=1", " t=1", id="in_the_name"),
    pytest.param(f"session={A}; t=1", f"session={A}; t=1", id="ascii_untouched"),
])
def test_cookies_that_are_not_ascii_are_dropped_for_the_whole_request(header, kept):
    request = Request.blank("/", environ={"HTTP_COOKIE": header})
    assert readable_cookie_header(request) == kept
    assert request.environ["HTTP_COOKIE"] == kept, "the host app reads the same header"
    # Every parser now reads what follows the dropped cookie.
    assert agreed_cookies(kept, ("t",)) == {"t": "1"}
    assert request.cookies.get("t") == "1"


def test_a_cookie_named_differently_is_not_the_cookie():
    assert agreed_cookies(f"Session={A}; session_x={B}", ("session",)) == {"session": None}


def test_a_validly_signed_session_cookie_names_its_id():
    _, value = SignedCookie(SECRET).value_encode(A)
    assert read_session_id(SECRET, value) == A


@pytest.mark.parametrize("value", [None, "", "x" * 600, A, "garbage==="])
def test_an_unsigned_missing_or_oversized_session_cookie_names_nothing(value):
    assert read_session_id(SECRET, value) is None


def test_a_session_id_shorter_than_256_bits_names_nothing():
    """Beaker's own ids (uuid4, 122 random bits) are not ours: ASVS 5.0 7.2.3."""
    _, value = SignedCookie(SECRET).value_encode("a" * 32)
    assert read_session_id(SECRET, value) is None


def test_new_session_ids_are_256_random_bits():
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(session_id) == 64 and set(session_id) <= set("0123456789abcdef")
               for session_id in ids)
    assert len(set("".join(ids))) == 16, "every hex digit occurs"


def test_a_session_cookie_signed_with_another_secret_names_nothing():
    _, value = SignedCookie("another-secret").value_encode(A)
    assert read_session_id(SECRET, value) is None


@pytest.mark.parametrize(("remote", "expected"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    (None, None), ("", None), ("not-an-address", None), ("192.0.2.7, 10.0.0.1", None),
    ("fe80::1%" + "e" * 60, None),
])
def test_the_peer_address_is_remote_addr_validated_and_normalised(remote, expected):
    environ = {} if remote is None else {"REMOTE_ADDR": remote}
    environ["HTTP_X_FORWARDED_FOR"] = "203.0.113.9"
    assert peer_address(environ) == expected


@pytest.mark.parametrize(("sent", "kept"), [
    ("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("Mozilla/5.0\x00evil", "Mozilla/5.0evil"),
    ("a\r\nSet-Cookie: x=1\x7f", "aSet-Cookie: x=1"),
    ("caf\xc3\xa9", "caf\xc3\xa9"),
    ("x" * 600, "x" * USER_AGENT_LENGTH),
    ("", None), ("\x00\x01", None), (None, None),
])
def test_the_user_agent_is_kept_without_control_characters_and_cut(sent, kept):
    environ = {} if sent is None else {"HTTP_USER_AGENT": sent}
    assert user_agent(environ) == kept


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(("query", "content_type", "body", "readable"), [
    ("", None, b"", True),
    ("came_from=/workspace&q=caf%C3%A9", None, b"", True),
    ("came_from=/%FF%FE", None, b"", False),
    ("%FF=1", None, b"", False),
    ("", FORM, b"title=caf%C3%A9", True),
    ("", FORM + "; charset=UTF-8", b"title=x", True),
    ("", FORM + "; charset=ISO-8859-1", b"title=caf%E9", False),
    ("", FORM + "; charset=no-such-charset", b"title=x", False),
    ("", "application/json; charset=no-such-charset", b"{}", True),  # the view's to read
])
def test_parameters_are_readable_only_in_utf8(query, content_type, body, readable):
    request = Request.blank("/?" + query if query else "/", method="POST" if body else "GET",
                            body=body or None, content_type=content_type)
    assert parameters_readable(request) is readable


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_a_form_in_another_charset_is_unreadable_whatever_the_method(method):
    request = Request.blank("/", method=method, body=b"title=caf%E9",
                            content_type=FORM + "; charset=ISO-8859-1")
    assert parameters_readable(request) is False


def reader(size: int = 4096) -> CookieReader:
    return CookieReader("auth_tkt", "session", "ticket-secret", SECRET, size=size)


def test_the_cookie_reader_reads_the_ticket_and_the_session_id():
    ticket = build_ticket("ticket-secret", "42", "s" + A, 1_800_000_000)
    _, session = SignedCookie(SECRET).value_encode(A)
    sent = reader().read(f"session={session}; auth_tkt={ticket}; other=1")
    assert sent.session_id == A
    assert (sent.ticket.userid, sent.ticket.binding, sent.ticket.issued) == \
        ("42", "s" + A, 1_800_000_000)
    assert sent.ticket_sent


@pytest.mark.parametrize(("header", "ticket_sent"), [
    ("auth_tkt=forged", True),
    ('auth_tkt=x; junk="a; auth_tkt=y', True),
    ("session=unsigned", False),
    ("", False),
])
def test_the_cookie_reader_reads_nothing_from_forged_or_ambiguous_cookies(header, ticket_sent):
    sent = reader().read(header)
    assert (sent.ticket, sent.session_id, sent.ticket_sent) == (None, None, ticket_sent)


def test_the_cookie_reader_reads_each_distinct_header_once_and_forgets_the_oldest():
    cookies = reader(size=2)
    first = cookies.read("session=a")
    assert cookies.read("session=a") is first, "the same header: the answer kept"
    cookies.read("session=b")
    cookies.read("session=c")  # the oldest, "session=a", is forgotten
    assert cookies.read("session=a") is not first
    assert cookies.read("session=a") == first
