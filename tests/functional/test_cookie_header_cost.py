"""Hostile Cookie headers against the real server: waitress, four threads, as production runs.

Before: the tween handed the whole header to ``http.cookies`` (quadratic on backslashes before
Python 3.11.10) and WebOb (quadratic on a run of letters), so four anonymous requests kept a
normal one waiting for many seconds; and a cache keyed by the header pinned 4096 of them.
"""
from __future__ import annotations

import http.client
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.farm.conftest import BIN, wait_for_port
from tests.postgres import free_port

#: Just under waitress's 256 KiB header limit: the most a client can send.
HUGE = 250_000
HOSTILE = {
    "backslashes_quoted": 'a="' + "\\" * HUGE + '"',
    "letters": "a" * HUGE,
}
THREADS = 4


@pytest.fixture
def server(tmp_path):
    """``pserve`` of testing.ini (memory store, waitress's default 4 threads) on a free port."""
    port = free_port()
    ini = tmp_path / "server.ini"
    ini.write_text((ROOT / "testing.ini").read_text().replace(
        "listen = 127.0.0.1:6544", f"listen = 127.0.0.1:{port}").replace(
        "%(here)s/var/", f"{tmp_path}/"))
    log = (tmp_path / "server.log").open("wb")  # a pipe nobody reads would fill and stall it
    process = subprocess.Popen([str(BIN / "pserve"), str(ini)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for_port(port, process)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        assert b"Traceback" not in (tmp_path / "server.log").read_bytes()


def get(connection: http.client.HTTPConnection, cookie: str | None = None) -> int:
    headers = {"Accept": "application/json"}
    if cookie is not None:
        headers["Cookie"] = cookie
    connection.request("GET", "/session/status", headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def rss(process: subprocess.Popen) -> int:
    """The server's resident memory, in bytes."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def hammer(port: int, cookies, stop: threading.Event, statuses: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for cookie in cookies:
        if stop.is_set():
            break
        try:
            statuses.append(get(connection, cookie))
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.close()


@pytest.mark.parametrize("hostile", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_normal_request_answers_within_a_second_while_four_clients_send_huge_cookies(
        server, hostile):
    port, _ = server
    stop, statuses = threading.Event(), []
    clients = [threading.Thread(target=hammer, args=(port, iter(lambda: hostile, None), stop,
                                                     statuses)) for _ in range(THREADS)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)  # the hostile requests are under way
        normal = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        waits = []
        for _ in range(10):
            started = time.monotonic()
            assert get(normal) == 200
            waits.append(time.monotonic() - started)
            normal.close()
        assert max(waits) < 1, f"a normal request waited {max(waits):.2f} s"
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert statuses, "the hostile clients were answered"
    assert set(statuses) == {400}, "a header past max_cookie_header is a 400, never a 500"


def test_4096_distinct_large_headers_do_not_stay_in_the_server(server):
    """Headers past the bound and headers just under it, each with its own forged session
    cookie and ticket: the server's memory grows by less than 50 MB."""
    port, process = server
    warm = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(20):
        get(warm, "x=1")
    warm.close()
    before = rss(process)

    def distinct(offset: int, size: int):
        for number in range(offset, 4096, THREADS):
            forged = f"{number:040x}" + f"{number:064x}"
            head = f"session={forged}; auth_tkt={forged}!userid_type:int; n={number}; pad="
            yield head + "p" * (size - len(head))

    for size in (HUGE, 16 * 1024):
        statuses = []
        clients = [threading.Thread(target=hammer, args=(port, distinct(offset, size),
                                                         threading.Event(), statuses))
                   for offset in range(THREADS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=120)
        assert len(statuses) == 4096
        assert set(statuses) == {400 if size > 16 * 1024 else 200}
    grown = rss(process) - before
    assert grown < 50 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MB"
