"""What the tween reads from a request, each read once: the cookies, the peer address, the
user agent, and whether its parameters can be read at all.

The Cookie header is read here and nowhere else: WebOb and Python's
``http.cookies`` (Beaker's parser) disagree on malformed headers, so a cookie
counts only when both read the same single value (:func:`agreed_cookies`). The
client's address is the WSGI server's ``REMOTE_ADDR``, never a header a
client can write.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from http.cookies import CookieError, SimpleCookie
from ipaddress import ip_address

from beaker.session import SignedCookie
from webob.cookies import parse_cookie

from .decision import Ticket
from .stores import session_key
from .stores.beaker import SESSION_ID_BYTES
from .ticket import read_ticket

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(rf"[0-9a-f]{{{2 * SESSION_ID_BYTES}}}")
MAX_COOKIE_LENGTH = 512
#: The longest address the stores keep (an IPv4-mapped IPv6 address).
IP_LENGTH = 45
#: The longest user agent the stores keep.
USER_AGENT_LENGTH = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def peer_address(environ) -> str | None:
    """The client's address as the WSGI server gives it (``REMOTE_ADDR``), or None.

    Behind a proxy the server has already put the client's address there when it
    trusts that proxy (waitress: ``trusted_proxy``); a raw ``X-Forwarded-For`` is
    anybody's word and is never read here.
    """
    try:
        address = ip_address(environ.get("REMOTE_ADDR") or "")
    except ValueError:
        return None
    # A dual-stack server reports IPv4 clients as ::ffff:a.b.c.d: keep the IPv4 address.
    text = str(getattr(address, "ipv4_mapped", None) or address)
    return text if len(text) <= IP_LENGTH else None


def user_agent(environ) -> str | None:
    """The client's ``User-Agent`` as the stores keep it: control characters (a NUL
    is refused by PostgreSQL) dropped, cut to ``USER_AGENT_LENGTH``; None if empty."""
    text = _CONTROL.sub("", environ.get("HTTP_USER_AGENT", ""))
    return text[:USER_AGENT_LENGTH] or None


def parameters_readable(request) -> bool:
    """True when WebOb can read the query string and the form body as text.

    WebOb raises on a query string that is not UTF-8 once percent-decoded, and on
    a form in another charset (or one Python does not know), wherever they are
    first read: in a view, in the CSRF check. Asked once, before any of them,
    the tween answers such a request with a 400. Both are cached for the views.
    A request with neither (no query string; not a POST, no Content-Type: WebOb
    reads no form from it) is readable as it is.
    """
    environ = request.environ
    if not (environ.get("QUERY_STRING") or environ.get("CONTENT_TYPE")
            or environ.get("REQUEST_METHOD") == "POST"):
        return True
    try:
        request.GET, request.POST  # noqa: B018 (parsed for their errors)
    except (UnicodeDecodeError, LookupError, DeprecationWarning):
        return False
    return True


def read_session_id(cookie_secret: str, value: str | None) -> str | None:
    """The session id a (Beaker-signed) session cookie names, or None."""
    if not value or len(value) > MAX_COOKIE_LENGTH:
        return None
    session_id, _ = SignedCookie(cookie_secret).value_decode(value)
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        return None
    return session_id


def read_session_key(cookie_secret: str, value: str | None) -> str | None:
    """The store key of the session a session cookie names, or None."""
    session_id = read_session_id(cookie_secret, value)
    return session_key(session_id) if session_id else None


def agreed_cookies(header: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """For each of ``names``, the one value every parser reads in ``header``, or None.

    WebOb (the tween, the CSRF check) takes the last of two cookies of one name;
    Python's ``http.cookies`` (Beaker's parser) stops at a stray quote and takes
    the first. A header the two read differently, or that holds two different
    values, names no cookie at all: nobody can aim one reader at one session and
    another reader at another.
    """
    webob = _webob_cookies(header)
    standard = SimpleCookie()
    try:
        standard.load(header)
    except CookieError:
        return dict.fromkeys(names)
    agreed: dict[str, str | None] = {}
    for name in names:
        values = {value for key, value in webob if key == name}
        morsel = standard.get(name)
        agreed[name] = (values.pop() if len(values) == 1 and morsel is not None
                        and morsel.value in values else None)
    return agreed


@dataclass(frozen=True)
class SentCookies:
    """What a request's cookies say, as the decision needs it."""

    ticket: Ticket | None  # a validly signed ticket, read alike by every parser
    ticket_sent: bool  # a ticket cookie came at all, readable or not
    session_id: str | None  # the id a validly signed session cookie names
    session_key: str | None  # the key that id is stored under


class CookieReader:
    """Reads a Cookie header into :class:`SentCookies`, each distinct header once.

    The answer is a pure function of the header and the secrets (a ticket's age is
    judged later, against the clock), so a browser whose cookies did not change
    costs a lookup instead of two parsers and two signature checks per request.
    Bounded: the ``size`` most recently used headers.
    """

    def __init__(self, ticket_cookie: str, session_cookie: str, ticket_secret: str,
                 cookie_secret: str, size: int = 4096):
        self.names = (ticket_cookie, session_cookie)
        self.ticket_secret = ticket_secret
        self.cookie_secret = cookie_secret
        self.read = lru_cache(maxsize=size)(self._read)

    def _read(self, header: str) -> SentCookies:
        ticket_cookie, session_cookie = self.names
        agreed = agreed_cookies(header, self.names)
        session_id = read_session_id(self.cookie_secret, agreed[session_cookie])
        return SentCookies(
            ticket=read_ticket(self.ticket_secret, agreed[ticket_cookie]),
            ticket_sent=any(name == ticket_cookie for name, _ in _webob_cookies(header)),
            session_id=session_id,
            session_key=session_key(session_id) if session_id else None)


def _webob_cookies(header: str) -> list[tuple[str, str]]:
    return [(key.decode("utf-8"), value.decode("utf-8")) for key, value in parse_cookie(header)]


def readable_cookie_header(request) -> str:
    """The Cookie header, after dropping every cookie that is not plain ASCII.

    Cookie octets are ASCII (RFC 6265). On other bytes the parsers part ways:
    WebOb raises (if they are not UTF-8) or cuts the value short, and Python's
    ``http.cookies`` stops reading, losing every cookie after it. Dropping such
    a cookie for the whole request (the tween, the CSRF check, the host app)
    leaves one header that every parser reads alike; a stray ``lang=français``
    does not sign anybody out.
    """
    header = request.environ.get("HTTP_COOKIE", "")
    if not header.isascii():
        parts = header.split(";")
        kept = [part for part in parts if part.isascii()]
        header = request.environ["HTTP_COOKIE"] = ";".join(kept)
        log.info("dropped %d cookie(s) that are not ASCII", len(parts) - len(kept))
    return header
