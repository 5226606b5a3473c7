"""The auth ticket, built and read from the same whole-second ``now`` as the record.

Pyramid's ``AuthTktCookieHelper`` reads ``time.time()`` itself and lets
``identify()`` answer None alike for expired, forged and missing tickets, so
we use its building blocks directly: ``AuthTicket`` to build, ``parse_ticket``
to read. The ticket names the user and, in its tokens, the session it belongs
to (:func:`~session_expiry.decision.ticket_binding`).
"""
from __future__ import annotations

import hashlib
import hmac
import logging

from pyramid.authentication import AuthTicket, BadTicket, parse_ticket

from .decision import Ticket

log = logging.getLogger(__name__)

HASHALG = "sha512"
#: Tickets are not bound to the client's address: phones change networks.
IP = "0.0.0.0"  # noqa: S104 (an address in the digest, not a bind)
MAX_LENGTH = 1024


def derive_secret(secret: str, purpose: str) -> str:
    """A key for one purpose, so the ticket and the session cookie never share one."""
    return hmac.new(secret.encode("utf-8"), purpose.encode("ascii"), hashlib.sha256).hexdigest()


def build_ticket(secret: str, userid: str, binding: str, now: int) -> str:
    ticket = AuthTicket(secret, str(userid), IP, tokens=(binding,), time=now, hashalg=HASHALG)
    return ticket.cookie_value()


def read_ticket(secret: str, value: str | None) -> Ticket | None:
    """The ticket in a cookie value, or None if it is missing, malformed or forged.

    An expired ticket is returned as it is: the decision tells it from a live one.
    """
    if not value or len(value) > MAX_LENGTH or not value.isascii():
        return None
    try:
        issued, userid, tokens, _user_data = parse_ticket(secret, value, IP, HASHALG)
    except (BadTicket, ValueError, UnicodeError):
        log.info("ignoring an auth ticket that is malformed or not signed by us")
        return None
    binding = tokens[0] if len(tokens) == 1 else ""
    return Ticket(userid=userid, binding=binding, issued=int(issued))
