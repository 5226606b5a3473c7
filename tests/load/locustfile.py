"""What one simulated person does, for ``locust`` (run by tests/load/test_load.py).

Never import this module (nor locust) in the pytest process: locust patches the
standard library with gevent on import. It runs as its own process:

    LOAD_HOSTS="http://127.0.0.1:6544 http://127.0.0.1:6545" LOAD_LOG=/tmp/load.jsonl \\
    LOAD_PASSWORD=... .venv/bin/locust -f tests/load/locustfile.py --headless \\
        -u 200 -r 100 -t 60s --host http://127.0.0.1:6544

Each user signs in as one of the load accounts, clicks pages, calls the JSON API,
writes draft values with unique sequence numbers (now and then two at once, as
two tabs would), reads its status, now and then idles past the deadline the
server stated, signs out or signs in again over its session. Every request goes
to one of the app servers at random (a farm behind a load balancer without
sticky sessions). Every request and its answer is written to ``LOAD_LOG`` as one
JSON line, for the test to hold against the database:

    {"u": user, "a": account, "k": kind, "m": method, "p": path, "srv": port,
     "s": store key of the session the request carried, "s2": the one after the answer,
     "t0": sent, "t1": answered,
     "st": status, "exp": Session-Expires-In, "end": reason the session ended, ...}

Settings, from the environment: ``LOAD_HOSTS`` (base URLs, loopback only; without
it, ``--host``), ``LOAD_LOG`` (required), ``LOAD_ACCOUNT_PREFIX``, ``LOAD_ACCOUNTS``
and ``LOAD_PASSWORD`` (the accounts ``<prefix>001`` ..., one password),
``LOAD_THINK`` ("min,max" seconds between clicks), ``LOAD_SESSION_COOKIE`` and
``LOAD_CSRF_COOKIE`` (cookie names).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import time
from urllib.parse import parse_qs, urlsplit

import gevent
from locust import FastHttpUser, events, task

LOOPBACK = re.compile(r"http://127\.0\.0\.1:\d+")
#: The app servers; without LOAD_HOSTS, locust's --host alone.
HOSTS = os.environ.get("LOAD_HOSTS", "").split()
for _host in HOSTS:
    if not LOOPBACK.fullmatch(_host):
        raise SystemExit(f"LOAD_HOSTS: only http://127.0.0.1:<port> is allowed, not {_host!r}")
if "LOAD_LOG" not in os.environ:
    raise SystemExit("LOAD_LOG: name the JSON-lines file the clients log their requests to")
ACCOUNT_PREFIX = os.environ.get("LOAD_ACCOUNT_PREFIX", "load")
ACCOUNTS = int(os.environ.get("LOAD_ACCOUNTS", "50"))
PASSWORD = os.environ.get("LOAD_PASSWORD", "load-password")
THINK = tuple(float(x) for x in os.environ.get("LOAD_THINK", "0.5,2.0").split(","))
SESSION_COOKIE = os.environ.get("LOAD_SESSION_COOKIE", "session")
CSRF_COOKIE = os.environ.get("LOAD_CSRF_COOKIE", "csrf_token")

PAGE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Accept": "application/json"}
#: Why a session may end under this load; any other reason is a failure.
TIMEOUTS = ("idle_timeout", "absolute_timeout")
_SESSION_ID = re.compile(r"([0-9a-f]{64})$")

_log = open(os.environ["LOAD_LOG"], "a", buffering=1 << 16)  # noqa: SIM115 (open for the run)
_users = itertools.count(1)


def account_name(number: int) -> str:
    return f"{ACCOUNT_PREFIX}{number:03d}"


def log(record: dict) -> None:
    _log.write(json.dumps(record, separators=(",", ":")) + "\n")


@events.test_stop.add_listener
def _flush(**_kwargs):
    _log.flush()
    os.fsync(_log.fileno())


@events.quitting.add_listener
def _close(**_kwargs):
    _log.flush()
    _log.close()


class Outcome:
    """What one answer said about the session."""

    def __init__(self, status: int, active: bool, reason: str | None = None,
                 body: dict | None = None, location: str | None = None):
        self.status, self.active, self.reason = status, active, reason
        self.body, self.location = body or {}, location


class Person(FastHttpUser):
    """One person with a browser (one cookie jar) and a farm behind one address."""

    network_timeout = 15.0
    connection_timeout = 5.0
    max_retries = 0
    concurrency = 4  # two tabs writing at once

    def on_start(self):
        self.hosts = HOSTS or [(self.host or "").rstrip("/")]
        if not all(LOOPBACK.fullmatch(host) for host in self.hosts):
            raise SystemExit(f"only http://127.0.0.1:<port> is allowed, not {self.hosts}")
        self.number = next(_users)
        self.account = account_name((self.number - 1) % ACCOUNTS + 1)
        self.client.client.redirect_response_codes = frozenset()  # see every 303 ourselves
        self.seq = 0
        self.session: str | None = None  # store key of the session we believe is open
        # What the server's Session-Expires-In figures (whole seconds left, rounded down)
        # said about the session's deadline: no earlier than floor(sent) + R, no later
        # than answered + R + 1.
        self.deadline_at_least = 0.0
        self.deadline_by = 0.0
        self.mode = "signed_out"
        self.pause: float | None = None

    def wait_time(self):
        pause, self.pause = self.pause, None
        return pause if pause is not None else random.uniform(*THINK)

    # -- the cookie jar ----------------------------------------------------------

    def cookie(self, name: str) -> str | None:
        return next((c.value.strip('"') for c in self.client.cookiejar if c.name == name), None)

    def session_key(self) -> str | None:
        """The store key of the session our cookie names: SHA-256 of the signed id."""
        value = self.cookie(SESSION_COOKIE)
        found = _SESSION_ID.search(value or "")
        return hashlib.sha256(found.group(1).encode()).hexdigest() if found else None

    # -- one request, judged and logged -------------------------------------------

    def call(self, kind: str, method: str, path: str, headers: dict, *, expect: tuple,
             data=None, json_body=None, extra: dict | None = None,
             judge: bool = True) -> Outcome:
        """Send one request to a random server; log it; tell locust whether it was right.

        ``expect``: the statuses this request may get. A session refused for a reason
        other than a timeout, a 5xx, or any status not expected is a failure.
        ``judge``: read a refusal from the answer (not for the sign-out's own redirect).
        """
        base = random.choice(self.hosts)
        session = self.session_key()
        t0 = time.time()
        with self.client.request(method, base + path, name=kind, headers=headers, data=data,
                                 json=json_body, catch_response=True,
                                 allow_redirects=False) as response:
            t1 = time.time()
            status = response.status_code or 0
            expires = response.headers.get("Session-Expires-In") if response.headers else None
            location = response.headers.get("Location") if response.headers else None
            body = None
            if (response.headers or {}).get("Content-Type", "").startswith("application/json"):
                try:
                    body = response.json()
                except ValueError:
                    body = None
            outcome = (self._judge(status, expires, body, location) if judge
                       else Outcome(status, expires is not None, body=body, location=location))
            record = {"u": self.number, "a": self.account, "k": kind, "m": method, "p": path,
                      "srv": int(base.rsplit(":", 1)[1]), "s": session, "t0": t0, "t1": t1,
                      "st": status, "exp": int(expires) if expires is not None else None,
                      "end": outcome.reason}
            if kind == "status" and body:
                record["state"], record["remaining"] = body.get("state"), body.get("remaining")
            record["s2"] = self.session_key()  # the session the answer is about
            record.update(extra or {})
            problem = None
            if status >= 500 or status == 0:
                problem = f"{status} from {base}{path}: {(response.text or '')[:200]!r}"
            elif status not in expect:
                problem = f"unexpected {status} for {kind} (expected {expect}); " \
                          f"location={location!r} body={(response.text or '')[:200]!r}"
            elif outcome.reason is not None and outcome.reason not in TIMEOUTS:
                problem = f"session refused for {outcome.reason!r} on {kind}"
            if expires is not None:
                self.deadline_by = max(self.deadline_by, t1 + int(expires) + 1)
                self.deadline_at_least = max(self.deadline_at_least,
                                             int(t0) + int(expires))
            record["problem"] = problem
            log(record)
            if problem:
                response.failure(problem)
            else:
                response.success()
        return outcome

    @staticmethod
    def _judge(status, expires, body, location) -> Outcome:
        if isinstance(body, dict) and "state" in body:  # /session/status
            state = body["state"]
            return Outcome(status, state == "active",
                           None if state == "active" else body.get("reason") or state, body)
        if status == 401 and isinstance(body, dict):
            return Outcome(status, False, body.get("reason") or body.get("error"), body)
        if status == 303 and location:
            path = urlsplit(location).path
            if path == "/session-expired":
                reason = parse_qs(urlsplit(location).query).get("reason", ["?"])[0]
                return Outcome(status, False, reason, location=location)
            if path == "/login":
                return Outcome(status, False, "not_authenticated", location=location)
            return Outcome(status, expires is not None, location=location)
        # A 200 was served, with or without Session-Expires-In: without it, the session
        # ended while the request ran (the next request learns why).
        return Outcome(status, expires is not None or status == 200, body=body)

    # -- what a person does -----------------------------------------------------------

    @task
    def step(self):
        if self.mode == "signed_out":
            self.sign_in()
        elif self.mode == "idle_poll":
            self.idle_poll()
        elif self.mode == "idle_return":
            self.idle_return()
        else:
            self.click()

    def sign_in(self):
        self.call("login_page", "GET", "/login", PAGE, expect=(200,))
        came_from = random.choice(("/", "/workspace"))
        self._post_login(came_from)

    def _post_login(self, came_from: str, kind: str = "login"):
        before = self.session_key()
        self.deadline_by = self.deadline_at_least = 0.0
        outcome = self.call(kind, "POST", "/login", PAGE, expect=(303,), data={
            "username": self.account, "password": PASSWORD,
            "csrf_token": self.cookie(CSRF_COOKIE) or "", "came_from": came_from},
            extra={"before": before})
        after = self.session_key()
        landed = urlsplit(outcome.location or "").path
        if outcome.status != 303 or landed != came_from or after in (None, before):
            log({"u": self.number, "k": "login_failed", "t1": time.time(), "before": before,
                 "after": after, "st": outcome.status, "location": outcome.location})
            self.session, self.mode = None, "signed_out"
            return
        self.session, self.mode = after, "active"
        log({"u": self.number, "a": self.account, "k": "signed_in", "s": after,
             "before": before, "t1": time.time()})
        self.page(came_from)

    def page(self, path: str) -> Outcome:
        return self._seen(self.call("page", "GET", path, PAGE, expect=(200, 303)))

    def _seen(self, outcome: Outcome, kind: str = "ended_seen") -> Outcome:
        """A refusal: the session is over for us; note what the server said and sign in."""
        if not outcome.active and self.session is not None:
            log({"u": self.number, "a": self.account, "k": kind, "s": self.session,
                 "reason": outcome.reason, "deadline_at_least": self.deadline_at_least,
                 "deadline_by": self.deadline_by, "t1": time.time()})
            self.session, self.mode = None, "signed_out"
        return outcome

    def click(self):
        action = random.choices(
            ("home", "workspace", "notes", "draft", "two_drafts", "status", "idle", "logout",
             "login_again"),
            weights=(14, 14, 15, 30, 8, 7, 8, 3, 1))[0]
        if action == "home":
            self.page("/")
        elif action == "workspace":
            self.page("/workspace")
        elif action == "notes":
            self._seen(self.call("notes", "GET", "/api/notes", FETCH, expect=(200, 401)))
        elif action == "draft":
            self.write(random.random() < 0.3)
        elif action == "two_drafts":
            tabs = [gevent.spawn(self.write, False, "tab") for _ in range(2)]
            gevent.joinall(tabs, timeout=30)
        elif action == "status":
            self._seen(self.status())
        elif action == "idle":
            # Walk away: come back after the deadline the server stated, with one status
            # poll (which must not extend the session) half way.
            self.mode = "idle_poll"
            self.pause = max(0.0, (self.deadline_at_least - time.time()) / 2)
        elif action == "logout":
            self.call("logout", "POST", "/logout", PAGE, expect=(303,),
                      data={"csrf_token": self.cookie(CSRF_COOKIE) or ""},
                      extra={"ends": self.session}, judge=False)
            self.session, self.mode = None, "signed_out"
        else:  # sign in again over the open session: the old one ends as logged_out
            # (the form redirects a signed-in visitor; a session that has just run out
            # gets the form)
            self.call("login_page", "GET", "/login", PAGE, expect=(200, 303))
            self._post_login("/", kind="login_again")

    def status(self) -> Outcome:
        return self.call("status", "GET", "/session/status", FETCH, expect=(200,))

    def write(self, overwrite: bool, kind: str = "draft"):
        """One draft write: a field of its own (``w<seq>``), or the shared ``latest``."""
        self.seq += 1
        seq = self.seq  # this write's own, whatever the other tab does meanwhile
        field = "latest" if overwrite else f"w{seq}"
        value = f"{self.number}:{seq}"
        log({"u": self.number, "k": "write_sent", "s": self.session_key(), "field": field,
             "value": value, "seq": seq, "t0": time.time()})
        outcome = self.call(kind, "POST", "/api/draft", {**FETCH,
                            "X-CSRF-Token": self.cookie(CSRF_COOKIE) or ""},
                            expect=(200, 401), json_body={"field": field, "value": value},
                            extra={"field": field, "value": value, "seq": seq})
        if outcome.status == 200 and outcome.body.get("saved") != "draft_" + field:
            log({"u": self.number, "k": "write_odd", "body": outcome.body, "t1": time.time()})
        return self._seen(outcome)

    def idle_poll(self):
        outcome = self._seen(self.status(), kind="ended_seen_idle")
        if outcome.active:
            self.mode = "idle_return"
            self.pause = max(0.0, self.deadline_by - time.time()) + random.uniform(0.2, 1.5)

    def idle_return(self):
        """Back after the stated deadline: the server must say the session is over."""
        promised = self.deadline_by
        outcome = self.call("after_idle", "GET", "/api/notes", FETCH, expect=(401,),
                            extra={"deadline_by": promised})
        self._seen(outcome, kind="ended_seen_after_idle")
        if outcome.active:  # still open past its deadline: call() logged the failure
            self.mode = "active"
