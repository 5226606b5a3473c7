"""Password checks under the throttle: the host app's sign-in, and re-authentication.

The host app's login view wraps its own check::

    from session_expiry import TooManyTries, check_password

    try:
        user = check_password(request, username, lambda: authenticate(username, password))
    except TooManyTries as refusal:
        ...  # its login form again, with refusal.retry_after; or let the add-on answer 429

A try is claimed in the store before ``check`` runs, under the account and the
client's address (:mod:`session_expiry.throttle` decides how long each waits);
a right password gives it back. The store is the farm's: every app server
counts the same tries. Everything throttled is logged and counted in /metrics.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from .decision import Reason
from .inputs import peer_address
from .throttle import REAUTH, SESSION, SIGN_IN, Claim, Key, keys_for
from .tween import session_expiry

log = logging.getLogger(__name__)

T = TypeVar("T")


class TooManyTries(Exception):
    """A password check refused before it was made: wait ``retry_after`` seconds.

    Unless the view catches it, the add-on answers ``429`` with ``Retry-After``: a
    short page for a page load, ``{"error": "too_many_tries", "retry_after": …}`` else.
    """

    def __init__(self, retry_after: int, scope: str):
        super().__init__(f"too many password tries ({scope}); retry after {retry_after}s")
        self.retry_after = retry_after
        self.scope = scope


def check_password(request, account: str, check: Callable[[], T]) -> T:
    """``check()`` under the throttle, for the sign-in of ``account`` (a user name).

    Raises :class:`TooManyTries` without calling ``check`` when the account or the
    client's address must wait. A falsy answer counts as a wrong password.
    """
    expiry = session_expiry(request)
    keys = keys_for(expiry.policy, account=account, address=peer_address(request.environ))
    return _checked(expiry, keys, check, bool, SIGN_IN)[0]


def reauthenticate(request, account: str, check: Callable[[], bool | None]) -> bool | None:
    """``check()`` under the throttle, for the signed-in user asked for the password again.

    Counted under the account (the same as its sign-in: a guesser gains nothing by
    switching), the address and the session. A wrong password is not activity;
    ``reauth_max_failures`` of them in a row end the session (``reauth_failed``).
    ``check`` answering None (the host cannot check passwords) counts as nothing.
    """
    expiry = session_expiry(request)
    keys = keys_for(expiry.policy, account=account, address=peer_address(request.environ),
                    session=expiry.record.key)
    result, claim = _checked(expiry, keys, check, lambda right: right, REAUTH)
    if result:
        expiry.count_activity()
    elif result is not None:
        session = next(key for key in keys if key.scope == SESSION)
        failures = claim.counts[session.name]
        if failures >= expiry.policy.reauth_max_failures:
            log.warning("session %s: %d wrong passwords in a row; ended",
                        expiry.record.key[:12], failures)
            expiry.logout(Reason.REAUTH_FAILED)
    return result


def _checked(expiry, keys: tuple[Key, ...], check: Callable[[], T],
             right: Callable[[T], bool | None], kind: str) -> tuple[T, Claim]:
    """Claim a try, run ``check``, give the try back unless ``right(answer)`` says it was
    wrong (False; None: nothing was checked)."""
    metrics = expiry.setup.metrics
    claim = expiry.store.claim_try(keys, expiry.now)
    if not claim.allowed:
        log.warning("password check (%s) throttled: the %s waits %d s", kind, claim.scope,
                    claim.wait)
        metrics.count_throttled(kind, claim.scope)
        raise TooManyTries(claim.wait, claim.scope)
    result = check()
    if right(result) is not False:  # right, or not checked at all: nothing was guessed
        expiry.store.release_try(keys)
    else:
        metrics.count_password_failure(kind)
        log.info("password check (%s) failed", kind)
    return result, claim
