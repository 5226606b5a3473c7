"""``request.session`` as a host app's views use it (Pyramid's ``ISession``), on every store."""
from __future__ import annotations

import pytest
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED, remember
from webtest import TestApp

from tests.conftest import session_key_of, store_of


def sign_in(request):
    headers = remember(request, "alice")
    request.session.update({"cart": [1], "prefs": {"theme": "dark"}, "greeting": "hello"})
    return Response("signed in", headers=headers)


def add_in_place(request):
    """Pyramid's way to change a mutable value: in place, then ``changed()``."""
    request.session["cart"].append(2)
    request.session["prefs"]["theme"] = "light"
    request.session.changed()
    return Response("added")


def read_then_add(request):
    cart = request.session.get("cart")  # read first ...
    cart.append(3)  # ... changed in place ...
    request.session.changed()  # ... and saved
    return Response("added")


VIEWS = {"sign_in": sign_in, "add_in_place": add_in_place, "read_then_add": read_then_add}


@pytest.fixture
def host(base_settings):
    """A host app with the add-on and the views above."""
    with Configurator(settings=dict(base_settings)) as config:
        config.include("session_expiry")
        for name, view in VIEWS.items():
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, permission=(
                NO_PERMISSION_REQUIRED if name == "sign_in" else "view"))
    wsgi = config.make_wsgi_app()
    browser = TestApp(wsgi)
    browser.get("/sign_in")
    yield browser
    wsgi.registry.session_expiry.store.close()


def stored(browser: TestApp) -> dict:
    values = store_of(browser).load_data(session_key_of(browser)).values()
    return {name: value for name, value in values.items() if not name.startswith("_")}


def test_a_value_changed_in_place_then_marked_changed_is_saved(host):
    host.get("/add_in_place")
    assert stored(host) == {"cart": [1, 2], "prefs": {"theme": "light"}, "greeting": "hello"}


def test_a_value_read_then_changed_in_place_is_saved(host):
    host.get("/read_then_add")
    host.get("/read_then_add")
    assert stored(host)["cart"] == [1, 3, 3]
