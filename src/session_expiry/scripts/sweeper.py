"""``session-sweeper <ini>``: end a shared store's overdue sessions, exactly once each.

    session-sweeper production.ini --once            # one pass, then exit
    session-sweeper production.ini --every 30s       # a pass every 30 seconds until stopped
    session-sweeper production.ini --once --batch 1000

A session nobody comes back to is ended here, its event written in the same
step (SQL: a transaction; Redis: a script); its notifications (the log line,
``SessionEnded`` subscribers) are sent after it, from the outbox (SQL) or the
event stream's consumer group (Redis), so a sweeper killed in between leaves
them for the next run. Any number of sweepers may run at once against one
PostgreSQL database or one Redis (or Redis Cluster).

Exit codes: 0 done; 1 the store could not be reached; 2 bad arguments or
settings.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager, nullcontext

from pyramid.exceptions import ConfigurationError
from pyramid.paster import bootstrap, setup_logging

from ..settings import MAX_NUMBER_TEXT, RANGES, describe_duration, parse_duration
from ..stores import StoreUnavailable

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="session-sweeper",
                                description="End overdue sessions of the SQL or Redis store.")
    p.add_argument("ini", help="the app's ini file, e.g. production.ini")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="one pass, then exit")
    when.add_argument("--every", type=_duration, metavar="DURATION",
                      help="a pass every DURATION (e.g. 30s) until SIGTERM or Ctrl-C")
    p.add_argument("--batch", type=_positive, default=500, metavar="N",
                   help="sessions per transaction (default 500)")
    return p


#: The range of ``--every`` (that of ``session_expiry.sweep_interval``) and of ``--batch``.
EVERY = RANGES["sweep_interval"]
BATCH = (1, 10_000)


def _duration(text):
    low, high = EVERY
    if len(text) > MAX_NUMBER_TEXT:
        raise argparse.ArgumentTypeError(f"{text[:MAX_NUMBER_TEXT]!r}... is too long")
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not low <= seconds <= high:
        raise argparse.ArgumentTypeError(
            f"must be {describe_duration(low)} to {describe_duration(high)}")
    return seconds


def _positive(text):
    low, high = BATCH
    if not (text.isdigit() and len(text) <= MAX_NUMBER_TEXT and low <= int(text) <= high):
        raise argparse.ArgumentTypeError(f"{text[:MAX_NUMBER_TEXT]!r} is not a whole number "
                                         f"from {low} to {high:,}")
    return int(text)


class ProgressBar:
    """A one-line bar on a terminal; silent elsewhere (logs, cron mail)."""

    def __init__(self, stream):
        self.stream = stream
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        self.stream.write(f"\rsweeping [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{total}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.shown = False


def sweep_once(store, batch, out=sys.stdout) -> int:
    bar = ProgressBar(out) if out.isatty() else None
    try:
        result = store.sweep(int(store.clock()), batch, progress=bar)
    except StoreUnavailable as error:
        print(f"session-sweeper: the session store cannot be reached: {error}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        if bar:
            bar.clear()
    print(f"session-sweeper: {result.summary()}", file=out, flush=True)
    return EXIT_OK


#: What stops ``--every``: SIGTERM (a service manager) or SIGINT (Ctrl-C).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


@contextmanager
def stop_signals_held():
    """Hold the stop signals pending, for ``until_stopped`` to take, instead of
    handling them.

    A handler would run between two bytecodes of the main thread, wherever it is;
    one that sets a ``threading.Event`` deadlocks if it lands while that thread
    holds the event's own lock inside ``wait`` (the process then ignores every
    later SIGTERM too). Entered before anything starts a thread, so that every
    thread holds them: a thread that did not would die of them.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:  # a second one: stopping anyway
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def until_stopped(seconds: float, work) -> None:
    """``work()`` now and every ``seconds`` after, until a stop signal comes (held by
    ``stop_signals_held``). One that comes during ``work`` ends the loop once it
    returns: a pass is never cut short."""
    while True:
        work()
        if signal.sigtimedwait(STOP_SIGNALS, seconds) is not None:
            return


def main(argv=None, out=None) -> int:
    args = parser().parse_args(argv)
    with stop_signals_held() if args.every else nullcontext():
        return run(args, out or sys.stdout)


def run(args, out) -> int:
    if not os.path.isfile(args.ini):
        print(f"session-sweeper: no such ini file: {args.ini}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.ini)
    try:
        env = bootstrap(args.ini)
    except ConfigurationError as error:
        print(f"session-sweeper: {error}", file=sys.stderr)
        return EXIT_USAGE
    expiry = env["registry"].session_expiry
    store = expiry.store
    try:
        if not expiry.policy.shared_store:
            print("session-sweeper: session.type is expiry:memory, which is swept inside "
                  "the server process; the sweeper is for expiry:sql and expiry:redis",
                  file=sys.stderr)
            return EXIT_USAGE
        if args.once:
            return sweep_once(store, args.batch, out)
        # A database that is down is retried at the next pass.
        until_stopped(args.every, lambda: sweep_once(store, args.batch, out))
        return EXIT_OK
    finally:
        store.close()
        env["closer"]()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
