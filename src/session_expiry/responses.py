"""How a refused request is answered: each kind of client gets what it can use.

- a page load gets a 303 to the expired page (or the login page);
- htmx gets a 401 with ``HX-Redirect`` (XHR follows a 3xx silently);
- fetch, XHR and API clients get a 401 JSON (fetch sends ``Accept: */*`` and
  would follow a redirect to the expired page's HTML as a 200).
"""
from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlencode

from pyramid.httpexceptions import (
    HTTPBadRequest,
    HTTPForbidden,
    HTTPRequestEntityTooLarge,
    HTTPSeeOther,
    HTTPServiceUnavailable,
    HTTPTooManyRequests,
    HTTPUnauthorized,
)
from pyramid.response import Response

from .redirects import safe_path, same_site_path

#: A scheme browsers do not prompt for (unlike Basic or Digest).
WWW_AUTHENTICATE = 'Cookie realm="session-expiry", form-action="{login_url}"'
_HTML = ("text/html", "application/xhtml+xml")
#: Seconds a client is asked to wait when the store is down.
RETRY_AFTER = 5


class RequestKind(StrEnum):
    PAGE = "page"
    HTMX = "htmx"
    API = "api"


def request_kind(sec_fetch_mode: str | None, hx_request: str | None, accept: str | None):
    """Classify a request by what its client can do with the answer."""
    if (hx_request or "").strip().lower() == "true":
        return RequestKind.HTMX
    if sec_fetch_mode:
        return RequestKind.PAGE if sec_fetch_mode.strip().lower() == "navigate" else RequestKind.API
    return RequestKind.PAGE if _prefers_html(accept or "") else RequestKind.API


def _prefers_html(accept: str) -> bool:
    """True when ``accept`` names HTML explicitly and ranks it at least as high as JSON."""
    html = json = 0.0
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in _HTML:
            html = max(html, quality)
        elif media == "application/json":
            json = max(json, quality)
    return html > 0 and html >= json


def kind_of(request) -> RequestKind:
    headers = request.headers
    return request_kind(headers.get("Sec-Fetch-Mode"), headers.get("HX-Request"),
                        headers.get("Accept"))


def came_from(request, kind: RequestKind) -> str:
    """The page to return to after signing in again."""
    if kind is RequestKind.PAGE and request.method in ("GET", "HEAD"):
        return safe_path(request.path_qs)
    candidates = [request.headers.get("Referer")]
    if kind is RequestKind.HTMX:
        candidates.insert(0, request.headers.get("HX-Current-URL"))
    for url in candidates:
        path = same_site_path(url, request.host_url)
        if path:
            return path
    return "/"


def with_query(url: str, **params) -> str:
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


def refusal(request, policy, reason: str | None) -> Response:
    """The answer to a request that needs a session it does not have.

    ``reason`` is None for a visitor who never signed in: they go to the login
    page, never to the expired page.
    """
    kind = kind_of(request)
    back = came_from(request, kind)
    login_url = with_query(policy.login_url, came_from=back if back != "/" else None)
    if reason is None:
        target, body = login_url, {"error": "not_authenticated", "login_url": login_url}
    else:
        target = with_query(policy.expired_url, reason=str(reason), came_from=back)
        body = {"error": "session_expired", "reason": str(reason), "login_url": login_url}

    if kind is RequestKind.PAGE:
        response = HTTPSeeOther(location=target)
    else:
        response = HTTPUnauthorized(json_body=body, content_type="application/json")
        response.www_authenticate = WWW_AUTHENTICATE.format(login_url=policy.login_url)
        if kind is RequestKind.HTMX:
            response.headers["HX-Redirect"] = target
    response.cache_control = "no-store"
    return response


def _answer(request, exception, page_text: str, body: dict) -> Response:
    """``exception`` as a short page for page loads, as JSON for the rest; never cached."""
    if kind_of(request) is RequestKind.PAGE:
        response = exception(page_text)
    else:
        response = exception(json_body=body, content_type="application/json")
    response.cache_control = "no-store"
    return response


def unavailable(request) -> Response:
    """The session store (or the database) is down: say so, ask to retry, lose nothing."""
    response = _answer(request, HTTPServiceUnavailable,
                       "The service is briefly unavailable. Nothing you typed was sent; "
                       "go back and try again in a moment.", {"error": "unavailable"})
    response.retry_after = RETRY_AFTER
    return response


def unreadable(request) -> Response:
    """A query string or form that is not UTF-8: nothing was read or changed."""
    return _answer(request, HTTPBadRequest,
                   "This address or form could not be read: it is not UTF-8. Nothing was "
                   "changed; go back and try again.", {"error": "bad_request"})


def bad_field(request, name: str, problem: str) -> Response:
    """A query or form field this site does not take: nothing was looked up or changed."""
    return _answer(request, HTTPBadRequest,
                   f"The field {name!r} could not be read: it {problem}. Nothing was "
                   "changed; go back, correct it and try again.",
                   {"error": "bad_field", "field": name, "problem": problem})


def cookies_too_large(request, limit: int) -> Response:
    """A Cookie header longer than ``max_cookie_header``: nothing was read or changed."""
    return _answer(request, HTTPBadRequest,
                   f"Your browser sent more cookies than this site reads ({limit // 1024} KiB). "
                   "Nothing was changed. Clear this site's cookies in your browser, then try "
                   "again.", {"error": "cookie_header_too_large", "limit": limit})


def wait_words(seconds: int) -> str:
    """``"40 seconds"``, ``"5 minutes"``: a wait as a person reads it, rounded up."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def too_many_tries_text(retry_after: int) -> str:
    return (f"Too many wrong passwords. For your account's safety, wait "
            f"{wait_words(retry_after)} and try again.")


def too_many_tries_response(request, retry_after: int) -> Response:
    """Password checks throttled: say how long to wait; nothing was checked."""
    response = _answer(request, HTTPTooManyRequests, too_many_tries_text(retry_after),
                       {"error": "too_many_tries", "retry_after": retry_after})
    response.retry_after = retry_after
    return response


def too_large(request, limit: int) -> Response:
    """A change that would make the session hold more than ``max_session_size``: not saved."""
    return _answer(request, HTTPRequestEntityTooLarge,
                   f"This change would make your session hold more than {limit // 1024} KiB, "
                   "the most this site keeps, so it was not saved. Remove something and try "
                   "again.", {"error": "session_too_large", "limit": limit})


def forbidden(request) -> Response:
    """A signed-in user without the permission a view needs."""
    if kind_of(request) is RequestKind.PAGE:
        return HTTPForbidden("You do not have permission to see this page.")
    return HTTPForbidden(json_body={"error": "forbidden"}, content_type="application/json")
