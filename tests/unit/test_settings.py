"""The one settings loader: defaults, durations, and every contradiction that stops start-up."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from pyramid.exceptions import ConfigurationError

from session_expiry.settings import (
    PREFIX,
    RANGES,
    Policy,
    describe_duration,
    describe_size,
    load,
    parse_duration,
)

SECRET = "a-test-secret-that-is-long-enough-0123456789"
MINIMAL = {"session.type": "expiry:memory", "session_expiry.secret": SECRET}


def settings(**overrides) -> dict:
    """MINIMAL with ``overrides`` (``__`` stands for ``.``; None removes the key)."""
    result = dict(MINIMAL)
    for name, value in overrides.items():
        key = name.replace("__", ".")
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


# -- a valid configuration ---------------------------------------------------------------

def test_minimal_settings_load_with_default_policy():
    loaded, policy = load(dict(MINIMAL), environ={})
    assert isinstance(policy, Policy)
    assert policy.idle_timeout == 1200
    assert policy.absolute_timeout == 28800
    assert policy.warn_before == 120
    assert policy.touch_interval == 1200 // 10
    assert policy.retention == 30 * 86400
    assert policy.secret == SECRET
    assert policy.login_url == "/login"
    assert policy.expired_url == "/session-expired"
    assert policy.store_type == "expiry:memory"
    assert loaded["session_expiry.secret"] == SECRET


@pytest.mark.parametrize(("idle", "touch"), [
    pytest.param("10m", 60, id="10m_touches_every_60s"),
    pytest.param("1h", 360, id="1h_touches_every_360s"),
    pytest.param("20m", 120, id="20m_touches_every_120s"),
    pytest.param("300", 30, id="300s_touches_every_30s"),
])
def test_default_touch_interval_is_a_tenth_of_idle_timeout(idle, touch):
    _, policy = load(settings(session_expiry__idle_timeout=idle,
                              session_expiry__warn_before="20s"), environ={})
    assert policy.touch_interval == touch


def test_explicit_policy_settings_are_parsed():
    _, policy = load(settings(
        session_expiry__idle_timeout="30m", session_expiry__absolute_timeout="12h",
        session_expiry__warn_before="3m", session_expiry__touch_interval="5m",
        session_expiry__retention="7d", session_expiry__login_url="/sign-in",
        session_expiry__expired_url="/bye", session__secure="true", session__samesite="Strict",
    ), environ={})
    assert (policy.idle_timeout, policy.absolute_timeout, policy.warn_before,
            policy.touch_interval, policy.retention) == (1800, 43200, 180, 300, 7 * 86400)
    assert policy.login_url == "/sign-in"
    assert policy.expired_url == "/bye"
    assert policy.cookie_secure is True
    assert policy.cookie_samesite == "Strict"


def test_boundary_values_that_do_not_contradict_load():
    # touch_interval == idle - warn, absolute == idle: both allowed.
    _, policy = load(settings(session_expiry__idle_timeout="20m",
                              session_expiry__absolute_timeout="20m",
                              session_expiry__warn_before="2m",
                              session_expiry__touch_interval="18m"), environ={})
    assert policy.touch_interval == 1080
    assert policy.absolute_timeout == policy.idle_timeout == 1200


def test_beaker_options_we_require_are_filled_when_absent():
    original = dict(MINIMAL)
    loaded, _ = load(original, environ={})
    assert loaded["session.save_accessed_time"] == "false"
    assert loaded["session.auto"] == "false"
    assert loaded["session.data_serializer"] == "json"
    assert original == MINIMAL, "load must not change the caller's dict"


@pytest.mark.parametrize(("key", "value"), [
    ("session.save_accessed_time", "false"),
    ("session.save_accessed_time", "False"),
    ("session.save_accessed_time", "no"),
    ("session.auto", "off"),
    ("session.auto", "false"),
    ("session.data_serializer", "json"),
    ("session.data_serializer", "JSON"),
    ("session.timeout", ""),
])
def test_beaker_options_that_agree_with_ours_load(key, value):
    loaded, _ = load({**MINIMAL, key: value}, environ={})
    assert loaded["session.type"] == "expiry:memory"
    if value:
        assert loaded[key] == value


# -- every contradiction stops start-up, naming the key -----------------------------------

CONTRADICTIONS = [
    ("beaker_timeout_set", {"session.timeout": "1200"}, "session.timeout"),
    ("beaker_save_accessed_time_true", {"session.save_accessed_time": "true"},
     "session.save_accessed_time"),
    ("beaker_auto_true", {"session.auto": "true"}, "session.auto"),
    ("beaker_pickle_serializer", {"session.data_serializer": "pickle"},
     "session.data_serializer"),
    ("beaker_encrypt_key_set", {"session.encrypt_key": "k" * 40}, "session.encrypt_key"),
    ("beaker_secret_set", {"session.secret": "s" * 40}, "session.secret"),
    ("touch_interval_longer_than_idle_minus_warn",
     {"session_expiry.touch_interval": "1081s"}, "session_expiry.touch_interval"),
    ("touch_interval_longer_than_idle", {"session_expiry.touch_interval": "30m"},
     "session_expiry.touch_interval"),
    ("warn_before_equal_to_idle", {"session_expiry.warn_before": "20m"},
     "session_expiry.warn_before"),
    ("warn_before_longer_than_idle", {"session_expiry.warn_before": "1h"},
     "session_expiry.warn_before"),
    ("absolute_shorter_than_idle", {"session_expiry.absolute_timeout": "10m"},
     "session_expiry.absolute_timeout"),
    ("secret_missing", {"session_expiry.secret": None}, "session_expiry.secret"),
    ("secret_blank", {"session_expiry.secret": "   "}, "session_expiry.secret"),
    ("secret_short", {"session_expiry.secret": "too-short"}, "session_expiry.secret"),
    ("secret_one_character_too_short", {"session_expiry.secret": "x" * 31},
     "session_expiry.secret"),
    ("session_type_missing", {"session.type": None}, "session.type"),
    ("session_type_memory", {"session.type": "memory"}, "session.type"),
    ("session_type_beaker_database", {"session.type": "ext:database"}, "session.type"),
    ("unknown_key_typo", {"session_expiry.idle_timout": "20m"}, "session_expiry.idle_timout"),
    ("unknown_key", {"session_expiry.colour": "blue"}, "session_expiry.colour"),
    ("bad_duration_words", {"session_expiry.idle_timeout": "20 minutes"},
     "session_expiry.idle_timeout"),
    ("bad_duration_unit", {"session_expiry.absolute_timeout": "8x"},
     "session_expiry.absolute_timeout"),
    ("negative_duration", {"session_expiry.warn_before": "-3"}, "session_expiry.warn_before"),
    ("zero_duration", {"session_expiry.idle_timeout": "0"}, "session_expiry.idle_timeout"),
    ("bad_retention", {"session_expiry.retention": "forever"}, "session_expiry.retention"),
    ("login_url_absolute_url", {"session_expiry.login_url": "https://evil.example/login"},
     "session_expiry.login_url"),
    ("login_url_network_path", {"session_expiry.login_url": "//evil.example/login"},
     "session_expiry.login_url"),
    ("login_url_relative", {"session_expiry.login_url": "login"}, "session_expiry.login_url"),
    ("login_url_backslash_network_path", {"session_expiry.login_url": "/\\evil.example/login"},
     "session_expiry.login_url"),
    ("expired_url_absolute_url", {"session_expiry.expired_url": "http://evil.example/"},
     "session_expiry.expired_url"),
]


@pytest.mark.parametrize(("changes", "key"), [case[1:] for case in CONTRADICTIONS],
                         ids=[case[0] for case in CONTRADICTIONS])
def test_contradiction_stops_start_up_naming_the_key(changes, key):
    given = dict(MINIMAL)
    for name, value in changes.items():
        if value is None:
            given.pop(name)
        else:
            given[name] = value
    with pytest.raises(ConfigurationError) as error:
        load(given, environ={})
    message = str(error.value)
    assert message.startswith(key + ":"), message
    assert ";" in message, "the message should say what to write"


def test_secret_error_message_names_the_environment_variable():
    with pytest.raises(ConfigurationError, match="SESSION_EXPIRY_SECRET"):
        load(settings(session_expiry__secret=None), environ={})


# -- warnings ------------------------------------------------------------------------------

def test_warn_before_under_20s_loads_but_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="session_expiry.settings"):
        _, policy = load(settings(session_expiry__warn_before="10s"), environ={})
    assert policy.warn_before == 10
    warnings = [r for r in caplog.records
                if r.name == "session_expiry.settings" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "warn_before" in warnings[0].getMessage()


def test_warn_before_of_20s_loads_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="session_expiry.settings"):
        _, policy = load(settings(session_expiry__warn_before="20s"), environ={})
    assert policy.warn_before == 20
    assert not [r for r in caplog.records if r.name == "session_expiry.settings"]


# -- filled from the environment --------------------------------------------------------------

ENV_SECRET = "secret-from-the-environment-0123456789-abcdef"
ENV_URL = "postgresql://db.example/app"


def test_secret_comes_from_the_environment_when_the_ini_leaves_it_out():
    loaded, policy = load(settings(session_expiry__secret=None),
                          environ={"SESSION_EXPIRY_SECRET": ENV_SECRET})
    assert policy.secret == ENV_SECRET
    assert loaded["session_expiry.secret"] == ENV_SECRET


def test_blank_secret_in_the_ini_is_filled_from_the_environment():
    _, policy = load(settings(session_expiry__secret="  "),
                     environ={"SESSION_EXPIRY_SECRET": ENV_SECRET})
    assert policy.secret == ENV_SECRET


def test_secret_in_the_ini_wins_over_the_environment():
    _, policy = load(dict(MINIMAL), environ={"SESSION_EXPIRY_SECRET": ENV_SECRET})
    assert policy.secret == SECRET


def test_database_url_comes_from_the_environment_when_the_ini_leaves_it_out():
    loaded, _ = load(dict(MINIMAL), environ={"SQLALCHEMY_URL": ENV_URL})
    assert loaded["sqlalchemy.url"] == ENV_URL


def test_database_url_in_the_ini_wins_over_the_environment():
    loaded, _ = load(settings(sqlalchemy__url="sqlite:///ini.sqlite"),
                     environ={"SQLALCHEMY_URL": ENV_URL})
    assert loaded["sqlalchemy.url"] == "sqlite:///ini.sqlite"


def test_empty_environment_variable_fills_nothing():
    loaded, _ = load(dict(MINIMAL), environ={"SQLALCHEMY_URL": ""})
    assert "sqlalchemy.url" not in loaded
    with pytest.raises(ConfigurationError, match=r"^session_expiry\.secret"):
        load(settings(session_expiry__secret=None), environ={"SESSION_EXPIRY_SECRET": ""})


def test_load_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("SESSION_EXPIRY_SECRET", ENV_SECRET)
    _, policy = load(settings(session_expiry__secret=None))
    assert policy.secret == ENV_SECRET


# -- durations ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("1200", 1200), (1200, 1200), ("90s", 90), ("20m", 1200), ("8h", 28800),
    ("1h30m", 5400), ("30d", 30 * 86400), ("1d2h3m4s", 93784), (" 20m ", 1200), ("20M", 1200),
    ("0", 0),
], ids=repr)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "   ", "abc", "5x", "-3", "1.5h", "30m1h", "20 m", "h", "1h 30m", "twenty", True,
], ids=repr)
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 seconds"), (1, "1 second"), (90, "1 minute 30 seconds"), (1200, "20 minutes"),
    (3600, "1 hour"), (5400, "1 hour 30 minutes"), (28800, "8 hours"), (86400, "1 day"),
    (90061, "1 day 1 hour 1 minute 1 second"), (30 * 86400, "30 days"),
])
def test_describe_duration(seconds, text):
    assert describe_duration(seconds) == text



# -- who may scrape /metrics -------------------------------------------------------------------

def test_nobody_may_scrape_metrics_by_default():
    _, policy = load(settings(), environ={})
    assert policy.metrics_scrapers == ()
    assert not policy.may_scrape("127.0.0.1")


def test_metrics_scrapers_take_addresses_and_networks_separated_by_spaces_or_commas():
    _, policy = load(settings(session_expiry__metrics_scrapers="127.0.0.1, 10.0.0.0/8 ::1"),
                     environ={})
    assert policy.may_scrape("127.0.0.1") and policy.may_scrape("10.20.30.40")
    assert policy.may_scrape("::1")
    assert not policy.may_scrape("127.0.0.2") and not policy.may_scrape("192.168.0.1")


@pytest.mark.parametrize("address", [None, "", "not-an-address", "10.0.0.1, 10.0.0.2"])
def test_a_client_address_that_is_not_one_address_may_not_scrape(address):
    _, policy = load(settings(session_expiry__metrics_scrapers="0.0.0.0/0"), environ={})
    assert not policy.may_scrape(address)


def test_a_metrics_scraper_that_is_not_an_address_stops_start_up_naming_the_key():
    with pytest.raises(ConfigurationError, match=r"session_expiry\.metrics_scrapers: 'prometheus'"):
        load(settings(session_expiry__metrics_scrapers="prometheus"), environ={})


# -- contradictions that used to start silently ------------------------------------------------

def test_the_memory_store_without_a_sweep_stops_start_up_naming_the_key():
    with pytest.raises(ConfigurationError, match=r"session_expiry\.sweep_interval: is off"):
        load(settings(session_expiry__sweep_interval="off"), environ={})


def test_the_sql_store_may_leave_sweeping_to_session_sweeper():
    _, policy = load(settings(session__type="expiry:sql", sqlalchemy__url="sqlite://",
                              session_expiry__sweep_interval="off"), environ={})
    assert policy.sweep_interval is None


@pytest.mark.parametrize("url", ["redis://sessions.internal:6379/0", "rediss://user:pw@r:6380/1",
                                 "unix:///run/redis/redis.sock"])
def test_the_redis_store_takes_its_server_from_session_url_and_leaves_sweeping_to_the_sweeper(
        url):
    _, policy = load(settings(session__type="expiry:redis", session__url=url,
                              sqlalchemy__url="sqlite://"), environ={})
    assert (policy.store_type, policy.store_url) == ("expiry:redis", url)
    assert policy.sweep_interval is None and policy.shared_store


def test_the_redis_store_takes_session_url_from_the_environment():
    _, policy = load(settings(session__type="expiry:redis"),
                     environ={"SESSION_URL": "redis://127.0.0.1:6379/0"})
    assert policy.store_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(("url", "problem"), [
    (None, "is missing"), ("", "is missing"),
    ("postgresql+psycopg://app@db/app", "is not a Redis URL"),
    ("sqlite:///sessions.sqlite", "is not a Redis URL"),
    ("http://redis:6379", "is not a Redis URL")])
def test_the_redis_store_without_a_redis_url_stops_start_up_naming_session_url(url, problem):
    """Not even the application's sqlalchemy.url, which the SQL store would take."""
    with pytest.raises(ConfigurationError, match=rf"^session\.url: {problem}; the Redis store"):
        load(settings(session__type="expiry:redis", session__url=url,
                      sqlalchemy__url="sqlite://"), environ={})


#: Starts the add-on with ``sys.argv[1]`` blocked from import (as if never installed) and
#: prints the start-up error.
WITHOUT_PACKAGE = """
import sys
sys.modules[sys.argv[1]] = None  # ``import`` of it now fails as of a package not installed
from pyramid.config import Configurator
settings = dict(arg.split("=", 1) for arg in sys.argv[2:])
try:
    Configurator(settings=settings).include("session_expiry")
except Exception as error:
    print(type(error).__name__, error)
"""


@pytest.mark.parametrize(("package", "store", "url", "extra"), [
    ("redis", "expiry:redis", "redis://127.0.0.1:1/0", "redis"),
    ("psycopg", "expiry:sql", "postgresql+psycopg://app@127.0.0.1:1/app", "postgresql")])
def test_a_store_whose_extra_is_not_installed_stops_start_up_naming_the_extra(
        package, store, url, extra):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PACKAGE, package, f"session.type={store}",
         f"session.url={url}", f"session_expiry.secret={SECRET}"],
        capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == (
        f"ConfigurationError session.type = {store}: the package {package!r} is not "
        f"installed; install the add-on with its [{extra}] extra: "
        f"pip install 'session-expiry[{extra}]'")


def test_only_the_memory_store_lives_in_the_process():
    assert not Policy(store_type="expiry:memory").shared_store
    assert Policy(store_type="expiry:sql").shared_store
    assert Policy(store_type="expiry:redis").shared_store


@pytest.mark.parametrize(("key", "secure"), [
    ("auth_tkt", "false"), ("csrf_token", "false"),
    ("__Host-auth_tkt", "true"), ("__Secure-csrf_token", "true")])
def test_a_session_cookie_named_like_the_ticket_or_csrf_cookie_stops_start_up(key, secure):
    with pytest.raises(ConfigurationError, match=r"session\.key: .* is the name of the auth"):
        load(settings(session__key=key, session__secure=secure), environ={})


def test_the_ticket_and_csrf_cookies_take_the_session_cookies_host_prefix():
    _, policy = load(settings(session__key="__Host-session", session__secure="true"),
                     environ={})
    assert (policy.session_cookie, policy.ticket_cookie, policy.csrf_cookie) == (
        "__Host-session", "__Host-auth_tkt", "__Host-csrf_token")


def test_without_a_prefix_the_cookies_keep_their_plain_names():
    _, policy = load(settings(session__key="session"), environ={})
    assert (policy.ticket_cookie, policy.csrf_cookie) == ("auth_tkt", "csrf_token")


def test_a_host_prefixed_session_cookie_without_secure_stops_start_up():
    with pytest.raises(ConfigurationError, match=r"session\.secure: browsers refuse"):
        load(settings(session__key="__Host-session"), environ={})


def test_a_session_cookie_scripts_could_read_stops_start_up():
    with pytest.raises(ConfigurationError, match=r"session\.httponly: scripts could read"):
        load(settings(session__httponly="false"), environ={})


@pytest.mark.parametrize(("samesite", "message"), [
    ("None", "browsers refuse SameSite=None without Secure"),
    ("Sometimes", "'Sometimes' is not Lax, Strict or None"),
])
def test_a_samesite_browsers_would_not_honour_stops_start_up(samesite, message):
    with pytest.raises(ConfigurationError, match=rf"session\.samesite: {message}"):
        load(settings(session__samesite=samesite), environ={})


def test_samesite_none_with_secure_starts():
    _, policy = load(settings(session__samesite="none", session__secure="true"), environ={})
    assert policy.cookie_samesite == "None"


@pytest.mark.parametrize("scope", [{"session__cookie_domain": "example.org"},
                                   {"session__cookie_path": "/app"}])
def test_a_host_prefixed_session_cookie_with_a_domain_or_path_stops_start_up(scope):
    with pytest.raises(ConfigurationError, match=r"session\.key: browsers refuse"):
        load(settings(session__key="__Host-session", session__secure="true", **scope),
             environ={})


def test_the_ticket_and_csrf_cookies_follow_the_session_cookies_domain_and_path():
    _, policy = load(settings(session__cookie_domain="example.org", session__cookie_path="/app"),
                     environ={})
    assert (policy.cookie_domain, policy.cookie_path) == ("example.org", "/app")


@pytest.mark.parametrize("name", ["login_url", "expired_url"])
@pytest.mark.parametrize("path", ["/session/status", "/session/extend", "/logout", "/metrics",
                                  "/admin/sessions", "/account/sessions",
                                  "/session-expiry-static/x", "/admin/sessions/revoke"])
def test_a_page_colliding_with_the_add_ons_own_routes_stops_start_up(name, path):
    with pytest.raises(ConfigurationError, match=rf"session_expiry\.{name}: {path} is a page"):
        load(settings(**{f"session_expiry__{name}": path}), environ={})


@pytest.mark.parametrize(("text", "size"), [("65536", 65536), ("64KiB", 65536),
                                            ("1MiB", 1048576), ("2048 b", 2048)])
def test_max_session_size_reads_bytes_kib_and_mib(text, size):
    _, policy = load(settings(session_expiry__max_session_size=text), environ={})
    assert policy.max_session_size == size


def test_max_session_size_defaults_to_64_kib():
    _, policy = load(settings(), environ={})
    assert policy.max_session_size == 64 * 1024


@pytest.mark.parametrize("text", ["lots", "64KB", "-1", "100"])
def test_a_max_session_size_that_is_not_a_usable_size_stops_start_up(text):
    with pytest.raises(ConfigurationError, match=r"session_expiry\.max_session_size"):
        load(settings(session_expiry__max_session_size=text), environ={})


# -- every duration, size and count has a range -------------------------------------------

#: Settings beside each one that let the top of its range load (each is checked against
#: the others elsewhere: warn_before < idle_timeout <= absolute_timeout, and so on).
ROOMY = {"session_expiry.idle_timeout": "30d", "session_expiry.absolute_timeout": "400d",
         "session_expiry.touch_interval": "1h", "session_expiry.throttle_forget_after": "30d"}
#: The top of each range as an ini file writes it, and one step past it.
TOPS = {
    "idle_timeout": ("400d", "400d1s"), "absolute_timeout": ("400d", "401d"),
    "warn_before": ("1d", "1d1s"), "touch_interval": ("1d", "86401"),
    "retention": ("3660d", "3661d"), "sweep_interval": ("24h", "25h"),
    "poll_interval": ("1d", "2d"), "max_session_size": ("16MiB", "16385KiB"),
    "max_cookie_header": ("64KiB", "65537"), "throttle_free_tries": ("100", "101"),
    "throttle_max_delay": ("1d", "1d1s"), "throttle_forget_after": ("30d", "31d"),
    "reauth_max_failures": ("100", "101"),
}


def test_every_ranged_setting_has_a_top_under_test():
    assert set(TOPS) == set(RANGES)


@pytest.mark.parametrize("name", sorted(TOPS))
def test_the_top_of_every_range_loads(name):
    top, _ = TOPS[name]
    _, policy = load({**MINIMAL, **ROOMY, PREFIX + name: top}, environ={})
    assert getattr(policy, name) == RANGES[name][1]


@pytest.mark.parametrize("name", sorted(TOPS))
def test_one_step_past_the_top_of_a_range_stops_start_up_naming_the_setting_and_range(name):
    _, past = TOPS[name]
    low, high = RANGES[name]
    with pytest.raises(ConfigurationError) as raised:
        load({**MINIMAL, **ROOMY, PREFIX + name: past}, environ={})
    message = str(raised.value)
    assert message.startswith(f"session_expiry.{name}: {past} is out of range")
    describe = {"max_session_size": describe_size, "max_cookie_header": describe_size,
                "throttle_free_tries": str, "reauth_max_failures": str}.get(name,
                                                                              describe_duration)
    assert f"write a value from {describe(low)} to {describe(high)}" in message


@pytest.mark.parametrize("name", sorted(TOPS))
def test_below_the_bottom_of_a_range_stops_start_up(name):
    low, _ = RANGES[name]
    below = f"{low - 1}" if name not in ("max_session_size", "max_cookie_header") \
        else f"{low - 1}b"
    with pytest.raises(ConfigurationError, match=rf"^session_expiry\.{name}: .*out of range"):
        load({**MINIMAL, **ROOMY, PREFIX + name: below}, environ={})


def test_an_absolute_timeout_of_three_million_days_stops_start_up():
    """The finding: it started, then every sign-in on the SQL store raised 'year out of
    range'."""
    with pytest.raises(ConfigurationError,
                       match=r"^session_expiry\.absolute_timeout: 3000000d is out of range; "
                             r"write a value from 1 second to 400 days"):
        load(settings(session_expiry__absolute_timeout="3000000d"), environ={})


@pytest.mark.parametrize("name", ["idle_timeout", "max_session_size", "reauth_max_failures"])
def test_a_value_written_in_thousands_of_digits_is_refused_before_it_is_parsed(name):
    with pytest.raises(ConfigurationError, match=rf"^session_expiry\.{name}: .*too long"):
        load(settings(**{f"session_expiry__{name}": "9" * 5000}), environ={})


@pytest.mark.parametrize(("size", "words"), [(1024, "1 KiB"), (16 * 1024 * 1024, "16 MiB"),
                                             (1000, "1000 bytes"), (1536, "1536 bytes")])
def test_describe_size_names_whole_units(size, words):
    assert describe_size(size) == words
