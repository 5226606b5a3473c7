"""The operator's and the user's pages: the session report, revoke, "your sessions", metrics."""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pyramid.httpexceptions import HTTPForbidden, HTTPNotFound, HTTPSeeOther
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.view import view_config

from ..decision import Reason
from ..inputs import peer_address, text_field
from ..passwords import reauthenticate
from ..responses import refusal as refusal_response
from ..security import ADMIN
from ..settings import describe_duration
from ..stores.readmodel import (
    END_REASONS,
    HOURS,
    LENGTH_LABELS,
    ActiveQuery,
    ActiveSort,
    EndsQuery,
    is_session_key,
    parse_cursor,
)
from . import charts
from .devices import describe_device
from .directory import user_directory
from .export import all_pages, csv_stream

log = logging.getLogger(__name__)

REPORT = "session_expiry.admin_sessions"
ACCOUNT = "session_expiry.account_sessions"
#: The longest value each field takes (a longer one is a 400, never cut short).
USER_NAME_LENGTH, USER_ID_LENGTH, SESSION_KEY_LENGTH, PASSWORD_LENGTH = 150, 64, 64, 1024
#: Rows per query while a CSV export streams.
EXPORT_BATCH = 500


# -- words for figures ------------------------------------------------------------------------

def when(seconds: int | None) -> str:
    """An instant as a person reads it, in UTC: "2026-11-23 14:05 UTC"."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(seconds: int | None) -> str:
    """An instant for machines (CSV, ``<time datetime>``)."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: int | None) -> str:
    """A length in at most two units: "45 s", "12 min", "1 h 30 min", "2 d 3 h"."""
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes} min"
    if seconds < 86400:
        return f"{hours} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{days} d" + (f" {hours % 24} h" if hours % 24 else "")


def reason_words(reason: str) -> str:
    return str(reason).replace("_", " ")


# -- the report -------------------------------------------------------------------------------

class ReportFilters:
    """The report's query string, read once, validated, and turned back into links."""

    def __init__(self, request):
        params = request.GET
        self.request = request
        self.user = text_field(params, "user", USER_NAME_LENGTH).strip()
        try:
            self.sort = ActiveSort(params.get("sort", ActiveSort.LAST_SEEN))
        except ValueError:
            self.sort = ActiveSort.LAST_SEEN
        reason = params.get("reason", "")
        self.reason = reason if reason in END_REASONS else None
        self.after = parse_cursor(params.get("after"))
        self.ends_after = parse_cursor(params.get("ends_after"))
        #: The id of the user the filter names; None: no filter, "" when nobody has that name.
        self.user_id = None
        if self.user:
            self.user_id = user_directory(request).find(request, self.user) or ""

    @property
    def unknown_user(self) -> bool:
        return self.user_id == ""

    def params(self, **changes) -> dict:
        current = {"user": self.user, "sort": self.sort if self.sort is not ActiveSort.LAST_SEEN
                   else None, "reason": self.reason, "after": self.after,
                   "ends_after": self.ends_after}
        current.update(changes)
        return {name: str(value) for name, value in current.items() if value}

    def link(self, anchor: str = "", **changes) -> str:
        """The report with these filters changed (a sort or filter starts at page one)."""
        query = urlencode(self.params(**changes))
        return self.request.route_path(REPORT) + (f"?{query}" if query else "") + anchor

    def csv_link(self, which: str) -> str:
        query = urlencode(self.params(after=None, ends_after=None))
        return self.request.route_path("session_expiry.admin_sessions_csv", list=which) \
            + (f"?{query}" if query else "")

    def active_query(self, now: int, limit: int | None = None) -> ActiveQuery:
        query = ActiveQuery(now=now, sort=self.sort, user_id=self.user_id or None,
                            after=self.after)
        return replace(query, limit=limit) if limit else query

    def ends_query(self, limit: int | None = None) -> EndsQuery:
        query = EndsQuery(reason=self.reason, user_id=self.user_id or None,
                          after=self.ends_after)
        return replace(query, limit=limit) if limit else query


def _names(request, user_ids) -> dict[str, str]:
    user_ids = sorted(set(user_ids))
    names = user_directory(request).names(request, user_ids) if user_ids else {}
    return {user_id: names.get(user_id) or f"user {user_id}" for user_id in user_ids}


def active_rows(request, records, now: int) -> list[dict]:
    names = _names(request, (record.user_id for record in records))
    return [{"key": record.key, "short": record.key[:8], "user_id": record.user_id,
             "user": names[record.user_id], "started": record.created,
             "last_seen": record.last_seen, "remaining": record.remaining(now),
             "ip": record.ip or "", "device": describe_device(record.user_agent)}
            for record in records]


def end_rows(request, events) -> list[dict]:
    names = _names(request, (event.user_id for event in events))
    return [{"key": event.session_key, "short": event.session_key[:8],
             "user_id": event.user_id, "user": names[event.user_id], "reason": event.reason,
             "length": event.duration, "ended_at": event.ended_at}
            for event in events]


@view_config(route_name=REPORT, request_method=("GET", "HEAD"), permission=ADMIN,
             renderer="session_expiry:templates/reports/admin_sessions.jinja2")
def admin_sessions(request):
    expiry = request.session_expiry
    store, now = expiry.store, expiry.now
    filters = ReportFilters(request)
    summary = store.summary(now)
    if filters.unknown_user:
        active = ends = None
    else:
        active = store.active_sessions(filters.active_query(now))
        ends = store.recent_ends(filters.ends_query())
    request.response.cache_control = "private, no-store"
    return {
        "summary": summary, "filters": filters,
        "active": active and active_rows(request, active.rows, now),
        "active_next": active and active.next and filters.link(after=active.next,
                                                               anchor="#active"),
        "ends": ends and end_rows(request, ends.rows),
        "ends_next": ends and ends.next and filters.link(ends_after=ends.next, anchor="#ends"),
        "sorts": [(sort, sort.replace("_", " ")) for sort in ActiveSort],
        "end_reasons": END_REASONS,
        "ends_chart": charts.ends_per_hour(summary, "Sessions ended per hour over the last "
                                           "24 hours, by reason"),
        "lengths_chart": charts.length_histogram(summary, "How long the sessions that ended in "
                                                 "the last 24 hours lasted"),
        "hour_labels": charts.hour_labels(now), "hours": list(reversed(range(HOURS))),
        "length_labels": LENGTH_LABELS,
        "flash": request.session.pop_flash(REPORT),
        "when": when, "iso": iso, "span": span, "reason_words": reason_words,
    }


@view_config(route_name="session_expiry.admin_sessions_csv", request_method=("GET", "HEAD"),
             permission=ADMIN)
def admin_sessions_csv(request):
    """Stream a list as CSV, page by page (flat memory, whatever its length)."""
    expiry = request.session_expiry
    store, now = expiry.store, expiry.now
    filters = ReportFilters(request)
    which = request.matchdict["list"]
    if which == "active":
        header = ("session", "user_id", "user", "started", "last_seen", "seconds_left", "ip",
                  "device")
        pages = all_pages(store.active_sessions, filters.active_query(now, EXPORT_BATCH),
                          replace)

        def rows_of(records):
            return [(row["key"], row["user_id"], row["user"], iso(row["started"]),
                     iso(row["last_seen"]), row["remaining"], row["ip"], row["device"])
                    for row in active_rows(request, records, now)]
    elif which == "ended":
        header = ("session", "user_id", "user", "reason", "length_seconds", "ended_at")
        pages = all_pages(store.recent_ends, filters.ends_query(EXPORT_BATCH), replace)

        def rows_of(events):
            return [(row["key"], row["user_id"], row["user"], row["reason"], row["length"],
                     iso(row["ended_at"])) for row in end_rows(request, events)]
    else:
        raise HTTPNotFound()
    if filters.unknown_user:
        pages = iter(())
    response = Response(content_type="text/csv", charset="utf-8",
                        app_iter=csv_stream(header, pages, rows_of))
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M")
    response.content_disposition = f'attachment; filename="sessions-{which}-{stamp}.csv"'
    response.cache_control = "private, no-store"
    return response


# -- revoke -----------------------------------------------------------------------------------

@view_config(route_name="session_expiry.admin_revoke", request_method=("GET", "HEAD"),
             permission=ADMIN, renderer="session_expiry:templates/reports/revoke.jinja2")
def confirm_revoke(request):
    """Say exactly what will end, and ask."""
    expiry = request.session_expiry
    target = revoke_target(request, request.GET)
    if target is None:
        request.session.flash("That session has ended already.", REPORT)
        return HTTPSeeOther(location=request.route_path(REPORT))
    key, user_id, records = target
    return {"key": key, "user_id": user_id, "user": _names(request, [user_id])[user_id],
            "sessions": active_rows(request, records, expiry.now),
            "own": expiry.record.key in {record.key for record in records},
            "poll": describe_duration(expiry.policy.poll_interval), "when": when, "span": span}


@view_config(route_name="session_expiry.admin_revoke", request_method="POST", permission=ADMIN,
             require_csrf=True)
def revoke(request):
    """End one session, or every session of a user, with reason ``revoked``.

    Each ends exactly once and fires its event; the pages of those sessions
    learn it at their next request or status poll (within ``poll_interval``).
    """
    expiry = request.session_expiry
    target = revoke_target(request, request.POST)
    ended = []
    if target is not None:
        key, user_id, _records = target
        if key:
            record = expiry.store.end(key, Reason.REVOKED, expiry.now)
            ended = [record] if record else []
        else:
            ended = expiry.store.end_user_sessions(user_id, Reason.REVOKED, expiry.now)
    if ended:
        user = _names(request, [ended[0].user_id])[ended[0].user_id]
        count = len(ended)
        log.info("admin %s revoked %d session(s) of user %s", expiry.userid, count,
                 ended[0].user_id)
        message = f"Revoked {count} session{'s' if count != 1 else ''} of {user}."
    else:
        message = "Nothing was revoked: those sessions had ended already."
    if expiry.active:  # revoking one's own session signs one out
        request.session.flash(message, REPORT)
    return HTTPSeeOther(location=request.route_path(REPORT))


def revoke_target(request, params):
    """(key, user_id, open records) that ``session=<key>`` or ``user=<id>`` names, or None."""
    store = request.session_expiry.store
    key = text_field(params, "session", SESSION_KEY_LENGTH)
    if is_session_key(key):
        record = store.get(key)
        if record is None or not record.is_open:
            return None
        return key, record.user_id, [record]
    user_id = text_field(params, "user", USER_ID_LENGTH)
    if user_id:
        records = store.user_sessions(user_id, request.session_expiry.now)
        return (None, user_id, records) if records else None
    return None


# -- the user's own sessions ------------------------------------------------------------------

@view_config(route_name=ACCOUNT, request_method=("GET", "HEAD"),
             renderer="session_expiry:templates/reports/account_sessions.jinja2")
def account_sessions(request, error: str | None = None):
    expiry = request.session_expiry
    records = expiry.user_sessions()
    request.response.cache_control = "private, no-store"
    return {"sessions": active_rows(request, records, expiry.now),
            "current": expiry.record.key, "error": error,
            "flash": request.session.pop_flash(ACCOUNT), "when": when, "span": span}


@view_config(route_name="session_expiry.account_end", request_method="POST", require_csrf=True)
def account_end(request):
    """Sign out one other device of mine (reason ``ended_by_user``)."""
    key = text_field(request.POST, "session", SESSION_KEY_LENGTH)
    if is_session_key(key) and request.session_expiry.end_user_session(key):
        request.session.flash("That session has been signed out.", ACCOUNT)
    else:
        request.session.flash("That session had ended already.", ACCOUNT)
    return HTTPSeeOther(location=request.route_path(ACCOUNT))


@view_config(route_name="session_expiry.account_end_others", request_method="POST",
             require_csrf=True, session_touch=False,
             renderer="session_expiry:templates/reports/account_sessions.jinja2")
def account_end_others(request):
    """Sign out every other session, after the password is entered again (ASVS 3.3.4).

    Throttled as a sign-in is, under the same account (``reauthenticate``; the account is
    the name the user directory gives, in the demo the one a user signs in with); a wrong
    password is not activity, and ``reauth_max_failures`` in a row end this session.
    """
    expiry = request.session_expiry
    password = text_field(request.POST, "password", PASSWORD_LENGTH)
    directory = user_directory(request)
    account = _names(request, [expiry.userid])[expiry.userid]
    # A try that must wait raises TooManyTries: the add-on's exception view answers 429.
    verified = reauthenticate(
        request, account,
        lambda: directory.verify_password(request, expiry.userid, password)) \
        if password else False
    if not expiry.active:  # too many wrong passwords: this session has ended
        return refusal_response(request, expiry.policy, expiry.reason)
    if not verified:
        request.response.status = 400
        return account_sessions(request, error=(
            "This application cannot check your password here; sign out the other sessions "
            "one by one." if verified is None else "That password is not right."))
    count = expiry.end_other_sessions()
    request.session.flash(f"Signed out {count} other session{'s' if count != 1 else ''}.",
                          ACCOUNT)
    return HTTPSeeOther(location=request.route_path(ACCOUNT))


# -- metrics ----------------------------------------------------------------------------------

@view_config(route_name="session_expiry.metrics", request_method="GET",
             permission=NO_PERMISSION_REQUIRED, session_touch=False)
def metrics(request):
    """Prometheus text: for the scrapers ``metrics_scrapers`` names, and for administrators."""
    setup = request.registry.session_expiry
    # The peer's address as the WSGI server gives it: ``client_addr`` would believe any
    # client's X-Forwarded-For header.
    if not (setup.policy.may_scrape(peer_address(request.environ))
            or request.has_permission(ADMIN)):
        raise HTTPForbidden()
    response = Response(generate_latest(setup.metrics.registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    response.cache_control = "no-store"
    return response
