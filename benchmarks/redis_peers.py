"""Requests per second of one signed-in browser's page on Redis: ``expiry:redis`` beside its peers.

    .venv/bin/python -m benchmarks.redis_peers [--seconds 10 --rounds 5]
    .venv/bin/python -m benchmarks.redis_peers --smoke

The method of ``benchmarks.http_peers`` (its servers, sign-in, ``wrk`` and placement):
each variant of ``benchmarks.http_apps`` in its own waitress process (4 threads) on
loopback, the app server on one core and ``wrk`` (1 thread, 8 connections) on the
other, one browser's cookies reused on ``GET /page``, which reads one session value.
Each Redis variant gets a ``redis-server`` of its own (``tests.redis_server``: loopback,
no persistence), so that what one does is never counted against another:

- *bare*: Pyramid with no session and no authentication (the ceiling);
- *bare + one GET*: bare plus one pooled redis-py ``GET`` (hiredis) of a session's text
  by key (the ceiling for a page that reads its session from Redis in one round trip);
- *classic*: pyramid_session_redis as its users write it (``config.include`` and its
  ``redis.sessions.*`` settings, its defaults otherwise) with Pyramid's
  ``AuthTktCookieHelper`` in a security policy;
- ours: session-expiry, ``session.type = expiry:redis``.

Rounds are interleaved (ABBA) and each ratio is the median of the rounds' ratios, as in
``http_peers``. Redis commands are counted by the server itself (``INFO commandstats``,
before and after) in one more wrk run per variant after the timed rounds: every command
the variant sent per request, and the writes (the commands Redis flags ``write``, also
inside scripts), for a browser that signs in again just before the count: its sign-in's
writes are not counted, and a session-expiry session is touched at most once per
``touch_interval`` (2 minutes here, longer than the count), so what is counted is what
reading the page costs.

``--smoke`` runs every variant for one second, once: the harness works, nothing about
speed is claimed (``make test`` runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from tests.redis_server import RedisServer

from benchmarks.figures import Figure, median, paired_ratio, ratio_note, report
from benchmarks.http_peers import (
    PLACEMENT,
    ROUNDS,
    SECRET,
    Variant,
    get,
    run_wrk,
    sign_in,
    start,
    wrk_binary,
)
from session_expiry.stores import session_key

#: The variants in the order they run each round and appear in the table.
ORDER = ("bare", "bare_get", "classic_redis", "expiry_redis")
LABELS = {
    "bare": "bare Pyramid, no session, no auth (ceiling)",
    "bare_get": "bare Pyramid + one pooled Redis GET (ceiling with one read)",
    "classic_redis": "classic: AuthTktCookieHelper + pyramid_session_redis",
    "expiry_redis": "session-expiry, Redis store",
}
#: The ceilings: no session, nobody signs in.
CEILINGS = ("bare", "bare_get")
#: The variants that talk to a Redis of their own.
ON_REDIS = ("bare_get", "classic_redis", "expiry_redis")
#: (variant, compared with, target ratio or None)
RATIOS = (
    ("bare_get", "bare", None),
    ("classic_redis", "bare", None),
    ("expiry_redis", "classic_redis", 1.5),
    ("expiry_redis", "bare_get", 0.85),
    ("expiry_redis", "bare", None),
)
#: What the one-GET ceiling reads: a session's record and data as one text (the size of ours).
CEILING_KEY = "bench:ceiling"
CEILING_VALUE = json.dumps({
    "u": "bench", "c": 1_800_000_000, "l": 1_800_000_000, "i": 1_800_001_200,
    "a": 1_800_028_800, "d": json.dumps({"greeting": "hello"}), "v": 1})


def short_label(variant: str) -> str:
    return LABELS[variant].split(" (")[0]


# -- counting what a request sends to Redis ------------------------------------------------

def command_calls(client) -> dict[str, int]:
    """Calls of each command since the server started (``INFO commandstats``; a command a
    script runs is counted too)."""
    return {name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in client.info("commandstats").items()}


def is_write(client, command: str) -> bool:
    """Whether Redis flags ``command`` (``name`` or ``name|subcommand``) ``write``."""
    name, _, sub = command.partition("|")
    info = client.execute_command("COMMAND", "INFO", name)[name]
    if not sub:
        return "write" in info["flags"]
    return any(entry[0] == command and "write" in entry[2] for entry in info["subcommands"])


#: What the counting itself sends (INFO before and after), never the variant.
OURS = frozenset({"info", "command|info"})


def count_commands(variant: Variant, server: RedisServer, seconds: int):
    """(requests, {command: calls}, {write command: calls}) of one wrk run of ``seconds``,
    counted on the variant's own Redis, for a browser that signed in just before (its
    sign-in's writes are not counted; a session-expiry session is touched at most once
    per touch_interval, two minutes here, so none comes due in the count)."""
    signed_in(variant)
    client = server.client()
    try:
        before = command_calls(client)
        served = variant.requests
        run_wrk(variant, seconds)
        served = variant.requests - served
        after = command_calls(client)
        sent = {name: calls - before.get(name, 0) for name, calls in after.items()
                if name not in OURS and calls > before.get(name, 0)}
        writes = {name: calls for name, calls in sent.items() if is_write(client, name)}
    finally:
        client.close()
    return served, sent, writes


def per_request(calls: dict[str, int], requests: int) -> str:
    """``"EXPIRE 1.00, SETEX 3 in all"``: each command's calls a request, most first."""
    return ", ".join(
        f"{name.upper()} {count / requests:.2f}" if count >= requests / 100
        else f"{name.upper()} {count} in all"
        for name, count in sorted(calls.items(), key=lambda item: -item[1])) or "none"


def signed_in(variant: Variant) -> Variant:
    """``http_peers.sign_in``; a ceiling (nobody signs in) must answer the page 200."""
    if variant.name in CEILINGS:
        if get(variant, "/page")[0] != 200:
            raise SystemExit(f"{variant.name}: the page does not answer 200")
    else:
        sign_in(variant)
    return variant


# -- the run ---------------------------------------------------------------------------------

def measure(smoke: bool = False, seconds: int = 10, rounds: int = ROUNDS) -> list[Figure]:
    if smoke:
        seconds, rounds = 1, 1
    wrk_binary()
    servers: dict[str, RedisServer] = {}
    variants: dict[str, Variant] = {}
    try:
        for name in ON_REDIS:
            servers[name] = RedisServer().start()
        with servers["bare_get"].client() as client:
            client.set(CEILING_KEY, CEILING_VALUE)
        env = {**os.environ, "BENCH_SECRET": SECRET, "BENCH_REDIS_KEY": CEILING_KEY,
               "BENCH_SESSION_KEY": session_key("0" * 64)}
        for name in ORDER:
            variant_env = {**env, "BENCH_REDIS_URL": servers[name].url} \
                if name in servers else env
            variants[name] = signed_in(start(name, variant_env))
        turn = list(variants.values())
        for number in range(1, rounds + 1):
            for variant in turn:
                variant.rates.append(run_wrk(variant, seconds))
            turn.reverse()  # ABBA: a drift across a round favours no side of a pair
            print(f"  round {number}: " + ", ".join(
                f"{name} {variant.rates[-1]:,.0f}" for name, variant in variants.items())
                  + " req/s", flush=True)
        counts = {name: count_commands(variants[name], servers[name], seconds)
                  for name in ON_REDIS}
    finally:
        for variant in variants.values():
            variant.process.terminate()
            variant.process.wait(timeout=10)
        for server in servers.values():
            server.stop()
    return figures(variants, counts, rounds, seconds, smoke)


def figures(variants: dict[str, Variant], counts: dict, rounds: int, seconds: int,
            smoke: bool) -> list[Figure]:
    placed = "app server and wrk on a core each" if PLACEMENT else "one core"
    result = [Figure("HTTP, Redis", LABELS[name], median(variants[name].rates), "req/s",
                     f"median of {rounds} x {seconds} s; {placed}") for name in ORDER]
    for name, base, target in RATIOS:
        ratio = paired_ratio(variants[name].rates, variants[base].rates)
        note, met = ratio_note(ratio, short_label(base), target)
        result.append(Figure("HTTP ratio, Redis", LABELS[name], ratio, "x",
                             f"{note}; median of the {rounds} rounds' ratios",
                             None if smoke else met))
    for name in ON_REDIS:
        requests, sent, writes = counts[name]
        target = name == "expiry_redis"
        result.append(Figure(
            "Redis writes", LABELS[name], sum(writes.values()), "writes",
            f"in {requests:,} read-only requests of one session; writes a request: "
            f"{per_request(writes, requests)}; every command a request: "
            f"{per_request(sent, requests)}" + ("; target 0" if target else ""),
            None if smoke or not target else sum(writes.values()) == 0))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_peers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"interleaved rounds (default {ROUNDS})")
    parser.add_argument("--smoke", action="store_true", help="one 1-second round, no targets")
    args = parser.parse_args(argv)
    started = time.monotonic()
    code = report(measure(args.smoke, args.seconds, args.rounds))
    print(f"({time.monotonic() - started:.0f} s)")
    return code


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
