"""How a request's client is classified, and how query strings are added to URLs."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from session_expiry.responses import RequestKind, request_kind, with_query

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PAGE, HTMX, API = RequestKind.PAGE, RequestKind.HTMX, RequestKind.API


@pytest.mark.parametrize(("sec_fetch_mode", "hx_request", "accept", "expected"), [
    # Sec-Fetch-Mode decides when the browser sends it.
    pytest.param("navigate", None, BROWSER_ACCEPT, PAGE, id="navigate_is_page"),
    pytest.param("navigate", None, "*/*", PAGE, id="navigate_with_star_accept_is_page"),
    pytest.param("NAVIGATE", None, None, PAGE, id="navigate_any_case_is_page"),
    pytest.param("cors", None, "*/*", API, id="cors_is_api"),
    pytest.param("no-cors", None, "*/*", API, id="no_cors_is_api"),
    pytest.param("same-origin", None, "*/*", API, id="same_origin_is_api"),
    pytest.param("cors", None, BROWSER_ACCEPT, API, id="cors_with_html_accept_is_api"),
    pytest.param("websocket", None, None, API, id="websocket_is_api"),
    # htmx announces itself; that wins even over a navigation.
    pytest.param("cors", "true", "*/*", HTMX, id="htmx_request_is_htmx"),
    pytest.param("navigate", "true", BROWSER_ACCEPT, HTMX, id="htmx_wins_over_navigate"),
    pytest.param(None, "True", None, HTMX, id="htmx_header_any_case"),
    pytest.param(None, " true ", None, HTMX, id="htmx_header_padded"),
    pytest.param("navigate", "false", BROWSER_ACCEPT, PAGE, id="htmx_false_is_not_htmx"),
    # No Sec-Fetch headers (old browsers, curl, API clients): Accept decides.
    pytest.param(None, None, BROWSER_ACCEPT, PAGE, id="browser_accept_is_page"),
    pytest.param(None, None, "text/html", PAGE, id="plain_html_is_page"),
    pytest.param(None, None, "application/xhtml+xml", PAGE, id="xhtml_is_page"),
    pytest.param(None, None, "TEXT/HTML", PAGE, id="html_any_case_is_page"),
    pytest.param(None, None, "text/html, application/json", PAGE, id="html_ties_json_is_page"),
    pytest.param(None, None, "application/json;q=0.5, text/html", PAGE,
                 id="html_preferred_over_json_is_page"),
    pytest.param(None, None, "*/*", API, id="star_accept_is_api"),
    pytest.param(None, None, "application/json", API, id="json_is_api"),
    pytest.param(None, None, "text/html;q=0.5, application/json", API,
                 id="json_preferred_over_html_is_api"),
    pytest.param(None, None, "text/html;q=0", API, id="html_refused_is_api"),
    pytest.param(None, None, None, API, id="missing_accept_is_api"),
    pytest.param(None, None, "", API, id="empty_accept_is_api"),
    pytest.param("", None, BROWSER_ACCEPT, PAGE, id="empty_sec_fetch_mode_falls_back_to_accept"),
    # Malformed quality values never crash.
    pytest.param(None, None, "text/html;q=abc", API, id="malformed_q_counts_as_zero"),
    pytest.param(None, None, "text/html;q=", API, id="empty_q_counts_as_zero"),
    pytest.param(None, None, "text/html;q=abc, application/json", API,
                 id="malformed_q_with_json_is_api"),
    pytest.param(None, None, "application/json;q=oops, text/html", PAGE,
                 id="malformed_json_q_with_html_is_page"),
    pytest.param(None, None, ";;,,;q=,text/html", PAGE, id="junk_items_are_skipped"),
])
def test_request_kind(sec_fetch_mode, hx_request, accept, expected):
    assert request_kind(sec_fetch_mode, hx_request, accept) is expected


@pytest.mark.parametrize("accept", [
    "text/html;q=nan", "text/html;q=inf", "text/html;q=-1", "text/html;q=1e999",
    "text/html;;;q=0.5;level=1", "a" * 5000, ";" * 100, "text/html;q=0.5;q=x",
])
def test_request_kind_never_crashes_on_odd_accept_headers(accept):
    assert request_kind(None, None, accept) in (PAGE, API)


@pytest.mark.parametrize(("url", "params", "expected"), [
    pytest.param("/login", {}, "/login", id="no_params_unchanged"),
    pytest.param("/login", {"came_from": None}, "/login", id="none_dropped"),
    pytest.param("/login", {"came_from": ""}, "/login", id="empty_dropped"),
    pytest.param("/login", {"came_from": "/workspace"}, "/login?came_from=%2Fworkspace",
                 id="adds_query"),
    pytest.param("/login?lang=en", {"came_from": "/w"}, "/login?lang=en&came_from=%2Fw",
                 id="appends_to_existing_query"),
    pytest.param("/session-expired", {"reason": "idle_timeout", "came_from": None},
                 "/session-expired?reason=idle_timeout", id="drops_only_empty_values"),
])
def test_with_query(url, params, expected):
    assert with_query(url, **params) == expected


def test_with_query_encodes_values_so_they_round_trip():
    back = "/workspace?tab=a&b=c d#x"
    url = with_query("/session-expired", reason="revoked", came_from=back)
    parts = urlsplit(url)
    assert parts.path == "/session-expired"
    assert parse_qs(parts.query) == {"reason": ["revoked"], "came_from": [back]}
    assert "#" not in url and " " not in url
