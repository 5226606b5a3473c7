"""Two requests of one session at once, and a request racing the end of its session."""
import json
import threading

from pyramid.events import BeforeRender
from pyramid.interfaces import IBeforeRender

from tests.conftest import FETCH, csrf_token, login, session_key_of, store_of


class Pause:
    """Holds every request at ``BeforeRender`` (after its view changed the session,
    before Beaker saves it) until ``parties`` requests are there, then runs ``then``."""

    def __init__(self, registry, parties, then=lambda: None):
        self.barrier = threading.Barrier(parties, action=then, timeout=10)
        self.registry = registry
        registry.registerHandler(self, (IBeforeRender,))

    def __call__(self, event: BeforeRender):
        if event.get("renderer_name") == "json":
            self.barrier.wait()

    def remove(self):
        self.registry.unregisterHandler(self, (IBeforeRender,))


def post_draft(app, field, value, results):
    response = app.post("/api/draft", json.dumps({"field": field, "value": value}),
                        headers={**FETCH, "Content-Type": "application/json",
                                 "X-CSRF-Token": csrf_token(app)}, expect_errors=True)
    results.append(response.status_int)


def run_together(*calls):
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)


def test_two_requests_writing_different_keys_both_keep_their_change(app):
    login(app)
    tab_a, tab_b = type(app)(app.app), type(app)(app.app)  # two tabs of one browser
    for tab in (tab_a, tab_b):
        for name, value in app.cookies.items():
            tab.set_cookie(name, value)
    pause = Pause(app.app.registry, parties=2)
    results = []
    try:
        run_together(lambda: post_draft(tab_a, "title", "Quarterly report", results),
                     lambda: post_draft(tab_b, "summary", "Sales went up", results))
    finally:
        pause.remove()
    assert results == [200, 200]
    values = store_of(app).load_data(session_key_of(app)).values()
    assert values["draft_title"] == "Quarterly report"
    assert values["draft_summary"] == "Sales went up"


def test_a_request_finishing_after_its_session_ended_does_not_bring_it_back(app, clock):
    login(app)
    key = session_key_of(app)
    store = store_of(app)
    pause = Pause(app.app.registry, parties=1,
                  then=lambda: store.end(key, "revoked", int(clock())))
    results = []
    try:
        post_draft(app, "title", "written after the revoke", results)
    finally:
        pause.remove()
    record = store.get(key)
    assert record.end_reason == "revoked"
    assert store.load_data(key) is None
    assert app.get("/api/notes", headers=FETCH, status=401).json["reason"] == "revoked"
