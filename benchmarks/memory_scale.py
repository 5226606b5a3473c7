"""The memory store with 100,000 open sessions: memory per session, sweep and touch costs.

    .venv/bin/python -m benchmarks.memory_scale [--sessions 100000]
    .venv/bin/python -m benchmarks.memory_scale --smoke

Each side runs in a fresh Python process of its own, so one's memory is not
counted in the other's. Every session is opened as a sign-in does (a record with
an address and a browser's user agent) and given the data of the HTTP
benchmark's page plus a small cart and a draft, then:

- *RSS per session*: the process's resident memory after, less before, over
  the number of sessions (after a full garbage collection);
- *sweep pass, nothing due*: what the sweep thread costs four times per
  ``sweep_interval`` while no session is due (the usual case);
- *touch*: one request's touch of its session (CPU per call);
- *sweep pass, all overdue*: one pass ending every session at once after the
  idle timeout, each ended once and reported once (checked), per session;
- and afterwards, how many sessions are still held in memory.

The peer is pyramid_beaker's ``memory`` backend, fed the same sessions through
Beaker's own ``Session`` as pyramid_beaker does: its memory per session, and
the sessions it still holds after their timeout (Beaker has no sweep: an
abandoned session stays until the process restarts).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import time

from benchmarks.figures import Figure, table

SESSIONS = 100_000
SMOKE_SESSIONS = 2_000
IDLE = 1200
USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/126.0.0.0 Safari/537.36")


def data(i: int) -> dict:
    return {"greeting": "hello", "cart": [i % 97, i % 13, i % 7], "theme": "dark",
            "draft": "x" * (i % 200)}


def rss_kib() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _expiry(sessions: int) -> dict:
    from session_expiry.clock import FrozenClock
    from session_expiry.settings import Policy
    from session_expiry.stores import session_key
    from session_expiry.stores.beaker import new_session_id
    from session_expiry.stores.memory import MemoryStore

    now = 1_800_000_000
    clock = FrozenClock(now)
    ended = []
    store = MemoryStore(Policy(idle_timeout=IDLE, sweep_interval=None), clock,
                        on_end=ended.append)
    keys = [session_key(new_session_id()) for _ in range(sessions)]
    before = rss_kib()
    for i, key in enumerate(keys):
        store.open(key, str(i % 10_000), now, ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                   user_agent=USER_AGENT)
        store.save_data(key, data(i))
    per_session = (rss_kib() - before) / sessions

    started = time.process_time()
    passes = 1000
    for _ in range(passes):
        store.sweep(now + 1)
    idle_pass = (time.process_time() - started) / passes

    started = time.process_time()
    for key in keys:
        store.touch(key, now + 60)
    touch = (time.process_time() - started) / sessions

    started = time.process_time()
    result = store.sweep(now + 60 + IDLE)
    full_pass = time.process_time() - started
    if result.total_ended != sessions or len({event.session_key for event in ended}) != sessions:
        raise SystemExit(f"the sweep ended {result.total_ended} and reported "
                         f"{len(ended)} of {sessions} sessions")
    # Tombstones stay for ``retention`` (the "why" of the expired page), their data gone.
    store.sweep(now + 60 + IDLE + store.policy.retention)
    return {"rss_per_session_kib": per_session, "idle_pass_us": idle_pass * 1e6,
            "touch_us": touch * 1e6, "full_pass_s": full_pass,
            "held_after": len(store.records())}


def _beaker(sessions: int) -> dict:
    from beaker.container import MemoryNamespaceManager
    from beaker.session import Session

    ids = [os.urandom(16).hex() for _ in range(sessions)]
    before = rss_kib()
    for i, session_id in enumerate(ids):
        session = Session({}, id=session_id, type="memory", timeout=IDLE, use_cookies=False)
        session.update(data(i))
        session["_user_id"] = str(i % 10_000)
        session.save()
    per_session = (rss_kib() - before) / sessions
    return {"rss_per_session_kib": per_session,
            "held_after": len(MemoryNamespaceManager.namespaces.dict)}


SIDES = {"expiry": _expiry, "beaker": _beaker}


def _run_side(side: str, sessions: int) -> dict:
    found = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_scale", "--side", side,
         "--sessions", str(sessions)], check=True, capture_output=True, text=True)
    return json.loads(found.stdout.strip().splitlines()[-1])


def measure(smoke: bool = False, sessions: int | None = None) -> list[Figure]:
    """The memory store's figures for ``make bench``'s table (``benchmarks.__main__``)."""
    sessions = sessions or (SMOKE_SESSIONS if smoke else SESSIONS)
    ours, beaker = _run_side("expiry", sessions), _run_side("beaker", sessions)
    scale = f"{sessions:,} open sessions"
    ratio = ours["rss_per_session_kib"] / beaker["rss_per_session_kib"]
    return [
        Figure("Memory store", "RSS per session, session-expiry memory store",
               ours["rss_per_session_kib"], "KiB",
               f"{ratio:.2f}x pyramid_beaker memory's; {scale}"),
        Figure("Memory store", "RSS per session, pyramid_beaker memory",
               beaker["rss_per_session_kib"], "KiB", scale),
        Figure("Memory store", "sweep pass with nothing due", ours["idle_pass_us"], "us",
               f"CPU; 4 passes per sweep_interval; {scale}"),
        Figure("Memory store", "touch of one session", ours["touch_us"], "us",
               f"CPU per call; {scale}"),
        Figure("Memory store", "sweep pass ending every session", ours["full_pass_s"], "s",
               f"CPU; {ours['full_pass_s'] / sessions * 1e6:.1f} us per session, each "
               f"ended and reported once (checked); {scale}"),
        Figure("Memory store", "sessions held after their timeout, pyramid_beaker memory",
               beaker["held_after"], "sessions",
               f"session-expiry: {ours['held_after']} after the retention of its tombstones; "
               "Beaker has no sweep"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None,
                        help=f"open sessions (default {SESSIONS:,}; smoke {SMOKE_SESSIONS:,})")
    parser.add_argument("--smoke", action="store_true", help="toy size")
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:  # one side, in its own process: its figures as one JSON line
        print(json.dumps(SIDES[args.side](args.sessions or SESSIONS)))
        return 0
    print("\n" + table(measure(args.smoke, args.sessions)))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
