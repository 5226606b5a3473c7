"""Safe return URLs: a path on this site, or the fallback; never an open redirect."""
from __future__ import annotations

import pytest

from session_expiry.redirects import MAX_LENGTH, safe_path, same_site_path


@pytest.mark.parametrize("path", [
    "/",
    "/workspace",
    "/workspace?tab=notes",
    "/search?q=a%20b&page=2",
    "/api/notes?sort=-created#top",
    "/login?came_from=%2Fworkspace",
    "/files/report%2Fq3.pdf",
    "/redirect?next=https%3A%2F%2Fexample.com",
    "/a:b",
    "/a/../b",
    "/docs/./guide",
    "/a//b",
    "/" + "a" * (MAX_LENGTH - 1),
], ids=lambda p: p[:40])
def test_safe_path_accepts_local_paths(path):
    assert safe_path(path) == path


def test_safe_path_percent_encodes_characters_outside_ascii_for_the_location_header():
    assert safe_path("/caf\u00e9?q=\u20ac") == "/caf%C3%A9?q=%E2%82%AC"
    assert safe_path("/caf%C3%A9") == "/caf%C3%A9"


@pytest.mark.parametrize("candidate", [
    pytest.param("//evil.com", id="network_path"),
    pytest.param("//evil.com/workspace", id="network_path_with_path"),
    pytest.param("///evil.com", id="triple_slash"),
    pytest.param("/\\evil.com", id="slash_backslash"),
    pytest.param("\\\\evil.com", id="double_backslash"),
    pytest.param("\\/evil.com", id="backslash_slash"),
    pytest.param("/foo\\bar", id="backslash_inside"),
    pytest.param("/.//evil.com", id="dot_segment_then_network_path"),
    pytest.param("/a/..//evil.com", id="dot_dot_segment_then_network_path"),
    pytest.param("/..//evil.com", id="dot_dot_above_the_root_then_network_path"),
    pytest.param("/%2e//evil.com", id="encoded_dot_segment_then_network_path"),
    pytest.param("/%2E%2E//evil.com", id="encoded_dot_dot_segment_then_network_path"),
    pytest.param("https://evil.com", id="https_url"),
    pytest.param("http://evil.com/", id="http_url"),
    pytest.param("http:/evil.com", id="scheme_single_slash"),
    pytest.param("http:evil.com", id="scheme_no_slash"),
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("JavaScript:alert(1)", id="javascript_mixed_case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data_url"),
    pytest.param("/%2F%2Fevil.com", id="encoded_slashes_after_slash"),
    pytest.param("%2F%2Fevil.com", id="encoded_network_path"),
    pytest.param("/%2fevil.com", id="encoded_slash_lowercase"),
    pytest.param("/%5Cevil.com", id="encoded_backslash"),
    pytest.param("/%5cevil.com", id="encoded_backslash_lowercase"),
    pytest.param("/%252F%252Fevil.com", id="double_encoded_slashes"),
    pytest.param("/%25252F%25252Fevil.com", id="triple_encoded_slashes"),
    pytest.param("/%255Cevil.com", id="double_encoded_backslash"),
    pytest.param("/a\r\nLocation: http://evil.com", id="crlf_header_injection"),
    pytest.param("/a%0d%0aLocation:%20http://evil.com", id="encoded_crlf"),
    pytest.param("/a\nb", id="newline"),
    pytest.param("/a\tb", id="tab"),
    pytest.param("/\t/evil.com", id="tab_between_slashes"),
    pytest.param("/%09/evil.com", id="encoded_tab_between_slashes"),
    pytest.param("/a\x00b", id="nul"),
    pytest.param("/a\x7fb", id="delete_char"),
    pytest.param(" /workspace", id="leading_space"),
    pytest.param("workspace", id="relative_path"),
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param("/" + "a" * MAX_LENGTH, id="over_long"),
    pytest.param("/?" + "x" * 10_000, id="very_long"),
])
def test_safe_path_rejects_unsafe_targets_with_the_fallback(candidate):
    assert safe_path(candidate) == "/"
    assert safe_path(candidate, fallback="/home") == "/home"


def test_safe_path_length_limit_is_inclusive():
    at_limit = "/" + "a" * (MAX_LENGTH - 1)
    assert len(at_limit) == MAX_LENGTH
    assert safe_path(at_limit) == at_limit
    assert safe_path(at_limit + "a") == "/"


def test_safe_path_returns_the_candidate_unchanged_not_decoded():
    assert safe_path("/search?q=%2Fetc") == "/search?q=%2Fetc"


HOST = "https://app.example"


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param(HOST + "/workspace?tab=2", "/workspace?tab=2", id="same_site_url"),
    pytest.param(HOST + "/", "/", id="same_site_root"),
    pytest.param("/workspace", "/workspace", id="already_a_path"),
    pytest.param("https://evil.example/workspace", None, id="other_site"),
    pytest.param("https://app.example.evil.example/x", None, id="host_prefix_trick"),
    pytest.param("http://app.example/workspace", None, id="other_scheme_same_host"),
    pytest.param(HOST + "//evil.example/x", None, id="same_site_then_network_path"),
    pytest.param(HOST + "/\\evil.example", None, id="same_site_then_backslash"),
    pytest.param(HOST + "/%2F%2Fevil.example", None, id="same_site_then_encoded_slashes"),
    pytest.param(HOST + "@evil.example/x", None, id="userinfo_trick"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="none"),
])
def test_same_site_path(url, expected):
    assert same_site_path(url, HOST) == expected
