"""The operator's and the user's side: reports, revoke, "your sessions", metrics.

Included by ``config.include("session_expiry")``:

- ``GET /admin/sessions`` (permission ``admin``): the last 24 hours in figures and
  two charts, the active sessions (sortable, filterable by user, keyset pages),
  the recent ends (filterable by reason and user);
- ``GET /admin/sessions/{active,ended}.csv``: those lists as streamed CSV;
- ``GET``/``POST /admin/sessions/revoke``: confirm, then end one session or all
  of a user's with reason ``revoked``;
- ``GET /account/sessions`` (any signed-in user): their own open sessions;
  ``POST /account/sessions/end`` signs out one of them, ``POST
  /account/sessions/end-others`` all others after the password is entered again
  (reason ``ended_by_user``);
- ``GET /metrics``: Prometheus text, for ``session_expiry.metrics_scrapers`` and
  administrators.

Names, the user filter and the password check come from the host
application's ``IUserDirectory`` (``config.set_user_directory``).
"""
from __future__ import annotations

from .directory import set_user_directory


def includeme(config):
    config.add_directive("set_user_directory", set_user_directory)
    config.add_route("session_expiry.admin_sessions", "/admin/sessions")
    config.add_route("session_expiry.admin_sessions_csv", "/admin/sessions/{list}.csv")
    config.add_route("session_expiry.admin_revoke", "/admin/sessions/revoke")
    config.add_route("session_expiry.account_sessions", "/account/sessions")
    config.add_route("session_expiry.account_end", "/account/sessions/end")
    config.add_route("session_expiry.account_end_others", "/account/sessions/end-others")
    config.add_route("session_expiry.metrics", "/metrics")
    config.scan(".views")
