"""A small host app, as an adopter writes one: its own users, login view, Jinja2 layout,
a protected page and a JSON endpoint, with session-expiry installed from its wheel."""
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.security import NO_PERMISSION_REQUIRED, remember
from pyramid.view import view_config

from session_expiry import TooManyTries, check_password

#: The host's own users: it knows them, the add-on does not.
USERS = {"carol": "carol-password"}
LOGIN = "hostapp:templates/login.jinja2"


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("session_expiry")
        config.set_default_permission("view")
        config.add_route("login", "/login")
        config.add_route("page", "/")
        config.add_route("data", "/api/data")
        config.scan(__name__)
    return config.make_wsgi_app()


@view_config(route_name="login", request_method="GET", renderer=LOGIN,
             permission=NO_PERMISSION_REQUIRED)
def login_form(request):
    return {"error": None}


@view_config(route_name="login", request_method="POST", renderer=LOGIN,
             permission=NO_PERMISSION_REQUIRED)
def login(request):
    name, password = request.POST.get("username", ""), request.POST.get("password", "")
    try:
        right = check_password(request, name, lambda: USERS.get(name) == password)
    except TooManyTries as refusal:
        request.response.status = 429
        return {"error": f"Too many tries: wait {refusal.retry_after} s."}
    if not right:
        request.response.status = 400
        return {"error": "Wrong user name or password."}
    remember(request, name)
    return HTTPSeeOther(request.route_path("page"))


@view_config(route_name="page", renderer="hostapp:templates/page.jinja2")
def page(request):
    return {"user": request.session_expiry.userid}


@view_config(route_name="data", renderer="json")
def data(request):
    return {"user": request.session_expiry.userid, "items": [1, 2, 3]}
