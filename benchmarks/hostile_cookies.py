"""What one hostile Cookie header costs the server, beside a normal one, in each setup.

    .venv/bin/python -m benchmarks.hostile_cookies [--smoke]

Each app of ``benchmarks.http_apps`` is called in process (no HTTP: the cost of the
header's bytes on the wire is the same for every setup) with an anonymous ``GET /page``
carrying a browser's usual cookies, then the same carrying a hostile header: letters
without an ``=`` (WebOb's regular expression is quadratic in them), a quoted value full of
backslashes (``http.cookies`` before Python 3.11.10 is quadratic in them), each as long as
``max_cookie_header`` allows, and one as long as waitress lets in (read as none: a 400).
The figure is the median time of one request, and the ratio to the normal one.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import time

from benchmarks.figures import Figure, table

SECTION = "Hostile cookies"
#: session-expiry's default ``max_cookie_header``; waitress's default header limit.
BOUND, WAITRESS_LIMIT = 16 * 1024, 250_000
#: The most one hostile request may cost, in normal requests.
TARGET = 3.0
NORMAL = ("csrf_token=0123456789abcdef0123456789abcdef01234567; "
          "_ga=GA1.1.123456789.1700000000; lang=en")


def hostile_headers(size: int) -> dict[str, str]:
    return {"letters": "a" * size, "backslashes": 'a="' + "\\" * (size - 4) + '"'}


def request_time(app, cookie: str, rounds: int) -> float:
    """The median seconds of one anonymous ``GET /page`` with this Cookie header."""
    times = []
    for _ in range(rounds):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/page", "SERVER_NAME": "localhost",
                   "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
                   "HTTP_COOKIE": cookie, "HTTP_ACCEPT": "application/json",
                   "REMOTE_ADDR": "127.0.0.1"}
        started = time.perf_counter()
        for _chunk in app(environ, lambda status, headers, exc_info=None: None):
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(smoke: bool = False) -> list[Figure]:
    os.environ.setdefault("BENCH_SECRET", "bench-secret-" + "0" * 40)
    from benchmarks.http_apps import classic_memory, expiry_memory

    logging.getLogger("session_expiry").setLevel(logging.ERROR)  # a refusal logs a line each
    size = 2048 if smoke else BOUND
    rounds = 3 if smoke else 7
    figures = []
    for label, factory, sizes in (
            ("session-expiry, memory store", expiry_memory, (size, WAITRESS_LIMIT)),
            # The classic setup reads the whole header with both parsers; at the bound it
            # takes seconds a request, so it is shown at a quarter of it.
            ("classic pyramid_beaker + AuthTktCookieHelper", classic_memory, (size // 4,))):
        app = factory()
        normal = request_time(app, NORMAL, rounds * 20)
        figures.append(Figure(SECTION, f"{label}: normal header", normal * 1e6, "µs"))
        for length in sizes:
            for name, header in hostile_headers(length).items():
                cost = request_time(app, header, rounds)
                ratio = cost / normal
                ours = factory is expiry_memory
                figures.append(Figure(
                    SECTION, f"{label}: {name}, {length // 1024} KiB", cost * 1e6, "µs",
                    f"{ratio:.1f}x a normal request"
                    + (f" (target <= {TARGET:.0f}x)" if ours and not smoke else ""),
                    met=(ratio <= TARGET) if ours and not smoke else None))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    print(table(measure(smoke=parser.parse_args().smoke)))
