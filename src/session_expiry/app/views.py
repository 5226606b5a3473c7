"""The demo pages: sign in, a home page, a long form and a small JSON API."""
from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.security import NO_PERMISSION_REQUIRED, remember
from pyramid.view import view_config

from ..redirects import safe_path
from .models import authenticate


@view_config(route_name="login", renderer="session_expiry.app:templates/login.jinja2",
             permission=NO_PERMISSION_REQUIRED, request_method=("GET", "HEAD"))
def login_form(request):
    came_from = safe_path(request.params.get("came_from"))
    if request.session_expiry.active:
        return HTTPSeeOther(location=came_from)
    return {"came_from": came_from, "username": "", "error": None,
            "signed_out": request.params.get("signed_out") == "1"}


@view_config(route_name="login", renderer="session_expiry.app:templates/login.jinja2",
             permission=NO_PERMISSION_REQUIRED, request_method="POST")
def login(request):
    came_from = safe_path(request.POST.get("came_from"))
    username = request.POST.get("username", "").strip()[:150]
    user = authenticate(request.dbsession, username, request.POST.get("password", ""))
    if user is None:
        request.response.status = 400
        return {"came_from": came_from, "username": username, "signed_out": False,
                "error": "That username and password do not match."}
    remember(request, str(user.id))
    return HTTPSeeOther(location=came_from)


@view_config(route_name="home", renderer="session_expiry.app:templates/home.jinja2")
def home(request):
    return {"user": request.user}


@view_config(route_name="workspace", renderer="session_expiry.app:templates/workspace.jinja2",
             request_method=("GET", "HEAD"))
def workspace(request):
    return {"user": request.user, "sections": range(1, 9),
            "saved": request.session.get("workspace_title")}


@view_config(route_name="workspace", request_method="POST")
def save_workspace(request):
    request.session["workspace_title"] = request.POST.get("title", "")[:200]
    return HTTPSeeOther(location=request.route_path("workspace"))


@view_config(route_name="notes", renderer="json", request_method="GET")
def notes(request):
    return {"user": request.user.username,
            "notes": [{"id": 1, "text": "Drafts survive a session's end."},
                      {"id": 2, "text": "The server tells the page how long is left."}]}
