"""The demo pages: sign in, a home page, a long form and a small JSON API."""
from __future__ import annotations

import logging

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.security import NO_PERMISSION_REQUIRED, remember
from pyramid.view import view_config
from sqlalchemy.exc import InterfaceError, OperationalError

from session_expiry.inputs import text_field
from session_expiry.passwords import TooManyTries, check_password
from session_expiry.redirects import safe_path
from session_expiry.responses import too_many_tries_text, unavailable

from .models import authenticate

log = logging.getLogger(__name__)

LOGIN_TEMPLATE = "session_expiry_demo:templates/login.jinja2"
#: The longest value each form field takes (a longer one is a 400, never cut short).
USERNAME_LENGTH, PASSWORD_LENGTH, TITLE_LENGTH = 150, 1024, 200
#: What one session keeps of drafts: fields, and characters a field.
MAX_DRAFTS = 32
MAX_DRAFT_LENGTH = 10_000


@view_config(route_name="login", renderer=LOGIN_TEMPLATE, permission=NO_PERMISSION_REQUIRED,
             request_method=("GET", "HEAD"))
def login_form(request):
    came_from = safe_path(request.GET.get("came_from"))
    if request.session_expiry.active:
        return HTTPSeeOther(location=came_from)
    return {"came_from": came_from, "username": "", "error": None,
            "logged_out": request.GET.get("logged_out") == "1"}


@view_config(route_name="login", renderer=LOGIN_TEMPLATE, permission=NO_PERMISSION_REQUIRED,
             request_method="POST")
def login(request):
    # Where to go next is a hint, not data: anything but a safe local path means "/".
    came_from = request.POST.get("came_from")
    came_from = safe_path(came_from if isinstance(came_from, str) else None)
    username = text_field(request.POST, "username", USERNAME_LENGTH).strip()
    password = text_field(request.POST, "password", PASSWORD_LENGTH)
    form = {"came_from": came_from, "username": username, "logged_out": False}
    try:
        user = check_password(request, username,
                              lambda: authenticate(request.dbsession, username, password))
    except TooManyTries as refusal:
        request.response.status = 429
        request.response.retry_after = refusal.retry_after
        return {**form, "error": too_many_tries_text(refusal.retry_after)}
    if user is None:
        request.response.status = 400
        return {**form, "error": "That username and password do not match."}
    remember(request, str(user.id))
    return HTTPSeeOther(location=came_from)


@view_config(route_name="home", renderer="session_expiry_demo:templates/home.jinja2")
def home(request):
    return {"user": request.user}


@view_config(route_name="workspace", renderer="session_expiry_demo:templates/workspace.jinja2",
             request_method=("GET", "HEAD"))
def workspace(request):
    return {"user": request.user, "sections": range(1, 9),
            "saved": request.session.get("workspace_title")}


@view_config(route_name="workspace", request_method="POST")
def save_workspace(request):
    request.session["workspace_title"] = text_field(request.POST, "title", TITLE_LENGTH)
    return HTTPSeeOther(location=request.route_path("workspace"))


@view_config(route_name="notes", renderer="json", request_method="GET")
def notes(request):
    return {"user": request.user.username,
            "notes": [{"id": 1, "text": "Drafts survive a session's end."},
                      {"id": 2, "text": "The server tells the page how long is left."}]}


@view_config(route_name="draft", renderer="json", request_method="POST")
def save_draft(request):
    """Keep one field of a draft in the session: ``{"field": "...", "value": "..."}``."""
    try:
        body = request.json_body
    except (ValueError, LookupError, RecursionError):  # not JSON, no such charset, too deep
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("field"), str) \
            or not isinstance(body.get("value"), str) or not body["field"].isidentifier():
        request.response.status = 400
        return {"error": "bad_json",
                "message": 'send {"field": "<name>", "value": "<text>"} as JSON'}
    key = "draft_" + body["field"][:64]
    drafts = sum(name.startswith("draft_") for name in request.session)
    if key not in request.session and drafts >= MAX_DRAFTS:
        request.response.status = 413
        return {"error": "too_many_drafts",
                "message": f"a session keeps at most {MAX_DRAFTS} draft fields"}
    request.session[key] = body["value"][:MAX_DRAFT_LENGTH]
    return {"saved": key}


@view_config(context=OperationalError, permission=NO_PERMISSION_REQUIRED)
@view_config(context=InterfaceError, permission=NO_PERMISSION_REQUIRED)
def database_unavailable(exc, request):
    log.error("application database unavailable: %s", exc)
    return unavailable(request)
