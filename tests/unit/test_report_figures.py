"""The session report's pure parts: figures, cursors and pages, CSV cells, device names, charts."""
from __future__ import annotations

import csv
import io
import re

import pytest
from bs4 import BeautifulSoup

from session_expiry.reports import charts
from session_expiry.reports.devices import describe_device
from session_expiry.reports.export import all_pages, csv_stream, neutralise
from session_expiry.stores.readmodel import (
    END_REASONS,
    HOUR,
    HOURS,
    LATEST,
    LENGTH_EDGES,
    LENGTH_LABELS,
    REFUSAL_REASONS,
    ActiveSort,
    Cursor,
    EndCount,
    Page,
    after_cursor,
    hours_ago,
    is_session_key,
    length_bucket,
    page_of,
    parse_cursor,
    percentile,
    summarize,
)

NOW = 1_800_000_000
KEY = "a" * 64
KEY_B = "b" * 64


# -- length buckets -------------------------------------------------------------------------

@pytest.mark.parametrize(("duration", "bucket"), [
    (0, 0), (59, 0),                        # < 1 min
    (60, 1), (299, 1),                      # 1-5 min
    (300, 2), (1199, 2),                    # 5-20 min
    (1200, 3), (3599, 3),                   # 20-60 min
    (3600, 4), (7199, 4),                   # 1-2 h
    (7200, 5), (14399, 5),                  # 2-4 h
    (14400, 6), (28799, 6),                 # 4-8 h
    (28800, 7), (10 * 86400, 7),            # 8 h or more
])
def test_length_bucket_puts_each_edge_in_the_bucket_above_it(duration, bucket):
    assert length_bucket(duration) == bucket


def test_there_is_one_label_per_length_bucket():
    assert len(LENGTH_LABELS) == len(LENGTH_EDGES) + 1
    assert length_bucket(10**9) == len(LENGTH_LABELS) - 1


# -- hours ago ------------------------------------------------------------------------------

@pytest.mark.parametrize(("ago", "column"), [
    (0, 0), (HOUR - 1, 0), (HOUR, 1), (2 * HOUR - 1, 1), (23 * HOUR, 23),
    (24 * HOUR - 1, 23),
    (24 * HOUR, 23), (48 * HOUR, 23),       # older than the window: clamped to the last column
    (-60, 0),                               # an end stamped in the future (clock skew): now
])
def test_hours_ago_gives_the_chart_column_of_an_end(ago, column):
    assert hours_ago(NOW - ago, NOW) == column


# -- percentile -----------------------------------------------------------------------------

def test_percentile_of_nothing_is_none():
    assert percentile([], .5) is None
    assert percentile([], .9) is None


def test_percentile_of_one_value_is_that_value():
    assert percentile([42], .5) == 42
    assert percentile([42], .9) == 42


@pytest.mark.parametrize(("values", "fraction", "expected"), [
    ([1, 2, 3, 4], .5, 2),                  # rank ceil(2.0) = 2
    ([1, 2, 3, 4, 5], .5, 3),               # rank ceil(2.5) = 3
    (list(range(1, 11)), .9, 9),            # rank ceil(9.0) = 9: no interpolation
    (list(range(1, 12)), .9, 10),           # rank ceil(9.9) = 10
    (list(range(1, 71)), .9, 63),           # 0.9 * 70 is 63 exactly, not 63.000...1
    ([5, 7], 0.0, 5),                       # rank at least 1
    ([5, 7], 1.0, 7),
])
def test_percentile_is_nearest_rank(values, fraction, expected):
    assert percentile(values, fraction) == expected


def test_percentile_returns_a_member_of_the_values():
    values = [10, 20, 30, 40, 50, 60, 70]
    assert percentile(values, .5) in values
    assert percentile(values, .9) in values


# -- summarize ------------------------------------------------------------------------------

def test_summarize_of_nothing_is_all_zeros_with_every_reason_listed():
    summary = summarize(NOW, active=0, started=0, end_counts=[], refusals=[],
                        lengths=(None, None), sweeper_lag=0)
    assert summary.ended_by_reason == {str(reason): 0 for reason in END_REASONS}
    assert summary.refused_by_reason == {str(reason): 0 for reason in REFUSAL_REASONS}
    assert list(summary.ended_by_reason) == [str(reason) for reason in END_REASONS]
    assert len(summary.ends_per_hour) == HOURS
    assert all(sum(hour.values()) == 0 for hour in summary.ends_per_hour)
    assert summary.length_histogram == [0] * len(LENGTH_LABELS)
    assert (summary.ended, summary.refused) == (0, 0)
    assert (summary.median_length, summary.p90_length) == (None, None)


def test_summarize_folds_end_counts_by_reason_hour_and_length():
    rows = [EndCount(0, "revoked", 2, 3), EndCount(0, "revoked", 4, 1),
            EndCount(5, "idle_timeout", 3, 7), EndCount(23, "logged_out", 0, 2)]
    summary = summarize(NOW, active=4, started=9, end_counts=rows, refusals=[],
                        lengths=(600, 1500), sweeper_lag=0)
    assert summary.ended_by_reason["revoked"] == 4
    assert summary.ended_by_reason["idle_timeout"] == 7
    assert summary.ended_by_reason["logged_out"] == 2
    assert summary.ended_by_reason["absolute_timeout"] == 0
    assert summary.ended == 13
    assert summary.ends_per_hour[0]["revoked"] == 4
    assert summary.ends_per_hour[5]["idle_timeout"] == 7
    assert summary.ends_per_hour[23]["logged_out"] == 2
    assert sum(sum(hour.values()) for hour in summary.ends_per_hour) == 13
    assert summary.length_histogram == [2, 0, 3, 7, 1, 0, 0, 0]
    assert (summary.active, summary.started) == (4, 9)
    assert (summary.median_length, summary.p90_length) == (600, 1500)


def test_summarize_adds_refusals_of_one_reason_from_several_rows():
    summary = summarize(NOW, active=0, started=0, end_counts=[],
                        refusals=[("ticket_mismatch", 2), ("session_lost", 1),
                                  ("ticket_mismatch", 3)],
                        lengths=(None, None), sweeper_lag=0)
    assert summary.refused_by_reason == {"ticket_mismatch": 5, "ticket_expired": 0,
                                         "session_lost": 1}
    assert summary.refused == 6


def test_summarize_never_reports_a_negative_sweeper_lag():
    def lag(value):
        return summarize(NOW, active=0, started=0, end_counts=[], refusals=[],
                         lengths=(None, None), sweeper_lag=value).sweeper_lag

    assert lag(-5) == 0
    assert lag(90) == 90


# -- cursors and pages ------------------------------------------------------------------------

def test_a_cursor_reads_back_from_its_text():
    cursor = Cursor(NOW, KEY)
    assert str(cursor) == f"{NOW}.{KEY}"
    assert parse_cursor(str(cursor)) == cursor


@pytest.mark.parametrize("text", [
    None, "", "garbage", f"{NOW}", f"{NOW}.", f".{KEY}", f"{NOW}.{KEY[:-1]}",
    f"{NOW}.{KEY}0", f"{NOW}.{'A' * 64}", f"-1.{KEY}", f"1e9.{KEY}", f"{NOW} .{KEY}",
    f"{'9' * 13}.{KEY}", f"{NOW}.{KEY}\n", f"{NOW}.{'g' * 64}",
    f"{LATEST + 1}.{KEY}", f"{'9' * 12}.{KEY}",  # past what a store's timestamp holds
])
def test_a_malformed_cursor_means_the_first_page(text):
    assert parse_cursor(text) is None


def test_a_cursor_at_the_last_second_a_store_holds_reads_back():
    assert parse_cursor(f"{LATEST}.{KEY}") == Cursor(LATEST, KEY)


def test_is_session_key_accepts_only_64_lowercase_hex():
    assert is_session_key(KEY)
    assert not is_session_key(KEY[:63])
    assert not is_session_key(KEY.upper())
    assert not is_session_key(None)
    assert not is_session_key(KEY + "\n")


def test_after_cursor_without_a_cursor_keeps_everything():
    assert after_cursor(0, KEY, None, True)
    assert after_cursor(0, KEY, None, False)


def test_after_cursor_descending_keeps_smaller_values_and_breaks_ties_by_key():
    cursor = Cursor(100, KEY_B)
    assert after_cursor(99, "f" * 64, cursor, descending=True)
    assert not after_cursor(101, "0" * 64, cursor, descending=True)
    assert after_cursor(100, KEY, cursor, descending=True)  # same value, smaller key
    assert not after_cursor(100, KEY_B, cursor, descending=True)  # the cursor's own row
    assert not after_cursor(100, "c" * 64, cursor, descending=True)


def test_after_cursor_ascending_keeps_larger_values_and_breaks_ties_by_key():
    cursor = Cursor(100, KEY_B)
    assert after_cursor(101, "0" * 64, cursor, descending=False)
    assert not after_cursor(99, "f" * 64, cursor, descending=False)
    assert after_cursor(100, "c" * 64, cursor, descending=False)
    assert not after_cursor(100, KEY_B, cursor, descending=False)
    assert not after_cursor(100, KEY, cursor, descending=False)


def test_only_remaining_sorts_ascending():
    assert ActiveSort.STARTED.descending
    assert ActiveSort.LAST_SEEN.descending
    assert not ActiveSort.REMAINING.descending


def test_page_of_fewer_rows_than_the_limit_is_the_last_page():
    page = page_of([1, 2], 3, lambda row: Cursor(row, KEY))
    assert page == Page([1, 2], None)


def test_page_of_exactly_the_limit_is_the_last_page():
    page = page_of([1, 2, 3], 3, lambda row: Cursor(row, KEY))
    assert page.rows == [1, 2, 3]
    assert page.next is None


def test_page_of_one_more_than_the_limit_drops_it_and_points_after_the_last_shown():
    page = page_of([1, 2, 3, 4], 3, lambda row: Cursor(row, KEY))
    assert page.rows == [1, 2, 3]
    assert page.next == Cursor(3, KEY)


def test_page_of_nothing_is_empty_and_last():
    assert page_of([], 50, lambda row: Cursor(row, KEY)) == Page([], None)


# -- CSV -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1:A2)", "\tTAB", "\rCR", "\nLF",
])
def test_neutralise_prefixes_formula_starts_with_an_apostrophe(text):
    assert neutralise(text) == "'" + text


@pytest.mark.parametrize(("value", "cell"), [
    ("alice", "alice"), ("Chrome 120 on Windows 10", "Chrome 120 on Windows 10"),
    (None, ""), (0, "0"), (1200, "1200"), ("a=b", "a=b"), ("", ""),
])
def test_neutralise_leaves_other_values_as_text(value, cell):
    assert neutralise(value) == cell


def test_csv_stream_yields_the_header_before_fetching_any_page():
    fetched = []

    def pages():
        fetched.append("page 1")
        yield [("k1", "=1+1")]
        fetched.append("page 2")
        yield [("k2", "bob"), ("k3", "-5")]

    stream = csv_stream(("session", "user"), pages(), lambda page: page)
    assert next(stream) == b"session,user\r\n"
    assert fetched == []
    assert next(stream) == b"k1,'=1+1\r\n"
    assert fetched == ["page 1"]
    assert next(stream) == b"k2,bob\r\nk3,'-5\r\n"
    assert fetched == ["page 1", "page 2"]
    assert list(stream) == []


def test_csv_stream_quotes_commas_and_quotes_and_encodes_utf8():
    stream = csv_stream(["a", "b"], [[("Zoë, \"the\" admin", "x")]], lambda page: page)
    body = b"".join(stream).decode("utf-8")
    assert list(csv.reader(io.StringIO(body))) == [["a", "b"], ['Zoë, "the" admin', "x"]]


def test_csv_stream_neutralises_the_header_too():
    assert next(csv_stream(["=x"], [], lambda page: page)) == b"'=x\r\n"


def test_all_pages_follows_the_cursor_until_the_last_page():
    pages = {None: Page([1, 2], Cursor(2, KEY)), Cursor(2, KEY): Page([3], None)}
    asked = []

    def fetch(query):
        asked.append(query["after"])
        return pages[query["after"]]

    got = list(all_pages(fetch, {"after": None}, lambda query, after: {**query, "after": after}))
    assert got == [[1, 2], [3]]
    assert asked == [None, Cursor(2, KEY)]


# -- device names ----------------------------------------------------------------------------

@pytest.mark.parametrize(("user_agent", "words"), [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36", "Chrome 120 on Windows 10"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", "Mobile Safari 17 on iOS 17"),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
     "Firefox 132 on Ubuntu"),
    ("", "Unknown device"),
    (None, "Unknown device"),
    ("garbage!! \x00 ~~", "Unknown device"),
    ("=cmd|' /C calc'!A0", "Unknown device"),
])
def test_describe_device_names_browser_and_system(user_agent, words):
    assert describe_device(user_agent) == words


def test_describe_device_names_the_system_alone_when_the_browser_is_unknown():
    assert describe_device("SomethingNew (Windows NT 10.0)") == "Windows 10"


# -- charts ----------------------------------------------------------------------------------

def story_summary():
    return summarize(NOW, active=3, started=5,
                     end_counts=[EndCount(0, "revoked", 2, 3), EndCount(7, "idle_timeout", 3, 1)],
                     refusals=[("session_lost", 1)], lengths=(600, 1500), sweeper_lag=0)


CHARTS = {"ends_per_hour": charts.ends_per_hour, "length_histogram": charts.length_histogram}


@pytest.mark.parametrize("name", CHARTS)
def test_chart_is_one_inline_svg_image_with_its_name(name):
    svg = str(CHARTS[name](story_summary(), "Sessions per hour"))
    assert svg.startswith("<svg ")
    assert svg.count("<svg") == 1
    assert not svg.startswith("<?xml")
    opening = svg[:svg.index(">")]
    assert 'role="img"' in opening
    assert 'aria-label="Sessions per hour"' in opening


@pytest.mark.parametrize("name", CHARTS)
def test_chart_carries_no_script(name):
    svg = str(CHARTS[name](story_summary(), "label"))
    assert "<script" not in svg.lower()
    assert "javascript" not in svg.lower()


@pytest.mark.parametrize("name", CHARTS)
def test_chart_title_is_its_label_not_the_library_name(name):
    svg = str(CHARTS[name](story_summary(), "How long sessions lasted"))
    assert re.search(r"<title>How long sessions lasted</title>", svg)
    assert "<title>Pygal</title>" not in svg


@pytest.mark.parametrize("name", CHARTS)
def test_chart_label_is_escaped(name):
    label = 'A "quoted" <b>label</b> & more'
    svg = str(CHARTS[name](story_summary(), label))
    assert "<b>" not in svg
    parsed = BeautifulSoup(svg, "html.parser").find("svg")
    assert parsed["aria-label"] == label
    assert parsed.find("title").string == label


def test_ends_chart_names_every_reason_in_its_legend():
    svg = str(charts.ends_per_hour(story_summary(), "label"))
    for reason in END_REASONS:
        assert reason.replace("_", " ") in svg


def test_hour_labels_are_the_24_column_starts_oldest_first():
    labels = charts.hour_labels(NOW)  # NOW is 08:00 UTC
    assert len(labels) == HOURS
    assert labels[0] == "08:00"  # 24 h ago
    assert labels[-1] == "07:00"  # the last hour
