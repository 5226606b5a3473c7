"""The add-on's pages: the expired page, status, extend, logout, and the refusals."""
from __future__ import annotations

import logging

from pyramid.exceptions import BadCSRFToken, URLDecodeError
from pyramid.httpexceptions import HTTPBadRequest, HTTPNotFound, HTTPSeeOther
from pyramid.renderers import render_to_response
from pyramid.security import NO_PERMISSION_REQUIRED, forget
from pyramid.view import forbidden_view_config, notfound_view_config, view_config

from .decision import Reason
from .inputs import BadField
from .passwords import TooManyTries
from .redirects import safe_path
from .responses import (
    RequestKind,
    bad_field,
    forbidden,
    kind_of,
    refusal,
    too_many_tries_response,
    unavailable,
    with_query,
)
from .settings import describe_duration
from .stores import StoreUnavailable

log = logging.getLogger(__name__)

PERMISSION = "view"


def reason_text(reason: str | None, policy) -> str:
    """The plain-language sentence the expired page shows for ``reason``."""
    idle = describe_duration(policy.idle_timeout)
    absolute = describe_duration(policy.absolute_timeout)
    texts = {
        Reason.IDLE_TIMEOUT: f"You were signed out after {idle} without activity.",
        Reason.ABSOLUTE_TIMEOUT: f"You were signed out after {absolute}, the longest a "
        "session may last.",
        Reason.LOGGED_OUT: "You signed out in another tab or window.",
        Reason.REVOKED: "An administrator ended your session.",
        Reason.ENDED_BY_USER: "You signed out this session from another device.",
        Reason.REAUTH_FAILED: "We signed you out because the password was entered wrongly "
        "too many times in this session. If that was not you, change your password.",
        Reason.TICKET_MISMATCH: "Your sign-in did not match this session, so we signed "
        "you out to keep your account safe.",
        Reason.TICKET_EXPIRED: "Your sign-in expired.",
        Reason.SESSION_LOST: "The server lost your session, for example because it "
        "restarted.",
    }
    return texts.get(reason, "Your session has ended.")


def _known_reason(value: str | None) -> Reason | None:
    try:
        return Reason(value)
    except ValueError:
        return None


@forbidden_view_config()
def refused(exc, request):
    expiry = request.session_expiry
    if expiry.active:
        return forbidden(request)
    log.debug("refused %s %s: %s", request.method, request.path, expiry.reason or "not signed in")
    return refusal(request, expiry.policy, expiry.reason)


@notfound_view_config()
def not_found(exc, request):
    """No such page: a page in the site's layout for browsers, JSON for the rest."""
    if kind_of(request) is not RequestKind.PAGE:
        return HTTPNotFound(json_body={"error": "not_found"}, content_type="application/json")
    response = render_to_response("session_expiry:templates/not_found.jinja2",
                                  {"path": request.path}, request=request)
    response.status = 404
    return response


@view_config(context=StoreUnavailable, permission=NO_PERMISSION_REQUIRED)
def store_unavailable(exc, request):
    log.error("session store unavailable: %s", exc)
    return unavailable(request)


@view_config(context=BadCSRFToken, permission=NO_PERMISSION_REQUIRED)
def bad_csrf_token(exc, request):
    """A form older than its CSRF cookie (or a forged one): say so plainly, keep nothing."""
    if kind_of(request) is RequestKind.PAGE:
        return HTTPBadRequest("This form has expired or did not come from this site. "
                              "Go back, reload the page and send it again.")
    return HTTPBadRequest(json_body={"error": "bad_csrf_token"}, content_type="application/json")


@view_config(context=TooManyTries, permission=NO_PERMISSION_REQUIRED)
def too_many_tries(exc, request):
    """A password check refused before it was made (the view did not answer it itself)."""
    return too_many_tries_response(request, exc.retry_after)


@view_config(context=BadField, permission=NO_PERMISSION_REQUIRED)
def bad_field_view(exc, request):
    return bad_field(request, exc.name, exc.problem)


@view_config(context=URLDecodeError, permission=NO_PERMISSION_REQUIRED)
def bad_url(exc, request):
    return HTTPBadRequest("That address is not valid.")


@view_config(route_name="session_expiry.expired", request_method=("GET", "HEAD"),
             permission=NO_PERMISSION_REQUIRED, session_touch=False,
             renderer="session_expiry:templates/expired.jinja2")
def expired_page(request):
    expiry = request.session_expiry
    came_from = safe_path(request.params.get("came_from"))
    if expiry.active:  # extended in another tab, say: it never lies
        return HTTPSeeOther(location=came_from)
    # The tombstone knows best; with no cookie left to tell, trust only a reason we know.
    reason = expiry.reason or _known_reason(request.params.get("reason"))
    return {
        "reason": reason,
        "message": reason_text(reason, expiry.policy),
        "login_url": with_query(expiry.policy.login_url, came_from=came_from),
    }


@view_config(route_name="session_expiry.status", request_method="GET", renderer="json",
             permission=NO_PERMISSION_REQUIRED, session_touch=False)
def status(request):
    """The session's state without extending it."""
    expiry = request.session_expiry
    request.response.cache_control = "no-store"
    return {
        "state": str(expiry.state),
        "reason": str(expiry.reason) if expiry.reason else None,
        "remaining": expiry.remaining,
        "warn_before": expiry.warn_before,
        # So a page can tell "extended elsewhere" from "someone else signed in since".
        "user": expiry.userid,
    }


@view_config(route_name="session_expiry.extend", request_method="POST", renderer="json",
             permission=PERMISSION, require_csrf=True)
def extend(request):
    """"Stay signed in": touch now and reissue the ticket."""
    expiry = request.session_expiry
    remaining = expiry.extend()
    request.response.cache_control = "no-store"
    return {"state": str(expiry.state), "remaining": remaining,
            "warn_before": expiry.warn_before}


@view_config(route_name="session_expiry.logout", request_method="POST",
             permission=NO_PERMISSION_REQUIRED, require_csrf=True)
def logout(request):
    """Sign out. The browser is asked to drop its cached pages of the session (never on
    an expiry: the drafts kept for after the next sign-in must survive that)."""
    forget(request)
    response = HTTPSeeOther(location=with_query(request.session_expiry.policy.login_url,
                                                logged_out="1"))
    response.headers["Clear-Site-Data"] = '"cache"'
    return response
