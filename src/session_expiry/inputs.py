"""What the tween reads from a request, each read once: the cookies and the peer address.

The Cookie header is read here and nowhere else: WebOb and Python's
``http.cookies`` (Beaker's parser) disagree on malformed headers, so a cookie
counts only when both read the same single value (:func:`agreed_cookie`). The
client's address is the WSGI server's ``REMOTE_ADDR``, never a header a
client can write.
"""
from __future__ import annotations

import logging
import re
from http.cookies import CookieError, SimpleCookie
from ipaddress import ip_address

from beaker.session import SignedCookie
from webob.cookies import parse_cookie

from .stores import session_key
from .stores.beaker import SESSION_ID_BYTES

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(rf"[0-9a-f]{{{2 * SESSION_ID_BYTES}}}")
MAX_COOKIE_LENGTH = 512
#: The longest address the stores keep (an IPv4-mapped IPv6 address).
IP_LENGTH = 45


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


def agreed_cookie(header: str, name: str) -> str | None:
    """The one value of cookie ``name`` that every parser reads in ``header``, or None.

    WebOb (the tween, the CSRF check) takes the last of two cookies of one name;
    Python's ``http.cookies`` (Beaker's parser) stops at a stray quote and takes
    the first. A header the two read differently, or that holds two different
    values, names no cookie at all: nobody can aim one reader at one session and
    another reader at another.
    """
    values = {value for key, value in _webob_cookies(header) if key == name}
    if len(values) != 1:
        return None
    value = values.pop()
    standard = SimpleCookie()
    try:
        standard.load(header)
    except CookieError:
        return None
    morsel = standard.get(name)
    return value if morsel is not None and morsel.value == value else None


def _webob_cookies(header: str) -> list[tuple[str, str]]:
    return [(key.decode("utf-8"), value.decode("utf-8")) for key, value in parse_cookie(header)]


def _keep_cookies(environ, keep) -> int:
    """Keep only the ``name=value`` parts of the Cookie header ``keep`` accepts; how many went."""
    parts = environ.get("HTTP_COOKIE", "").split(";")
    kept = [part for part in parts if keep(part)]
    environ["HTTP_COOKIE"] = ";".join(kept)
    return len(parts) - len(kept)


def readable_cookie_header(request) -> str:
    """The Cookie header, after dropping cookies whose bytes are not UTF-8.

    WebOb raises on such a cookie wherever it is read (here, in the CSRF
    check, ...); a client that sends one is treated as if it had not, never
    answered with a 500.
    """
    header = request.environ.get("HTTP_COOKIE", "")
    if not header.isascii() and not _decodes(header):
        log.info("dropped %d cookie(s) that are not UTF-8",
                 _keep_cookies(request.environ, _decodes))
    return request.environ.get("HTTP_COOKIE", "")


def _decodes(header: str) -> bool:
    try:
        for name, value in parse_cookie(header):
            name.decode("utf-8"), value.decode("utf-8")
    except UnicodeError:
        return False
    return True
