"""What the tween reads from a request: one linear pass keeps the well-formed cookies, and
every other parser reads only those; the client's address is the WSGI server's."""
from __future__ import annotations

import time

import pytest
from beaker.session import SignedCookie
from hypothesis import given
from hypothesis import strategies as st
from webob import Request
from webob.cookies import parse_cookie

from session_expiry.inputs import (
    USER_AGENT_LENGTH,
    CookieReader,
    parameters_readable,
    peer_address,
    read_cookie_header,
    read_session_id,
    user_agent,
)
from session_expiry.stores import session_key
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
    pytest.param(f"session = {A} ;x=1", A, id="spaces_around"),
    pytest.param(f"session={A};x=1", A, id="no_space"),
    pytest.param("", None, id="no_header"),
    pytest.param("other=1", None, id="absent"),
    pytest.param(f"session={A}; session={B}", None, id="two_values"),
    pytest.param(f"session={B}; session={A}", None, id="two_values_reordered"),
    pytest.param(f'session={B}; junk="a; session={A}; auth_tkt=t', None,
                 id="a_stray_quote_hides_nothing_two_values_stay_two"),
    pytest.param(f'junk="a; session={A}', A, id="a_stray_quote_is_dropped_alone"),
    pytest.param(f"session={A}\x7f", None, id="control_character"),
    pytest.param(f"session={A}, x=1", None, id="comma"),
    pytest.param(f"session={A}[1]", None, id="bracket_webob_stops_at"),
    pytest.param(f'session="{A}\\"', None, id="backslash_in_quotes"),
    pytest.param(f"Session={A}; session_x={B}", None, id="named_differently"),
])
def test_a_cookie_counts_only_when_the_header_gives_it_one_well_formed_value(header, expected):
    assert read_cookie_header(header).value("session") == expected


@pytest.mark.parametrize(("header", "kept"), [
    pytest.param(f"session={A}; lang=fran\xc3\xa7ais; t=1", f"session={A}; t=1", id="utf8"),
    pytest.param(f"session={A}; junk=\xff\xfe; t=1", f"session={A}; t=1", id="not_utf8"),
    pytest.param(f"session=\xff{A}; t=1", "t=1", id="in_the_value"),
    pytest.param(f"\xffsession={A}; t=1", "t=1", id="in_the_name"),
    pytest.param('=; "; ==; x; "q"=1; t=1', "t=1", id="garbage"),
    pytest.param('a="b\\"; t=1', "t=1", id="backslash"),
    pytest.param(f'session="{A}";t=1', f"session={A}; t=1", id="quotes_taken_off"),
    pytest.param(f"session={A}; t=1", f"session={A}; t=1", id="well_formed_untouched"),
])
def test_malformed_cookies_are_dropped_for_the_whole_request(header, kept):
    request = Request.blank("/", environ={"HTTP_COOKIE": header})
    reader().read(request.environ)
    assert request.environ["HTTP_COOKIE"] == kept, "the host app reads the same header"
    assert request.cookies.get("t") == "1"
    assert list(request.cookies.items()) == list(read_cookie_header(kept).pairs)


@given(st.lists(st.sampled_from([*' =;"\\,[]\t\x00\x7fa0%+éÿ', "session"]),
                max_size=40).map("".join))
def test_webob_reads_the_kept_header_exactly_as_the_reader_does(header):
    """Whatever came, the header the rest of the request reads holds the pairs we read."""
    cookies = read_cookie_header(header)
    webob = [(key.decode(), value.decode()) for key, value in parse_cookie(cookies.text)]
    assert webob == list(cookies.pairs)
    assert read_cookie_header(cookies.text).pairs == cookies.pairs


HOSTILE = {
    "letters": lambda n: "a" * n,  # WebOb: quadratic
    "unterminated_quote": lambda n: 'a="' + "x" * n,  # WebOb: quadratic
    "backslashes_quoted": lambda n: 'a="' + "\\" * n + '"',  # http.cookies < 3.11.10: quadratic
    "many_pairs": lambda n: "a=b;" * (n // 4),
    "spaces": lambda n: "a" + " " * n + "=1",
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
def test_reading_a_hostile_header_and_webob_after_it_take_linear_time(make):
    """Work is counted, not timed: the reader's steps, and WebOb's on what the reader kept,
    grow with the header no faster than its length (a quadratic parser's grow 16x)."""
    def cost(length: int) -> int:
        cookies = read_cookie_header(make(length))
        return len(cookies.pairs) + len(list(parse_cookie(cookies.text)))

    small, large = make(4096), make(16 * 4096)
    assert len(large) / len(small) >= 15
    started = time.perf_counter()
    read_cookie_header(large)
    list(parse_cookie(read_cookie_header(large).text))
    # 64 KiB: a linear pass takes milliseconds; WebOb on the raw "letters" header takes minutes.
    assert time.perf_counter() - started < 5
    assert cost(16 * 4096) <= 17 * max(1, cost(4096))


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


def reader(max_header: int = 16 * 1024) -> CookieReader:
    return CookieReader("auth_tkt", "session", "ticket-secret", SECRET, max_header)


def test_the_cookie_reader_reads_the_ticket_and_the_session_id():
    ticket = build_ticket("ticket-secret", "42", "s" + A, 1_800_000_000)
    _, session = SignedCookie(SECRET).value_encode(A)
    sent = reader().read({"HTTP_COOKIE": f"session={session}; auth_tkt={ticket}; other=1"})
    assert sent.session_id == A
    assert (sent.ticket.userid, sent.ticket.binding, sent.ticket.issued) == \
        ("42", "s" + A, 1_800_000_000)
    assert sent.ticket_sent
    assert not sent.too_large


@pytest.mark.parametrize(("header", "ticket_sent"), [
    ("auth_tkt=forged", True),
    ("auth_tkt=x; auth_tkt=y", True),
    ("session=unsigned", False),
    ("", False),
])
def test_the_cookie_reader_reads_nothing_from_forged_or_ambiguous_cookies(header, ticket_sent):
    sent = reader().read({"HTTP_COOKIE": header})
    assert (sent.ticket, sent.session_id, sent.ticket_sent) == (None, None, ticket_sent)


def test_a_header_past_the_bound_is_read_as_none_and_nothing_else_reads_it():
    ticket = build_ticket("ticket-secret", "42", "s" + A, 1_800_000_000)
    _, session = SignedCookie(SECRET).value_encode(A)
    header = f"session={session}; auth_tkt={ticket}; pad=" + "x" * 4096
    environ = {"HTTP_COOKIE": header}
    sent = reader(max_header=4096).read(environ)
    assert (sent.ticket, sent.session_id, sent.too_large) == (None, None, len(header))
    assert environ["HTTP_COOKIE"] == ""
    assert reader(max_header=len(header)).read({"HTTP_COOKIE": header}).session_id == A


def test_the_cookie_reader_keeps_no_credential_and_a_bounded_number_of_checks():
    """What is kept between requests is a digest and an answer per signed value: never a
    session id, a ticket or a header, and never more than ``size`` of them."""
    cookies = CookieReader("auth_tkt", "session", "ticket-secret", SECRET, 16 * 1024, size=8)
    ids = [new_session_id() for _ in range(20)]
    for session_id in ids:
        _, session = SignedCookie(SECRET).value_encode(session_id)
        ticket = build_ticket("ticket-secret", "42", "s" + session_id[:32], 1_800_000_000)
        sent = cookies.read({"HTTP_COOKIE": f"session={session}; auth_tkt={ticket}"})
        assert sent.session_id == session_id
        assert sent.session_key == session_key(session_id)
    kept = repr(vars(cookies._ticket)) + repr(vars(cookies._session_key)) \
        + repr(vars(cookies._headers))
    assert len(cookies._ticket) == len(cookies._session_key) == len(cookies._headers) == 8
    assert not any(session_id in kept for session_id in ids)
    assert "auth_tkt" not in kept and "session=" not in kept


@pytest.mark.parametrize("order", [
    "session={s}; auth_tkt={t}", "auth_tkt={t}; session={s}", "a=1; session={s}; b=2",
    "session={s}", "xsession={s}; session={s}; auth_tkt={t}", "auth_tkt={t}",
    "session={s}; session={s}", "session={s}; auth_tkt=forged"])
def test_a_header_read_again_is_read_from_memory_as_it_was_read_afresh(order):
    ticket = build_ticket("ticket-secret", "42", "s" + A[:32], 1_800_000_000)
    _, session = SignedCookie(SECRET).value_encode(A)
    header = order.format(s=session, t=ticket)
    cookies = reader()
    first = cookies.read({"HTTP_COOKIE": header})
    assert len(cookies._headers) == 1, "a well-formed header is remembered"
    again = cookies.read({"HTTP_COOKIE": header})
    assert again == first == reader().read({"HTTP_COOKIE": header})
    assert again.session_id == (A if "session=" in order.replace("xsession", "") else None)


def test_a_malformed_header_is_read_afresh_every_time_and_never_remembered():
    _, session = SignedCookie(SECRET).value_encode(A)
    cookies = reader()
    for _ in range(2):
        environ = {"HTTP_COOKIE": f'session={session}; junk="\\x'}
        assert cookies.read(environ).session_id == A
        assert environ["HTTP_COOKIE"] == f"session={session}", "rewritten each time"
    assert len(cookies._headers) == 0


def test_a_tampered_header_is_not_read_from_the_memory_of_the_genuine_one():
    _, session = SignedCookie(SECRET).value_encode(A)
    cookies = reader()
    assert cookies.read({"HTTP_COOKIE": f"session={session}"}).session_id == A
    tampered = f"session={session[:40]}{B}"
    assert cookies.read({"HTTP_COOKIE": tampered}).session_id is None


def test_a_check_remembered_is_the_check_of_that_value_only():
    cookies = reader()
    _, session = SignedCookie(SECRET).value_encode(A)
    assert cookies.read({"HTTP_COOKIE": f"session={session}"}).session_id == A
    tampered = session[:40] + B
    assert cookies.read({"HTTP_COOKIE": f"session={tampered}"}).session_id is None
    assert cookies.read({"HTTP_COOKIE": f"session={session}"}).session_id == A
