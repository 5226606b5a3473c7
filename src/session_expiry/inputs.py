"""What the tween reads from a request, each read once: the cookies, the peer address, the
user agent, and whether its parameters can be read at all; and the one reader of a text
field for the views (:func:`text_field`).

The Cookie header is read here, once, in one linear pass that keeps only
well-formed pairs (:func:`read_cookie_header`); every other reader of the
request (WebOb for the CSRF check and the host app) is handed what it kept, and
Beaker an empty header. A header past ``max_cookie_header`` is read as none. The
client's address is the WSGI server's ``REMOTE_ADDR``, never a header a
client can write.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from ipaddress import ip_address

from beaker.session import SignedCookie

from .decision import Ticket
from .record import SESSION_ID_BYTES, session_key
from .ticket import read_ticket

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(rf"[0-9a-f]{{{2 * SESSION_ID_BYTES}}}")
MAX_COOKIE_LENGTH = 512
#: Beaker's signed cookie: 40 hex digits of HMAC-SHA1, then the value.
SIGNATURE_LENGTH = 40
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


class BadField(ValueError):
    """A query or form field this site does not take: answered ``400`` naming the field,
    before anything is looked up or changed."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"field {name!r}: {problem}")
        self.name = name
        self.problem = problem


#: Control characters no field takes (tab, line feed and carriage return are text). A NUL,
#: for one, is refused by PostgreSQL in any text it is given.
_FIELD_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_field(params, name: str, limit: int) -> str:
    """The text of field ``name`` of a query string or form (``request.GET``, ``request.POST``):
    ``""`` when it is missing or a file upload.

    Raises :class:`BadField` for a value longer than ``limit`` characters or holding a
    control character: never cut short (the request meant something else) and never
    handed on to a store that would refuse it with an error of its own.
    """
    value = params.get(name, "")
    if not isinstance(value, str):
        return ""
    if len(value) > limit:
        raise BadField(name, f"longer than {limit} characters")
    if _FIELD_CONTROL.search(value):
        raise BadField(name, "holds a control character")
    return value


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


#: Name characters: an RFC 6265 token (every one of them is also a name character to WebOb).
_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
#: Value characters: RFC 6265 cookie-octets that WebOb also reads as a value (it stops at
#: ``[`` and ``]``), bare or in double quotes.
_VALUE = re.compile(r"[A-Za-z0-9!#$%&'()*+\-./:<=>?@^_`{|}~]*")
_QUOTED = re.compile(r'"([A-Za-z0-9!#$%&\'()*+\-./:<=>?@^_`{|}~]*)"')
_OWS = " \t"
#: A header that is well-formed already (most are): read by a split, handed on as it came.
_PAIR = f"{_NAME.pattern}={_VALUE.pattern}"
_WELL_FORMED = re.compile(rf"{_PAIR}(?:; {_PAIR})*")


@dataclass(frozen=True)
class CookieHeader:
    """A Cookie header as one linear pass reads it (:func:`read_cookie_header`)."""

    #: The well-formed ``name=value`` pairs, in order; quotes taken off the value.
    pairs: tuple[tuple[str, str], ...]
    #: The header the rest of the request reads: those pairs and nothing else.
    text: str
    #: Parts dropped as malformed.
    dropped: int

    def value(self, name: str) -> str | None:
        """The one value ``name`` has; None if absent or sent with two different values."""
        values = {value for key, value in self.pairs if key == name}
        return values.pop() if len(values) == 1 else None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.pairs)


def read_cookie_header(header: str) -> CookieHeader:
    """Read a Cookie header in one linear pass, keeping the well-formed pairs only.

    A part counts when it is ``name=value`` with an RFC 6265 token for a name and
    cookie-octets for a value, bare or quoted. Anything else (a stray quote, a
    backslash, a comma, a control character, bytes that are not ASCII) is dropped
    alone: it neither signs anybody out nor hides the cookies after it.

    The header rebuilt from the kept pairs is what every other parser is handed:
    WebOb's regular expressions (the CSRF check, the host app's ``request.cookies``)
    take time quadratic in a run of characters they cannot match (40 kB of letters
    without an ``=``: 13 s), and read a well-formed header in one pass. Python's
    ``http.cookies`` (quadratic on backslashes before 3.11.10) is never handed one.
    """
    if _WELL_FORMED.fullmatch(header):
        pairs = tuple(tuple(part.split("=", 1)) for part in header.split("; "))
        return CookieHeader(pairs, header, 0)
    pairs, dropped = [], 0
    for raw in header.split(";"):
        part = raw.strip(_OWS)
        if not part:
            continue
        name, equals, value = part.partition("=")
        name, value = name.rstrip(_OWS), value.lstrip(_OWS)
        quoted = _QUOTED.fullmatch(value) if value.startswith('"') else None
        if not equals or not _NAME.fullmatch(name) or not (quoted or _VALUE.fullmatch(value)):
            dropped += 1
            continue
        pairs.append((name, quoted[1] if quoted else value))
    text = "; ".join(f"{name}={value}" for name, value in pairs)
    return CookieHeader(tuple(pairs), text, dropped)


@dataclass(frozen=True)
class SentCookies:
    """What a request's cookies say, as the decision needs it."""

    ticket: Ticket | None  # a validly signed ticket, read alike by every parser
    ticket_sent: bool  # a ticket cookie came at all, readable or not
    session_id: str | None  # the id a validly signed session cookie names
    session_key: str | None  # the key that id is stored under
    too_large: int = 0  # the length of a Cookie header past the bound, read as none


_UNKNOWN = object()


def digest(text: str) -> bytes:
    """What a remembered answer is kept under: the SHA-256 of the text it answers for."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class Remembered:
    """Answers kept by the digest of what they answer for: at most ``size`` of them (the
    oldest forgotten first), each a 32-byte digest and an answer that is no credential,
    so bounded in bytes whatever the texts were, and never holding the text itself."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._answers: dict[bytes, object] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes, default=None):
        return self._answers.get(key, default)

    def put(self, key: bytes, answer) -> None:
        with self._lock:
            if len(self._answers) >= self.size:  # forget the oldest
                del self._answers[next(iter(self._answers))]
            self._answers[key] = answer

    def __len__(self) -> int:
        return len(self._answers)


class Verified(Remembered):
    """The answers of a signature check, by the digest of the value checked.

    A browser sends the same signed cookies on every request, and checking them
    is most of the cost of reading a Cookie header (about 10 of 14 µs), so each
    distinct value is checked once. The answer is no credential (a session key,
    which is a hash itself; a ticket's user, binding and time, which sign nobody
    in): the raw session ids and signed tickets are never kept past their request.
    """

    def __init__(self, check: Callable[[str], object], size: int = 4096):
        super().__init__(size)
        self.check = check

    def __call__(self, value: str):
        key = digest(value)
        answer = self.get(key, _UNKNOWN)
        if answer is _UNKNOWN:
            answer = self.check(value)
            self.put(key, answer)
        return answer


class CookieReader:
    """Reads a request's Cookie header into :class:`SentCookies`.

    A header is read in one linear pass. What a well-formed header (a browser's, sent
    again on every request) said is remembered by its digest (:class:`Remembered`): the
    ticket's reading, the session key and where the session id lies in the header, which
    are no credential; the id is taken from the header itself each time. So nothing keyed
    by the header's text, and no session id, ticket or header, is kept past its request
    (a cache of whole headers let one client pin 4096 of its largest in memory, and kept
    signed-in clients' credentials after they signed out). The signature checks of the
    two cookies are remembered the same way, by :class:`Verified`.
    """

    def __init__(self, ticket_cookie: str, session_cookie: str, ticket_secret: str,
                 cookie_secret: str, max_header: int, *, size: int = 4096):
        self.names = (ticket_cookie, session_cookie)
        #: The longest Cookie header read, in bytes (``max_cookie_header``).
        self.max_header = max_header
        self._ticket = Verified(partial(read_ticket, ticket_secret), size)
        self._session_key = Verified(partial(read_session_key, cookie_secret), size)
        #: By a well-formed header's digest: (ticket, ticket sent, session key, where the
        #: signed session cookie's value lies in the header).
        self._headers = Remembered(size)

    def read(self, environ) -> SentCookies:
        """What the request's cookies say; its ``HTTP_COOKIE`` left holding the kept pairs.

        A header longer than ``max_header`` is read as none at all (and removed, so
        nothing else parses it): :attr:`SentCookies.too_large` says so.
        """
        header = environ.get("HTTP_COOKIE", "")
        if len(header) > self.max_header:
            environ["HTTP_COOKIE"] = ""
            return SentCookies(None, False, None, None, too_large=len(header))
        known = digest(header)
        said = self._headers.get(known)
        if said is not None:
            ticket, ticket_sent, key, (start, end) = said
            return SentCookies(ticket, ticket_sent, header[start:end] if key else None, key)
        cookies = read_cookie_header(header)
        if cookies.dropped:
            log.info("dropped %d malformed cookie(s)", cookies.dropped)
        if cookies.text is not header:
            environ["HTTP_COOKIE"] = cookies.text
        ticket_cookie, session_cookie = self.names
        ticket, session = cookies.value(ticket_cookie), cookies.value(session_cookie)
        ticket = self._ticket(ticket) if ticket else None
        key = self._session_key(session) if session and len(session) <= MAX_COOKIE_LENGTH \
            else None
        # Signed and checked: the id is the value after Beaker's 40-digit signature.
        sent = SentCookies(ticket=ticket, ticket_sent=cookies.has(ticket_cookie),
                           session_id=session[SIGNATURE_LENGTH:] if key else None,
                           session_key=key)
        if cookies.text is header:  # well-formed: the same header reads the same next time
            span = _id_span(header, session_cookie, session) if key else (0, 0)
            self._headers.put(known, (ticket, sent.ticket_sent, key, span))
        return sent


def _id_span(header: str, name: str, value: str) -> tuple[int, int]:
    """Where the session id lies in a well-formed ``header`` whose cookie ``name`` has the
    signed ``value``: after its signature."""
    offset = 0
    for part in header.split("; "):
        if part == f"{name}={value}":
            start = offset + len(name) + 1
            return start + SIGNATURE_LENGTH, start + len(value)
        offset += len(part) + 2
    raise AssertionError("unreachable: the header's one value of the cookie is in it")
