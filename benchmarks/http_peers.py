"""Requests per second of one signed-in browser's page, session-expiry beside its peers.

    .venv/bin/python -m benchmarks.http_peers [--seconds 10 --rounds 5]
    .venv/bin/python -m benchmarks.http_peers --smoke

Each variant of ``benchmarks.http_apps`` runs in its own waitress process (4
threads) on loopback; its PostgreSQL is our own (``tests.postgres``), fsync off
as in the tests. On a machine of two or more cores the app server runs on one
core and ``wrk`` on another, as a server and its clients do on separate
machines (:data:`PLACEMENT`); the memory variants also run once more with
their threads free on every core, the placement of this benchmark until
2026-11-23, for comparison. One browser signs in to each and its cookies are
reused by ``wrk`` (Debian's, 1 thread, 8 connections) on ``GET /page``, the trivial
authenticated page that reads one session value. The variants take turns
(round 1 of each, then round 2 of each in reverse order, ...) so that noise on a
shared machine hits all of them alike. The table gives each variant's median
and each ratio the performance issue targets, as the median of the rounds'
ratios: the two variants of a pair are timed in the same round, so a spell of
load elsewhere on the machine hits both (the medians of the two may come from
different spells). Before timing, every variant must answer the
signed-in page 200 and an anonymous request otherwise, and no timed request
may fail: a broken variant is never a fast one.

Store writes are counted on PostgreSQL by a trigger, in one more wrk run after
the timed rounds: session-expiry writes a read-only session at most once per
``touch_interval``; Beaker's ``ext:database`` writes on every request.

``--smoke`` runs every variant for one second, once: the harness works, nothing
about speed is claimed (``make test`` runs it).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import sqlalchemy as sa
from tests.conftest import migrate
from tests.postgres import PostgresServer, free_port

from benchmarks.figures import Figure, median, paired_ratio, ratio_note, table
from session_expiry.stores import session_key

#: The variants in the order they run each round and appear in the table.
ORDER = ("bare", "bare_select", "classic_memory", "expiry_memory", "classic_database",
         "expiry_postgresql", "expiry_sqlite")
LABELS = {
    "bare": "bare Pyramid, no session, no auth (ceiling)",
    "bare_select": "bare Pyramid + one pooled psycopg SELECT (ceiling with one read)",
    "classic_memory": "classic: AuthTktCookieHelper + pyramid_beaker memory",
    "expiry_memory": "session-expiry, memory store",
    "classic_database": "classic: pyramid_beaker ext:database, PostgreSQL",
    "expiry_postgresql": "session-expiry, SQL store on PostgreSQL",
    "expiry_sqlite": "session-expiry, SQL store on SQLite",
}


def short_label(variant: str) -> str:
    """The variant's label without its role in parentheses: "bare Pyramid, no session, no auth"."""
    return LABELS[variant].split(" (")[0]


#: (variant, compared with, target ratio or None)
RATIOS = (
    ("bare_select", "bare", None),
    ("classic_memory", "bare", None),
    ("expiry_memory", "classic_memory", 1.5),
    ("expiry_memory", "bare", None),
    ("expiry_postgresql", "classic_database", 2.5),
    ("expiry_postgresql", "bare_select", 0.6),
    ("expiry_sqlite", "classic_memory", None),
)
#: The ceilings: no session, nobody signs in.
CEILINGS = ("bare", "bare_select")
SECRET = "benchmark-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
WRK_THREADS, WRK_CONNECTIONS = 1, 8
#: Interleaved rounds: each ratio is the median of its rounds' ratios.
ROUNDS = 5


def placement() -> tuple[set[int], set[int]] | None:
    """(the app server's core, wrk's core), or None on a machine of one core.

    On two cores, free threads compete with wrk for both and hand the GIL to
    each other across cores: a bare page then costs the server twice the time it
    costs on one core of its own, a fixed cost that hides what the variants differ in.
    """
    cores = sorted(os.sched_getaffinity(0))
    return ({cores[0]}, {cores[1]}) if len(cores) >= 2 else None


PLACEMENT = placement()
#: The variants also timed with their threads free (the placement before PLACEMENT).
FREE = ("bare", "classic_memory", "expiry_memory")


@dataclass
class Variant:
    name: str
    port: int
    process: subprocess.Popen
    cores: set[int] | None  # wrk's; None: free
    cookie: str = ""
    rates: list[float] = field(default_factory=list)
    requests: int = 0


def on(cores: set[int] | None, command: list[str]) -> list[str]:
    """``command``, kept with every thread it starts on ``cores`` (util-linux's taskset)."""
    if cores is None:
        return command
    return ["taskset", "--cpu-list", ",".join(map(str, sorted(cores))), *command]


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: `make bench` installs Debian's wrk")
    return found


def start(name: str, env: dict, pinned: bool = True) -> Variant:
    server_cores, wrk_cores = PLACEMENT if PLACEMENT and pinned else (None, None)
    port = free_port()
    # Its log goes to a file (the child keeps it open): a pipe nobody reads fills up under
    # load (waitress warns of its queue depth) and the server stops, blocked on a write.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            on(server_cores, [sys.executable, "-m", "benchmarks.http_apps", name, str(port)]),
            env=env, stdout=subprocess.DEVNULL, stderr=log)
        variant = Variant(name, port, process, wrk_cores)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/page", timeout=2)
            except urllib.error.HTTPError:
                return variant  # it answers (an anonymous request: refused)
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"{name} did not start: "
                                     f"{log.read().decode()[-2000:]}") from None
                time.sleep(0.1)
            else:
                return variant


def get(variant: Variant, path: str, cookie: str = "") -> tuple[int, list[str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{variant.port}{path}",
                                     headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_all("Set-Cookie") or []


def sign_in(variant: Variant) -> None:
    """Sign one browser in; check the page serves it and refuses an anonymous request."""
    if variant.name in CEILINGS:
        if get(variant, "/page")[0] != 200:
            raise SystemExit(f"{variant.name}: the page does not answer 200")
        return
    status, set_cookies = get(variant, "/login?user=bench")
    if status != 200:
        raise SystemExit(f"{variant.name}: sign-in answered {status}")
    jar = SimpleCookie()
    for header in set_cookies:
        jar.load(header)
    variant.cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())
    page, _ = get(variant, "/page", variant.cookie)
    anonymous, _ = get(variant, "/page")
    if page != 200 or anonymous == 200:
        raise SystemExit(f"{variant.name}: signed in {page}, anonymous {anonymous}")


def run_wrk(variant: Variant, seconds: int) -> float:
    command = [wrk_binary(), f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s",
               f"http://127.0.0.1:{variant.port}/page"]
    if variant.cookie:
        command[1:1] = ["-H", f"Cookie: {variant.cookie}"]
    out = subprocess.run(on(variant.cores, command), capture_output=True, text=True,
                         check=True, timeout=seconds + 30).stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if failed or errors:
        raise SystemExit(f"{variant.name}: requests failed under load:\n{out}")
    served = int(re.search(r"(\d+) requests in", out).group(1))
    if not served:
        raise SystemExit(f"{variant.name}: served no request in {seconds} s:\n{out}")
    variant.requests += served
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


COUNT_WRITES = """
CREATE TABLE bench_writes (n bigint NOT NULL);
INSERT INTO bench_writes VALUES (0);
CREATE FUNCTION bench_count_write() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN UPDATE bench_writes SET n = n + 1; RETURN NULL; END $$;
CREATE TRIGGER bench_count_write AFTER INSERT OR UPDATE ON {table}
  FOR EACH ROW EXECUTE FUNCTION bench_count_write();
"""
STOP_COUNTING = """
DROP TRIGGER bench_count_write ON {table};
DROP FUNCTION bench_count_write();
DROP TABLE bench_writes;
"""


def count_writes(variant: Variant, url: str, table: str, seconds: int) -> int:
    """Rows written to the session table during a wrk run of ``seconds``, counted exactly
    by a trigger (outside the timed rounds: the counter would slow the writes down)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(COUNT_WRITES.format(table=table))
        run_wrk(variant, seconds)
        with engine.begin() as conn:
            written = conn.exec_driver_sql("SELECT n FROM bench_writes").scalar_one()
            conn.exec_driver_sql(STOP_COUNTING.format(table=table))
        return int(written)
    finally:
        engine.dispose()


def measure(smoke: bool = False, seconds: int = 10, rounds: int = ROUNDS) -> list[Figure]:
    if smoke:
        seconds, rounds = 1, 1
    wrk_binary()
    server = PostgresServer().start()
    scratch = Path(tempfile.mkdtemp(prefix="session-expiry-bench-"))
    variants: dict[str, Variant] = {}
    free: dict[str, Variant] = {}  # the same apps, their threads free on every core
    try:
        urls = {name: server.create_database(name)
                for name in ("expiry", "classic", "ceiling")}
        sqlite_url = f"sqlite:///{scratch / 'sessions.sqlite'}"
        for url in (urls["expiry"], urls["ceiling"], sqlite_url):
            migrate(url)
        env = {**os.environ, "BENCH_SECRET": SECRET, "BENCH_SQLITE_URL": sqlite_url,
               "BENCH_SESSION_KEY": session_key("0" * 64)}
        ceiling_key = env["BENCH_SESSION_KEY"]
        engine = sa.create_engine(urls["ceiling"])
        with engine.begin() as conn:  # the row the ceiling reads: a session like ours
            conn.execute(sa.text(
                "INSERT INTO sessions (key, user_id, data, version, created, last_seen, "
                "idle_deadline, absolute_deadline, sweep_at) VALUES (:key, '1', "
                "'{\"greeting\": \"hello\"}', 1, now(), now(), now() + interval '1 hour', "
                "now() + interval '8 hours', now() + interval '1 hour')"), {"key": ceiling_key})
        engine.dispose()
        database_of = {"bare_select": urls["ceiling"], "classic_database": urls["classic"],
                       "expiry_postgresql": urls["expiry"]}
        for name in ORDER:
            variant_env = {**env, "BENCH_DATABASE_URL": database_of.get(name, urls["expiry"])}
            variants[name] = start(name, variant_env)
            sign_in(variants[name])
        for name in FREE if PLACEMENT else ():
            free[name] = start(name, {**env, "BENCH_DATABASE_URL": urls["expiry"]}, pinned=False)
            sign_in(free[name])
        turn = [*variants.values(), *free.values()]
        for _ in range(rounds):
            for variant in turn:
                variant.rates.append(run_wrk(variant, seconds))
            turn.reverse()  # ABBA: a drift across a round favours no side of a pair
        writes = {}
        for name, table_name in (("classic_database", "beaker_cache"),
                                 ("expiry_postgresql", "sessions")):
            before = variants[name].requests
            written = count_writes(variants[name], database_of[name], table_name, seconds)
            writes[name] = (written, variants[name].requests - before)
    finally:
        for variant in (*variants.values(), *free.values()):
            variant.process.terminate()
            variant.process.wait(timeout=10)
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    rate = {name: median(variant.rates) for name, variant in variants.items()}
    figures = [Figure("HTTP", LABELS[name], rate[name], "req/s",
                      f"median of {rounds} x {seconds} s") for name in ORDER]
    for name, base, target in RATIOS:
        ratio = paired_ratio(variants[name].rates, variants[base].rates)
        note, met = ratio_note(ratio, short_label(base), target)
        figures.append(Figure("HTTP ratio", LABELS[name], ratio, "x",
                              f"{note}; median of the {rounds} rounds' ratios",
                              None if smoke else met))
    figures += free_figures({name: variant.rates for name, variant in free.items()},
                            rounds, seconds)
    for name, (written, requests) in writes.items():
        figures.append(Figure("Store writes", LABELS[name], written, "rows written",
                              f"in {requests:,} read-only requests of one session"))
    return figures


def free_figures(rates: dict[str, list[float]], rounds: int, seconds: int) -> list[Figure]:
    """The memory variants with their threads free on every core, for comparison: no
    target is judged on them (see :func:`placement`)."""
    if not rates:
        return []
    section = "HTTP, threads free"
    figures = [Figure(section, LABELS[name], median(rates[name]), "req/s",
                      f"median of {rounds} x {seconds} s") for name in FREE]
    for name, base in (("classic_memory", "bare"), ("expiry_memory", "classic_memory")):
        ratio = paired_ratio(rates[name], rates[base])
        note, _ = ratio_note(ratio, short_label(base))
        figures.append(Figure(section, LABELS[name], ratio, "x", note))
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"interleaved rounds (default {ROUNDS})")
    parser.add_argument("--smoke", action="store_true", help="one 1-second round, no targets")
    args = parser.parse_args(argv)
    print(table(measure(args.smoke, args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
