"""The demo application: sign in, a long form, a JSON API, all behind session-expiry."""
from __future__ import annotations

from pyramid.config import Configurator
from pyramid.security import Allowed, Denied

from session_expiry.security import ADMIN, SessionSecurityPolicy
from session_expiry.tween import session_expiry

from .directory import AppUserDirectory


class AppSecurityPolicy(SessionSecurityPolicy):
    """Signed-in users may ``view``; only administrators may ``admin``."""

    def permits(self, request, context, permission):
        if permission == ADMIN and session_expiry(request).active:
            user = request.user
            return Allowed("admin") if user and user.is_admin else Denied("not an admin")
        return super().permits(request, context, permission)


def current_user(request):
    from .models import User

    userid = request.session_expiry.userid
    return request.dbsession.get(User, int(userid)) if userid else None


def make_app(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("session_expiry")  # first: it loads the settings (and the environment)
        config.include(".db")
        config.set_security_policy(AppSecurityPolicy())
        config.set_user_directory(AppUserDirectory(config.registry["dbsession_factory"]))
        config.set_default_permission("view")
        config.set_default_csrf_options(require_csrf=True)
        config.add_request_method(current_user, "user", reify=True)
        config.add_route("login", config.registry.session_expiry.policy.login_url)
        config.add_route("home", "/")
        config.add_route("workspace", "/workspace")
        config.add_route("notes", "/api/notes")
        config.add_route("draft", "/api/draft")
        config.scan(".views")
    return config.make_wsgi_app()
