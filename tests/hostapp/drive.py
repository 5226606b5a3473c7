"""Drive the host app through WebTest, inside the virtualenv the wheel was installed into,
and print what it saw as JSON (tests/functional/test_host_app.py asserts on it).

    python drive.py host.ini story      # sign in, the figures, an idle end, the throttle
    python drive.py host.ini overdue    # leave a session two hours past its deadline
"""
import json
import sys
import time

from pyramid.paster import get_appsettings
from webtest import TestApp

import hostapp
from session_expiry.clock import FrozenClock

PAGE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
FETCH = {"Sec-Fetch-Mode": "cors", "Accept": "*/*"}


def app_at(ini: str, start: float):
    clock = FrozenClock(start)
    settings = dict(get_appsettings(ini))
    settings["session_expiry.clock"] = clock
    return hostapp.main({}, **settings), clock


def sign_in(app: TestApp, password: str):
    form = app.get("/login", headers=PAGE).form
    form["username"], form["password"] = "carol", password
    return form.submit(headers=PAGE, status="*")


def story(ini: str) -> dict:
    wsgi, clock = app_at(ini, int(time.time()))  # a whole second, as the record keeps it
    app = TestApp(wsgi, extra_environ={"REMOTE_ADDR": "192.0.2.1"})
    facts = {}
    anonymous = app.get("/", headers=PAGE, status="*")
    facts["anonymous_page"] = [anonymous.status_int, anonymous.location]
    anonymous = app.get("/api/data", headers=FETCH, status="*")
    facts["anonymous_fetch"] = [anonymous.status_int, anonymous.json]
    facts["sign_in"] = sign_in(app, "carol-password").status_int
    page = app.get("/", headers=PAGE)
    facts["page"] = {"status": page.status_int,
                     "expires_in": page.headers.get("Session-Expires-In"),
                     "layout": "The host's own layout" in page.text,
                     "figures": 'id="session-expiry-config"' in page.text}
    data = app.get("/api/data", headers=FETCH)
    facts["data"] = [data.status_int, data.json, data.headers.get("Session-Expires-In")]
    clock.advance(20 * 60 + 1)
    ended = app.get("/api/data", headers=FETCH, status="*")
    facts["idle_fetch"] = [ended.status_int, ended.json]
    ended = app.get("/", headers=PAGE, status="*")
    facts["idle_page"] = [ended.status_int, ended.location]
    expired = ended.follow(headers=PAGE, status="*")  # the add-on's page, from the wheel
    facts["expired_page"] = {"status": expired.status_int,
                             "says": "Your session has ended" in expired.text,
                             "why": 'data-reason="idle_timeout"' in expired.text,
                             "sign_in_again": 'class="button" href="/login' in expired.text}
    guesser = TestApp(wsgi, extra_environ={"REMOTE_ADDR": "198.51.100.9"})
    facts["guesses"] = [sign_in(guesser, "wrong").status_int for _ in range(4)]
    wsgi.registry.session_expiry.store.close()
    return facts


def overdue(ini: str) -> dict:
    wsgi, _ = app_at(ini, time.time() - 2 * 3600)
    app = TestApp(wsgi)
    status = sign_in(app, "carol-password").status_int
    wsgi.registry.session_expiry.store.close()
    return {"sign_in": status}


if __name__ == "__main__":
    ini, what = sys.argv[1], sys.argv[2]
    print(json.dumps({"story": story, "overdue": overdue}[what](ini)))
