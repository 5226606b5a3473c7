"""The tween: gather the inputs, take the verdict, act on it.

On the way in it reads the auth ticket, the session cookie and the session's
record, asks :func:`~session_expiry.decision.decide`, and ends a session that
is overdue (whoever notices first ends it). A view that counts as activity
(every view but exception views and those declared ``session_touch=False``)
marks the request; on the way out the record is touched, at most once per
``touch_interval``, and the ticket is reissued in the same step, stamped so
that its deadline is the record's idle deadline: one instant, even when an
earlier answer that reissued it never reached the browser. Every response to
an active session says how many seconds are left when it leaves.
"""
from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from pyramid.csrf import new_csrf_token

from .decision import (
    ACTIVE,
    REFUSAL_REASONS,
    Reason,
    State,
    Verdict,
    decide,
    ending_reason,
    ticket_binding,
)
from .inputs import CookieReader, parameters_readable, peer_address, user_agent
from .metrics import Metrics
from .redirects import safe_path
from .responses import cookies_too_large, too_large, unavailable, unreadable, with_query
from .settings import Policy, describe_duration
from .stores import SessionRecord, SessionStore, StoreUnavailable, session_key
from .stores.beaker import data_size
from .ticket import build_ticket

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ExpirySetup:
    """What the add-on built at start-up: ``registry.session_expiry``."""

    policy: Policy
    store: SessionStore
    clock: Callable[[], float]
    ticket_secret: str
    cookie_secret: str
    session_cookie: str
    metrics: Metrics
    cookies: CookieReader


class SessionExpiry:
    """``request.session_expiry``: this request's view of its session's lifecycle."""

    def __init__(self, request, setup: ExpirySetup):
        # Held weakly: the request holds this object (``request.session_expiry``), and the
        # cycle kept every request, its environ and its session for the garbage collector.
        self._request = weakref.ref(request)
        self.setup = setup
        self.policy = setup.policy
        self.store = setup.store
        self.now = int(setup.clock())
        self._activity = False  # a view that counts as activity ran
        self._touched = False

        # The Cookie header is read here, once; Beaker is handed the session judged here
        # (see ``stores.beaker.session_factory``) and never parses the header itself.
        sent = setup.cookies.read(request.environ)
        #: The length of a Cookie header past ``max_cookie_header`` (read as none); else 0.
        self.cookie_header_too_large = sent.too_large
        self._ticket_sent = sent.ticket_sent
        self.ticket = sent.ticket
        #: The session id the cookie names, validly signed; None for none (or two).
        self.session_id = sent.session_id
        self.session_key = sent.session_key
        self.record = self.store.get(self.session_key) if self.session_key else None
        self.verdict = decide(self.ticket, self.session_key, self.record, self.now, self.policy)

        if self.verdict.reason in REFUSAL_REASONS:
            self.store.count_refusal(self.verdict.reason, self.now)
            setup.metrics.count_refusal(self.verdict.reason)
        if self.verdict.end_session:
            self._end(self.verdict.reason)

    # -- what views and templates read ------------------------------------------

    @property
    def request(self):
        """The request judged here."""
        return self._request()

    @property
    def verdict(self) -> Verdict:
        return self._verdict

    @verdict.setter
    def verdict(self, verdict: Verdict) -> None:
        self._verdict = verdict
        #: The session is active: signed in, open, before its deadline.
        self.active = verdict.state is State.ACTIVE

    @property
    def state(self) -> State:
        return self.verdict.state

    @property
    def reason(self) -> Reason | None:
        return self.verdict.reason

    @property
    def holds_session(self) -> bool:
        """The request's session is the one it was judged on: active, or ended (its data
        is gone, and the store takes no write for an ended session). Otherwise it has
        none of its own (a stranger, or a cookie refused): only a new one, to sign in."""
        return self.active or (self.record is not None and not self.record.is_open)

    @property
    def userid(self) -> str | None:
        return self.record.user_id if self.active else None

    @property
    def remaining(self) -> float:
        """Seconds from this moment until the session ends unless touched, rounded up
        to the millisecond; 0 if not active.

        To the millisecond, because the browser counts down from it: a figure in
        whole seconds puts its deadline up to a second late, and its push with it.
        Counts the touch this request will make on its way out, so a page's figure
        and its ``Session-Expires-In`` header (whole seconds, rounded down) agree;
        counts from the moment it is asked, so a slow view does not make the
        browser late.
        """
        if not self.active:
            return 0
        record = self.record
        if self._touch_due:
            record = record.touched(self.now, self.policy.idle_timeout)
        return math.ceil(record.remaining(self.setup.clock()) * 1000) / 1000

    @property
    def remaining_words(self) -> str:
        """The time left in whole minutes, rounded up: "20 minutes"."""
        return describe_duration(math.ceil(self.remaining / 60) * 60)

    @property
    def warn_before(self) -> int:
        return self.policy.warn_before

    @property
    def expired_url_at_deadline(self) -> str:
        """Where this page goes when its session runs out (the no-JS meta refresh)."""
        return with_query(self.policy.expired_url, reason=str(ending_reason(self.record)),
                          came_from=safe_path(self.request.path_qs))

    def page_config(self, csrf_token: str) -> dict:
        """The figures and URLs the browser script starts from."""
        route_path = self.request.route_path
        return {
            "expiresIn": self.remaining,
            "warnBefore": self.policy.warn_before,
            "touchInterval": self.policy.touch_interval,
            "pollInterval": self.policy.poll_interval,
            "activityExtends": self.policy.activity_extends,
            "statusUrl": route_path("session_expiry.status"),
            "extendUrl": route_path("session_expiry.extend"),
            "logoutUrl": route_path("session_expiry.logout"),
            "expiredUrl": self.policy.expired_url,
            "loginUrl": self.policy.login_url,
            "csrfToken": csrf_token,
            # Drafts saved in this browser are restored only for the same user.
            "user": self.record.user_id,
        }

    # -- what views do ---------------------------------------------------------

    def count_activity(self) -> None:
        """This request counts as activity: touch on the way out, if due."""
        self._activity = True

    def extend(self) -> float:
        """Touch now, whatever the interval ("stay signed in"); return ``remaining``."""
        if self.active:
            self._touch()
        return self.remaining

    def login(self, userid: str) -> SessionRecord:
        """Start a new session for ``userid`` under a new id (no fixation)."""
        session = self.request.session
        if self.active:
            self.store.end(self.record.key, Reason.LOGGED_OUT, self.now)
        session.renew()  # a fresh random id, whatever id the client sent
        self.session_id = session.id
        self.session_key = session_key(session.id)
        self.record = self.store.open(
            self.session_key, str(userid), self.now,
            ip=peer_address(self.request.environ),
            user_agent=user_agent(self.request.environ),
        )
        session.changed()  # make Beaker write the entry's data and send the new cookie
        new_csrf_token(self.request)  # a token seen before sign-in is not trusted after it
        self.verdict = ACTIVE
        self.ticket = None  # whatever came in belonged to another session
        self._touched = True
        return self.record

    def user_sessions(self) -> list[SessionRecord]:
        """The signed-in user's open sessions (this one among them)."""
        return self.store.user_sessions(self.userid, self.now) if self.active else []

    def end_user_session(self, key: str) -> bool:
        """End another open session of the signed-in user ("sign out that device").

        Its next request, and its page's next status poll, learn ``ended_by_user``.
        This session itself is ended by :meth:`logout`, not here.
        """
        if not self.active or key == self.record.key:
            return False
        record = self.store.get(key)
        if record is None or record.user_id != self.userid:
            return False
        return self.store.end(key, Reason.ENDED_BY_USER, self.now) is not None

    def end_other_sessions(self) -> int:
        """End every other open session of the signed-in user; how many ended."""
        if not self.active:
            return 0
        return len(self.store.end_user_sessions(self.userid, Reason.ENDED_BY_USER, self.now,
                                                keep=self.record.key))

    def logout(self, reason: Reason = Reason.LOGGED_OUT) -> None:
        """End this session (an old cookie replayed later loads nothing); forget the ticket.

        The session cookie stays, so other tabs learn from the tombstone why they
        were signed out. Only the session's own ticket can end it.
        """
        if self.active:
            self._end(reason)

    # -- what the tween does on the way out --------------------------------------

    def save_session(self, response):
        """Write the session's changes now, before the answer leaves; return the answer.

        Saving here, not in pyramid_beaker's response callback, lets the answer say
        what happened: a store that is down gives a 503, data past
        ``max_session_size`` a 413 (nothing saved). A view that raised keeps nothing.
        """
        session = self.request.__dict__.get("session")
        if session is None or not session.accessed() or not session.dirty():
            return response
        if self.request.exception is not None:
            return response
        size = data_size(session)
        if size > self.policy.max_session_size:
            log.warning("session %s: %d bytes is past max_session_size; not saved",
                        (self.session_key or "")[:12], size)
            return too_large(self.request, self.policy.max_session_size)
        try:
            session.persist()
        except StoreUnavailable as error:
            log.error("session store unavailable, session data not saved: %s", error)
            return unavailable(self.request)
        cookie = session.__dict__["_headers"].get("cookie_out")
        # A stranger's write makes Beaker a new session the store never holds: no cookie.
        if cookie and session.__dict__["_headers"].get("set_cookie") and self.holds_session:
            response.headerlist.append(("Set-Cookie", cookie.strip()))
        return response

    def apply(self, response) -> None:
        """Touch if due, reissue the ticket with it, and tell the client the seconds left."""
        if self._touch_due:
            try:
                self._touch(self.policy.touch_interval)
            except StoreUnavailable as error:  # the answer is made; the touch can wait
                log.warning("session store unavailable, not touched: %s", error)
        if self.active:
            issued = self.record.idle_deadline - self.policy.idle_timeout
            if self.ticket is None or self.ticket.issued != issued:
                value = build_ticket(self.setup.ticket_secret, self.record.user_id,
                                     ticket_binding(self.record.key), issued)
                response.set_cookie(self.policy.ticket_cookie, value, httponly=True,
                                    path=self.policy.cookie_path,
                                    domain=self.policy.cookie_domain,
                                    secure=self.policy.cookie_secure,
                                    samesite=self.policy.cookie_samesite)
            # Appended, not set through ``response.headers``: only this tween writes it, and
            # WebOb's setter scans and rebuilds the whole list. Whole seconds, rounded down
            # (the touch is made above): never a second too many.
            headers = response.headerlist
            headers.append(("Session-Expires-In",
                            str(int(self.record.remaining(self.setup.clock())))))
            for name, _ in headers:
                if name.lower() == "cache-control":
                    break
            else:
                headers.append(("Cache-Control", "private, no-store"))
        elif self._ticket_sent:
            response.delete_cookie(self.policy.ticket_cookie, path=self.policy.cookie_path,
                                   domain=self.policy.cookie_domain)

    # -- internals -------------------------------------------------------------

    @property
    def _touch_due(self) -> bool:
        return self.active and self._activity and self.verdict.touch_due and not self._touched

    def _touch(self, interval: int = 0) -> None:
        self._touched = True
        record = self.store.touch(self.record.key, self.now, interval)
        if record is None:  # ended meanwhile (logout in another tab, revoke, sweep)
            self.record = self.store.get(self.record.key)
            self._take_reason_from_tombstone()
            return
        self.record = record

    def _end(self, reason: Reason) -> None:
        key = self.record.key
        # Another thread or process may have ended it first, for another reason.
        self.record = self.store.end(key, reason, self.now) or self.store.get(key)
        self._take_reason_from_tombstone()

    def _take_reason_from_tombstone(self) -> None:
        """Whoever ended the session knew why: tell that reason."""
        reason = self.record.end_reason if self.record else Reason.SESSION_LOST
        self.verdict = Verdict(State.ENDED, Reason(reason))


def session_expiry(request) -> SessionExpiry:
    """``request.session_expiry``, judged once per request.

    The tween judges every request it serves before anything else reads it; a
    request that never meets the tween (``pyramid.scripting.prepare``) is judged
    here on first use. Not a Pyramid request method: a reified one makes Pyramid
    build a new class for every request (14 µs, a sixth of a page's cost).
    """
    expiry = getattr(request, "session_expiry", None)
    if expiry is None:
        expiry = request.session_expiry = SessionExpiry(request, request.registry.session_expiry)
    return expiry


def expiry_tween_factory(handler, registry):
    def expiry_tween(request):
        try:
            expiry = session_expiry(request)  # judged, and an overdue session ended, on the way in
        except StoreUnavailable as error:
            log.error("session store unavailable: %s", error)
            return unavailable(request)
        if expiry.cookie_header_too_large:
            log.warning("refused a %d-byte Cookie header (max_cookie_header is %d)",
                        expiry.cookie_header_too_large, expiry.policy.max_cookie_header)
            response = cookies_too_large(request, expiry.policy.max_cookie_header)
        elif parameters_readable(request):
            response = expiry.save_session(handler(request))
        else:
            response = unreadable(request)  # no view saw it: nothing is saved or touched
        expiry.apply(response)
        return response

    return expiry_tween


def session_touch_deriver(view, info):
    """Count a view as activity, unless it says ``session_touch=False``.

    Exception views (a 404, a failed CSRF check) are never activity.
    """
    if info.options.get("session_touch") is False:
        return view

    def counting_view(context, request):
        if request.exception is None:
            request.session_expiry.count_activity()
        return view(context, request)

    return counting_view


session_touch_deriver.options = ("session_touch",)
