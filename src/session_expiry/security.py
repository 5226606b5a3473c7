"""The security policy: a request is authenticated exactly when its session is active.

``remember`` and ``forget`` start and end the session; the tween writes the
ticket cookie on the way out, so both return no headers.
"""
from __future__ import annotations

from pyramid.security import Allowed, Denied

from .tween import session_expiry

#: The permission of the session report, revoke and /metrics.
ADMIN = "admin"

# The answers ``permits`` gives, made once (they are immutable strings).
SIGNED_IN = Allowed("signed in")
NO_SESSION = Denied("no active session")
NOT_ADMIN = Denied("the admin permission needs a security policy that grants it")


class SessionSecurityPolicy:
    """Any signed-in user has every permission but ``admin``; subclass ``permits`` to
    say who administers (nobody does by default)."""

    def identity(self, request):
        return session_expiry(request).userid

    def authenticated_userid(self, request):
        return session_expiry(request).userid

    def permits(self, request, context, permission):
        if not session_expiry(request).active:
            return NO_SESSION
        if permission == ADMIN:
            return NOT_ADMIN
        return SIGNED_IN

    def remember(self, request, userid, **kw):
        session_expiry(request).login(userid)
        return []

    def forget(self, request, **kw):
        session_expiry(request).logout()
        return []
