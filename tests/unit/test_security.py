"""The add-on's security policy: signed in means an active session; ``admin`` is granted by
the host application only."""
from __future__ import annotations

from types import SimpleNamespace

from session_expiry.security import ADMIN, SessionSecurityPolicy
from session_expiry_demo import AppSecurityPolicy


def request_of(userid, user=None):
    expiry = SimpleNamespace(userid=userid, active=userid is not None)
    return SimpleNamespace(session_expiry=expiry, user=user)


def test_a_signed_in_user_has_ordinary_permissions():
    assert SessionSecurityPolicy().permits(request_of("7"), None, "view")


def test_nobody_is_an_administrator_until_the_host_application_says_so():
    denied = SessionSecurityPolicy().permits(request_of("7"), None, ADMIN)
    assert not denied
    assert "grants it" in str(denied)


def test_without_a_session_nothing_is_permitted():
    assert not SessionSecurityPolicy().permits(request_of(None), None, "view")


def test_the_demo_grants_admin_to_its_administrators_only():
    policy = AppSecurityPolicy()
    assert policy.permits(request_of("3", SimpleNamespace(is_admin=True)), None, ADMIN)
    assert not policy.permits(request_of("1", SimpleNamespace(is_admin=False)), None, ADMIN)
    assert policy.permits(request_of("1", SimpleNamespace(is_admin=False)), None, "view")
