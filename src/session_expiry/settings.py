"""The one settings loader: fill from the environment, parse, validate.

``pserve``, ``alembic`` and every console script read their settings through
:func:`load`, so they all see the same secret and database URLs. Validation
happens once, at start-up; a contradiction stops start-up with a
``ConfigurationError`` that names the key and says what to write.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from pyramid.exceptions import ConfigurationError

from .redirects import safe_path

log = logging.getLogger(__name__)

PREFIX = "session_expiry."

#: Settings an ini file may leave out and take from the environment instead
#: (PasteDeploy cannot interpolate environment variables).
FROM_ENVIRONMENT = {
    "session_expiry.secret": "SESSION_EXPIRY_SECRET",
    "sqlalchemy.url": "SQLALCHEMY_URL",
    "session.url": "SESSION_URL",
}

#: The Beaker backends this package registers, by their ``session.type``, with
#: their default ``sweep_interval``: the memory store must sweep itself (nothing
#: else ends its sessions); a farm's SQL or Redis store is swept by ``session-sweeper``.
STORE_TYPES = {"expiry:memory": 1, "expiry:sql": None, "expiry:redis": None}
#: What ``session.url`` of the Redis store may begin with.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

#: Beaker options we set ourselves when the ini leaves them out; any other
#: value contradicts the one clock and stops start-up.
BEAKER_REQUIRED = {
    "save_accessed_time": ("false", "it rewrites the session on every request (lost updates); "
                           "the session record keeps last-seen time itself"),
    "auto": ("false", "it saves the session on every request; the session record is touched "
             "at most once per touch_interval"),
    "data_serializer": ("json", "session data is kept as readable JSON, never pickle"),
}

#: Every ``session_expiry.*`` key; anything else is a typo and stops start-up.
KNOWN = frozenset({
    "idle_timeout", "absolute_timeout", "warn_before", "touch_interval", "retention",
    "sweep_interval", "poll_interval", "activity_extends", "secret", "login_url",
    "expired_url", "clock", "metrics_scrapers", "max_session_size", "max_cookie_header",
    "throttle_free_tries", "throttle_max_delay", "throttle_forget_after", "reauth_max_failures",
})

#: Paths the add-on serves itself: ``login_url`` and ``expired_url`` must not be one.
ADDON_PATHS = ("/session/status", "/session/extend", "/logout", "/metrics", "/admin/sessions",
               "/account/sessions")
ADDON_PREFIXES = ("/session-expiry-static/", "/admin/sessions/", "/account/sessions/")
#: Cookie name prefixes browsers enforce (RFC 6265bis): what each requires.
HOST_PREFIX, SECURE_PREFIX = "__Host-", "__Secure-"

#: Beaker options that contradict the design: (name, problem, what to write).
FORBIDDEN = (
    ("timeout", "Beaker's own timeout would be a second clock",
     "remove it; session_expiry.idle_timeout drives the session and the auth ticket"),
    ("encrypt_key", "session data is stored as readable JSON in our store, not as an "
     "encrypted blob", "remove it"),
    ("secret", "a second secret for the session cookie",
     "remove it; session_expiry.secret signs the session cookie and the auth ticket"),
)

TRUE = frozenset({"true", "yes", "on", "1"})
FALSE = frozenset({"false", "no", "off", "0"})
SAMESITE = ("Lax", "Strict", "None")

MIN_SECRET_LENGTH = 32
WCAG_MIN_WARNING = 20

DAY = 86400
KIB = 1024
#: The range of every duration (seconds), size (bytes) and count in the settings: what a
#: deployment could mean, and what every store holds (a deadline must stay a date).
RANGES = {
    "idle_timeout": (1, 400 * DAY),  # browsers keep a cookie at most 400 days
    "absolute_timeout": (1, 400 * DAY),
    "warn_before": (1, DAY),
    "touch_interval": (1, DAY),
    "retention": (1, 10 * 366 * DAY),
    "sweep_interval": (1, DAY),
    "poll_interval": (1, DAY),
    "max_session_size": (KIB, 16 * KIB * KIB),
    "max_cookie_header": (4 * KIB, 64 * KIB),  # a browser sends up to ~4 KiB a cookie
    "throttle_free_tries": (1, 100),
    "throttle_max_delay": (1, DAY),
    "throttle_forget_after": (60, 30 * DAY),
    "reauth_max_failures": (1, 100),
}
#: The longest text a duration, size or count may be written in.
MAX_NUMBER_TEXT = 24

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (86400, 3600, 60, 1)


def parse_duration(text: str | int) -> int:
    """Whole seconds from ``1200``, ``90s``, ``20m``, ``8h``, ``1h30m`` or ``30d``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value.isdigit():
        return int(value)
    match = _DURATION.fullmatch(value)
    if not value or match is None:
        raise ValueError(f"{text!r} is not a duration (write e.g. 1200, 90s, 20m, 8h, 1h30m, 30d)")
    return sum(int(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part)


def describe_duration(seconds: int) -> str:
    """``1200`` -> ``20 minutes``; ``5400`` -> ``1 hour 30 minutes``."""
    parts = []
    for unit, name in zip(_UNITS, ("day", "hour", "minute", "second"), strict=True):
        count, seconds = divmod(seconds, unit)
        if count:
            parts.append(f"{count} {name}" + ("s" if count != 1 else ""))
    return " ".join(parts) or "0 seconds"


@dataclass(frozen=True)
class Policy:
    """The parsed settings the add-on runs on; durations in whole seconds.

    The field defaults are the documented defaults; ``touch_interval`` left
    out is ``idle_timeout // 10``.
    """

    idle_timeout: int = 20 * 60
    absolute_timeout: int = 8 * 3600
    warn_before: int = 2 * 60
    touch_interval: int = 2 * 60
    retention: int = 30 * 86400
    secret: str = ""
    login_url: str = "/login"
    expired_url: str = "/session-expired"
    store_type: str = "expiry:memory"
    #: Seconds between in-process sweeps; None: no sweep thread.
    sweep_interval: int | None = 1
    #: Where the store keeps its sessions: the SQL store's database (``session.url``, else
    #: ``sqlalchemy.url``), the Redis store's server (``session.url``).
    store_url: str | None = None
    cookie_secure: bool = False
    cookie_samesite: str = "Lax"
    #: How often one tab per browser asks /session/status.
    poll_interval: int = 60
    #: Typing, clicking and scrolling in a page extend the session.
    activity_extends: bool = True
    #: Networks whose clients may read /metrics without signing in (Prometheus).
    metrics_scrapers: tuple[IPv4Network | IPv6Network, ...] = ()
    #: The cookies: the session cookie is ``session.key``; the auth ticket and the CSRF
    #: cookie take its ``__Host-``/``__Secure-`` prefix, its domain and its path.
    session_cookie: str = "beaker.session.id"
    ticket_cookie: str = "auth_tkt"
    csrf_cookie: str = "csrf_token"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    #: The most a session's data may hold, serialized (bytes); a write past it gets 413.
    max_session_size: int = 64 * 1024
    #: The longest Cookie header read (bytes); a longer one is answered with a 400.
    max_cookie_header: int = 16 * 1024
    #: Password checks: failures in a row an account may make before it must wait (a
    #: client's address: ten times as many); the longest wait; when failures are forgotten.
    throttle_free_tries: int = 3
    throttle_max_delay: int = 5 * 60
    throttle_forget_after: int = 3600
    #: Wrong passwords in a row that end the session they were entered in.
    reauth_max_failures: int = 5

    @property
    def shared_store(self) -> bool:
        """True when the sessions live outside the server process (SQL, Redis): scripts and
        other app servers reach them, and ``session-sweeper`` ends them."""
        return self.store_type != "expiry:memory"

    def may_scrape(self, address: str | None) -> bool:
        """True when ``address`` (the client's, as the WSGI server gives it) may read /metrics."""
        try:
            client = ip_address(address or "")
        except ValueError:
            return False
        return any(client in network for network in self.metrics_scrapers)


_DEFAULT = Policy()


def fill_from_environment(settings: dict, environ=os.environ) -> dict:
    """Return ``settings`` with secrets and URLs the ini left out taken from the environment."""
    filled = dict(settings)
    for key, variable in FROM_ENVIRONMENT.items():
        if not str(filled.get(key) or "").strip() and environ.get(variable):
            filled[key] = environ[variable]
    return filled


def beaker_options(settings: dict) -> dict:
    """The ``session.*`` settings without their prefix: Beaker's options."""
    return {k[len("session."):]: v for k, v in settings.items() if k.startswith("session.")}


def _fail(key: str, problem: str, advice: str) -> ConfigurationError:
    return ConfigurationError(f"{key}: {problem}; {advice}")


def _given(value) -> bool:
    return value is not None and str(value).strip() != ""


def _duration(settings: dict, name: str, default: int | None) -> int | None:
    return _ranged(settings, name, parse_duration, default)


def _boolean(beaker: dict, name: str, default: bool) -> bool:
    return _truth(beaker.get(name), f"session.{name}", default)


def _flag(settings: dict, name: str, default: bool) -> bool:
    return _truth(settings.get(PREFIX + name), PREFIX + name, default)


def _truth(value, key: str, default: bool) -> bool:
    if not _given(value):
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in TRUE | FALSE:
        raise _fail(key, f"{value!r} is not true or false", f"write {key} = true or false")
    return text in TRUE


def _check_beaker(beaker: dict) -> dict:
    """Validate Beaker's options and return them with ours filled in."""
    store_type = str(beaker.get("type") or "").strip()
    if store_type not in STORE_TYPES:
        raise _fail("session.type", f"{store_type or 'nothing'!r} is not a session-expiry store",
                    "write session.type = " + " or ".join(STORE_TYPES))
    for name, problem, advice in FORBIDDEN:
        if _given(beaker.get(name)):
            raise _fail(f"session.{name}", problem, advice)
    for name, (required, why) in BEAKER_REQUIRED.items():
        value = beaker.get(name)
        if not _given(value):
            beaker[name] = required
            continue
        normal = str(value).strip().lower()
        if name != "data_serializer":
            normal = "true" if _boolean(beaker, name, False) else "false"
        if normal != required:
            raise _fail(f"session.{name}", f"is {value!r}, but {why}",
                        f"write session.{name} = {required} (or leave it out)")
    if _given(beaker.get("cookie_expires")) and not _boolean(beaker, "cookie_expires", True):
        raise _fail("session.cookie_expires", "a cookie lifetime would be a second clock",
                    "remove it: the cookie lasts as long as the browser, the session as long "
                    "as session_expiry.idle_timeout and absolute_timeout allow")
    if not _boolean(beaker, "httponly", True):
        raise _fail("session.httponly", "scripts could read the session cookie",
                    "write session.httponly = true (or leave it out)")
    beaker["httponly"] = True
    beaker["secure"] = _boolean(beaker, "secure", False)
    samesite = str(beaker.get("samesite") or "Lax").strip().capitalize()
    if samesite not in SAMESITE:
        raise _fail("session.samesite", f"{beaker['samesite']!r} is not Lax, Strict or None",
                    "write session.samesite = Lax")
    if samesite == "None" and not beaker["secure"]:
        raise _fail("session.samesite", "browsers refuse SameSite=None without Secure",
                    "write session.secure = true, or session.samesite = Lax")
    beaker["samesite"] = samesite
    _check_cookie_prefix(beaker)
    return beaker


def _check_cookie_prefix(beaker: dict) -> None:
    """A ``__Host-`` or ``__Secure-`` cookie name that the browser would refuse stops start-up."""
    key = str(beaker.get("key") or "")
    if key.startswith((HOST_PREFIX, SECURE_PREFIX)) and not beaker["secure"]:
        raise _fail("session.secure", f"browsers refuse a {key!r} cookie without Secure",
                    "write session.secure = true")
    if key.startswith(HOST_PREFIX) and (_given(beaker.get("cookie_domain"))
                                        or str(beaker.get("cookie_path") or "/") != "/"):
        raise _fail("session.key", f"browsers refuse a {key!r} cookie with a domain or a path "
                    "other than /", "remove session.cookie_domain and session.cookie_path, or "
                    "drop the __Host- prefix")


def load(settings: dict, environ=os.environ) -> tuple[dict, Policy]:
    """Fill, parse and validate ``settings``; return them with the ``Policy``.

    Raises ``ConfigurationError`` naming the key and what to write.
    """
    settings = fill_from_environment(settings, environ)
    for key in settings:
        if key.startswith(PREFIX) and key[len(PREFIX):] not in KNOWN:
            raise _fail(key, "is not a session-expiry setting",
                        "check the spelling; docs/settings.md lists every setting")
    beaker = _check_beaker(beaker_options(settings))

    idle = _duration(settings, "idle_timeout", _DEFAULT.idle_timeout)
    absolute = _duration(settings, "absolute_timeout", _DEFAULT.absolute_timeout)
    warn = _duration(settings, "warn_before", _DEFAULT.warn_before)
    touch = _duration(settings, "touch_interval", max(1, idle // 10))
    retention = _duration(settings, "retention", _DEFAULT.retention)
    poll = _duration(settings, "poll_interval", _DEFAULT.poll_interval)
    activity_extends = _flag(settings, "activity_extends", _DEFAULT.activity_extends)

    if warn >= idle:
        raise _fail(PREFIX + "warn_before", f"{warn}s is not shorter than idle_timeout ({idle}s)",
                    "write a warn_before shorter than idle_timeout, e.g. idle_timeout / 10")
    if touch > idle - warn:
        raise _fail(
            PREFIX + "touch_interval",
            f"{touch}s is longer than idle_timeout - warn_before ({idle - warn}s), "
            "so an active user could see the warning",
            f"write session_expiry.touch_interval = {max(1, (idle - warn) // 2)}s or less",
        )
    if absolute < idle:
        raise _fail(PREFIX + "absolute_timeout",
                    f"{absolute}s is shorter than idle_timeout ({idle}s)",
                    "write an absolute_timeout at least as long as idle_timeout")
    if warn < WCAG_MIN_WARNING:
        log.warning("session_expiry.warn_before is %ss; WCAG 2.2.1 wants at least %ss "
                    "for a person to respond", warn, WCAG_MIN_WARNING)

    secret = str(settings.get(PREFIX + "secret") or "").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        problem = "is missing" if not secret else f"is {len(secret)} characters long"
        raise _fail(
            PREFIX + "secret", problem,
            f"write {MIN_SECRET_LENGTH} or more random characters there or in the "
            f"{FROM_ENVIRONMENT[PREFIX + 'secret']} environment variable "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))')",
        )

    store_type = str(beaker["type"]).strip()
    store_url = _store_url(settings, beaker, store_type)

    login_url, expired_url = _pages(settings)

    sweep_interval = _sweep_interval(settings, store_type)
    if store_type == "expiry:memory" and sweep_interval is None:
        raise _fail(PREFIX + "sweep_interval", "is off, but nothing else ends the memory "
                    "store's sessions or fires their end events",
                    f"write {PREFIX}sweep_interval = 1s (or leave it out)")

    session_cookie, ticket_cookie, csrf_cookie = _cookie_names(beaker)

    policy = Policy(
        idle_timeout=idle, absolute_timeout=absolute, warn_before=warn, touch_interval=touch,
        retention=retention, secret=secret, login_url=login_url, expired_url=expired_url,
        store_type=store_type, sweep_interval=sweep_interval,
        store_url=store_url, cookie_secure=beaker["secure"], cookie_samesite=beaker["samesite"],
        poll_interval=poll, activity_extends=activity_extends,
        metrics_scrapers=_networks(settings, "metrics_scrapers"),
        session_cookie=session_cookie, ticket_cookie=ticket_cookie, csrf_cookie=csrf_cookie,
        cookie_domain=str(beaker.get("cookie_domain") or "").strip() or None,
        cookie_path=str(beaker.get("cookie_path") or "/").strip(),
        max_session_size=_size(settings, "max_session_size", _DEFAULT.max_session_size),
        max_cookie_header=_size(settings, "max_cookie_header", _DEFAULT.max_cookie_header),
        **_throttle(settings),
    )
    settings.update({"session." + k: v for k, v in beaker.items()})
    return settings, policy


def _store_url(settings: dict, beaker: dict, store_type: str) -> str | None:
    """Where the store keeps its sessions: the SQL store's database (``session.url``, else
    the application's ``sqlalchemy.url``), the Redis store's server (``session.url``)."""
    session_url = str(beaker.get("url") or "").strip() or None
    if store_type == "expiry:redis":
        if session_url is None or not session_url.startswith(REDIS_SCHEMES):
            found = "is missing" if session_url is None else "is not a Redis URL"
            raise _fail("session.url", f"{found}; the Redis store needs its server",
                        "write session.url = redis://host:6379/0 (or rediss:// for TLS, "
                        "unix:///path/to/redis.sock), or set SESSION_URL")
        return session_url
    store_url = session_url or str(settings.get("sqlalchemy.url") or "").strip() or None
    if store_type == "expiry:sql" and store_url is None:
        raise _fail("session.url", "the SQL store needs a database",
                    "write sqlalchemy.url (the application database) or session.url, or set "
                    "SQLALCHEMY_URL or SESSION_URL")
    return store_url


def _throttle(settings: dict) -> dict:
    """The password throttle's settings (``session_expiry.throttle``)."""
    throttle = {
        "throttle_free_tries": _ranged(settings, "throttle_free_tries", _count,
                                       _DEFAULT.throttle_free_tries),
        "throttle_max_delay": _duration(settings, "throttle_max_delay",
                                        _DEFAULT.throttle_max_delay),
        "throttle_forget_after": _duration(settings, "throttle_forget_after",
                                           _DEFAULT.throttle_forget_after),
        "reauth_max_failures": _ranged(settings, "reauth_max_failures", _count,
                                       _DEFAULT.reauth_max_failures),
    }
    if throttle["throttle_forget_after"] < throttle["throttle_max_delay"]:
        raise _fail(PREFIX + "throttle_forget_after",
                    f"{throttle['throttle_forget_after']}s is shorter than throttle_max_delay "
                    f"({throttle['throttle_max_delay']}s), so a guesser's failures would be "
                    "forgotten before the longest wait is over",
                    "write a throttle_forget_after at least as long as throttle_max_delay")
    return throttle


def _pages(settings: dict) -> tuple[str, str]:
    """``login_url`` and ``expired_url``: two plain paths, neither one of the add-on's own."""
    login_url = _local_path(settings, "login_url", _DEFAULT.login_url)
    expired_url = _local_path(settings, "expired_url", _DEFAULT.expired_url)
    if login_url == expired_url:
        raise _fail(PREFIX + "expired_url", "is the same page as login_url",
                    f"write e.g. {PREFIX}expired_url = {_DEFAULT.expired_url}")
    for name, path in (("login_url", login_url), ("expired_url", expired_url)):
        if path in ADDON_PATHS or path.startswith(ADDON_PREFIXES):
            raise _fail(PREFIX + name, f"{path} is a page of the add-on's own",
                        f"write e.g. {PREFIX}{name} = {getattr(_DEFAULT, name)}")
    return login_url, expired_url


def _cookie_names(beaker: dict) -> tuple[str, str, str]:
    """The session cookie's name, and the auth ticket's and the CSRF cookie's, which take
    its ``__Host-``/``__Secure-`` prefix."""
    session_cookie = str(beaker.get("key") or _DEFAULT.session_cookie)
    prefix = next((p for p in (HOST_PREFIX, SECURE_PREFIX) if session_cookie.startswith(p)), "")
    ticket_cookie, csrf_cookie = prefix + _DEFAULT.ticket_cookie, prefix + _DEFAULT.csrf_cookie
    if session_cookie in (ticket_cookie, csrf_cookie):
        raise _fail("session.key", f"{session_cookie!r} is the name of the auth ticket or the "
                    "CSRF cookie", "write e.g. session.key = session")
    return session_cookie, ticket_cookie, csrf_cookie


def _sweep_interval(settings: dict, store_type: str) -> int | None:
    if str(settings.get(PREFIX + "sweep_interval") or "").strip().lower() == "off":
        return None
    return _duration(settings, "sweep_interval", STORE_TYPES[store_type])


_SIZE = re.compile(r"(\d+)\s*(b|kib|mib)?")
_SIZE_UNITS = {None: 1, "b": 1, "kib": 1024, "mib": 1024 * 1024}


def parse_size(text: str | int) -> int:
    """Bytes from ``65536``, ``64KiB`` or ``1MiB``."""
    match = _SIZE.fullmatch(str(text).strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a size (write e.g. 65536, 64KiB, 1MiB)")
    return int(match[1]) * _SIZE_UNITS[match[2]]


def _size(settings: dict, name: str, default: int) -> int:
    return _ranged(settings, name, parse_size, default)


def describe_size(size: int) -> str:
    """``16384`` -> ``16 KiB``; ``1000`` -> ``1000 bytes``."""
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


#: How each kind of ranged setting is read, written in a message, and exemplified.
_KINDS = {parse_duration: (describe_duration, "20m"), parse_size: (describe_size, "64KiB"),
          _count: (str, "5")}


def _ranged(settings: dict, name: str, parse, default):
    """A duration, size or count within ``RANGES[name]``; the text is bounded before it is
    parsed, so a value in the ini can cost no more than its range."""
    key = PREFIX + name
    raw = settings.get(key)
    if not _given(raw):
        return default
    describe, example = _KINDS[parse]
    low, high = RANGES[name]
    text = str(raw).strip()
    advice = f"write a value from {describe(low)} to {describe(high)}, e.g. {key} = {example}"
    try:
        if len(text) > MAX_NUMBER_TEXT:
            raise ValueError(f"{text[:MAX_NUMBER_TEXT]!r}... is too long to be a value")
        value = parse(text)
    except ValueError as error:
        raise _fail(key, str(error), advice) from None
    if not low <= value <= high:
        raise _fail(key, f"{text} is out of range", advice)
    return value


def _networks(settings: dict, name: str) -> tuple:
    """Addresses or networks, separated by spaces or commas: ``127.0.0.1 10.0.0.0/8``."""
    key = PREFIX + name
    networks = []
    for word in str(settings.get(key) or "").replace(",", " ").split():
        try:
            networks.append(ip_network(word, strict=False))
        except ValueError:
            raise _fail(key, f"{word!r} is not an IP address or network",
                        f"write e.g. {key} = 127.0.0.1 10.0.0.0/8") from None
    return tuple(networks)


def _local_path(settings: dict, name: str, default: str) -> str:
    """A route path on this site: no scheme, host, query or fragment."""
    key = PREFIX + name
    value = str(settings.get(key) or default).strip()
    if safe_path(value, fallback="") != value or any(char in value for char in "?#%"):
        raise _fail(key, f"{value!r} is not a plain path on this site",
                    f"write e.g. {key} = {default}")
    return value


def from_ini(path: str, name: str = "main") -> dict:
    """The app's settings from an ini file, filled from the environment (for alembic)."""
    from pyramid.paster import get_appsettings

    return fill_from_environment(dict(get_appsettings(path, name=name)))
