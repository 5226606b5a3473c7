"""Instructions one request costs the app server, counted by valgrind: figures that do not move.

    .venv/bin/python -m benchmarks.instructions [VARIANT ...] [--requests 1000]
    .venv/bin/python -m benchmarks.instructions --smoke    # session-expiry only, 100 requests

On this shared machine a variant's rate moves by a third between spells of load;
the instructions a request executes barely do (five counts of one variant
agree within 2 %). So a change is judged here first, side by side, and its rate
after. Each variant of ``benchmarks.http_apps`` is served by waitress (4 threads)
under valgrind (its ``cachegrind`` tool, without cache simulation) twice: for a
few requests of the signed-in page, and for ``requests`` more, from 8 keep-alive
connections; the server stops itself after its last one. The difference of the
two counts over the difference of the requests is what a request costs in the
server (waitress, WebOb, Pyramid, the session layer and the page; not the
kernel's network work): start-up and sign-in cancel out.

Instructions are not time (a cache miss costs more than an add), but on the
pinned HTTP benchmark the rates follow them: see docs/performance.md.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.postgres import free_port

from benchmarks.figures import Figure, table
from benchmarks.http_peers import LABELS, PLACEMENT, SECRET, Variant, on, short_label, sign_in

#: The variants compared by default: those of the memory-store target.
VARIANTS = ("bare", "classic_memory", "expiry_memory")
#: Requests of the short run: start-up, sign-in and the first requests' warm-up.
FEW = 200
CONNECTIONS = 8
_COUNT = re.compile(r"I\s+refs:\s+([\d,]+)")


def serve(variant: str, port: int, requests: int) -> None:
    """Serve ``variant`` until the page has been asked ``requests`` times, then exit."""
    from waitress import serve as waitress_serve

    from benchmarks.http_apps import THREADS
    from benchmarks.http_apps import VARIANTS as APPS

    app = APPS[variant]()
    served = 0
    lock = threading.Lock()

    def counted(environ, start_response):
        nonlocal served
        if environ["PATH_INFO"] == "/page":
            with lock:
                served += 1
                if served > requests:  # the one after the last: every counted one is done
                    os._exit(0)
        return app(environ, start_response)

    waitress_serve(counted, host="127.0.0.1", port=port, threads=THREADS, _quiet=True)


def _load(port: int, cookie: str) -> None:
    """Ask for the page on one keep-alive connection until the server is gone."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Cookie": cookie} if cookie else {}
    try:
        while True:
            connection.request("GET", "/page", headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"/page answered {answer.status} under load")
    except (OSError, http.client.HTTPException):
        return  # the server stopped itself


def count(variant: str, requests: int) -> int:
    """Instructions the server executed, start to exit, serving ``requests`` page requests.

    The server runs on a core of its own and the clients (threads of this process) on
    another: valgrind runs one thread at a time, and threads of the server spread over
    both cores make it count ~3x as many instructions, the more the slower the clients.
    """
    cores = os.sched_getaffinity(0)
    server_cores, client_cores = PLACEMENT or (None, None)
    if client_cores:
        os.sched_setaffinity(0, client_cores)
    try:
        return _count(variant, requests, server_cores)
    finally:
        os.sched_setaffinity(0, cores)


def _count(variant: str, requests: int, server_cores: set[int] | None) -> int:
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise SystemExit("valgrind is not installed: `make bench` installs Debian's valgrind")
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "valgrind.log"
        command = [valgrind, "--tool=cachegrind", "--cache-sim=no", f"--log-file={log}",
                   "--cachegrind-out-file=/dev/null",
                   sys.executable, "-m", "benchmarks.instructions",
                   "--serve", variant, str(port), str(requests)]
        # one hash seed: with random ones, start-up alone varies by ~10M instructions
        environment = {**os.environ, "BENCH_SECRET": SECRET, "PYTHONHASHSEED": "0"}
        process = subprocess.Popen(on(server_cores, command), env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = Variant(variant, port, process, None)
        deadline = time.monotonic() + 120  # Python starts ~50x slower under valgrind
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"{variant} did not start under valgrind")
            time.sleep(0.5)
        sign_in(server)
        loads = [threading.Thread(target=_load, args=(port, server.cookie))
                 for _ in range(CONNECTIONS)]
        for thread in loads:
            thread.start()
        for thread in loads:
            thread.join()
        process.wait(timeout=300)
        found = _COUNT.search(log.read_text())
        if process.returncode != 0 or not found:
            raise SystemExit(f"{variant}: valgrind gave no count:\n{log.read_text()[-2000:]}")
        return int(found.group(1).replace(",", ""))


def _listening(port: int) -> bool:
    """The server accepts connections (asking for a page would count a request)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def per_request(variant: str, requests: int, few: int = FEW) -> float:
    """Instructions one page request costs the server (start-up and sign-in cancel out)."""
    return (count(variant, few + requests) - count(variant, few)) / requests


def measure(smoke: bool = False, requests: int = 1000,
            variants: tuple[str, ...] = VARIANTS) -> list[Figure]:
    if smoke:  # the harness works: 100 requests (~55M) stand well clear of the runs' ~2M spread
        few, requests, variants = 20, 100, ("expiry_memory",)
    else:
        few = FEW
    cost = {name: per_request(name, requests, few) for name in variants}
    section = "Instructions a request"
    figures = [Figure(section, short_label(name), cost[name] / 1000, "k instructions",
                      f"valgrind; {requests:,} requests over {few:,}") for name in variants]
    if {"classic_memory", "expiry_memory"} <= cost.keys():
        fewer = cost["classic_memory"] / cost["expiry_memory"]
        figures.append(Figure(section, LABELS["expiry_memory"], fewer, "x",
                              f"{fewer:.2f}x fewer than classic memory"))
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true",
                        help="session-expiry only, 100 requests: the harness works")
    parser.add_argument("--serve", nargs=3, metavar=("VARIANT", "PORT", "REQUESTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        variant, port, requests = args.serve
        serve(variant, int(port), int(requests))
        return
    print(table(measure(args.smoke, args.requests, tuple(args.variants))))


if __name__ == "__main__":
    main()
