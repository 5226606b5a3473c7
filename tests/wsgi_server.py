"""Real waitress in this process, on a free loopback port, for tests that need a server."""
from __future__ import annotations

import threading
from collections.abc import Callable

from waitress import wasyncore
from waitress.server import create_server


def serve(app, **settings) -> tuple[int, Callable[[], None]]:
    """Serve ``app`` with waitress (2 threads unless ``settings`` say otherwise) on a free
    loopback port; return the port and a function that stops the server."""
    server = create_server(app, **{"host": "127.0.0.1", "port": 0, "threads": 2, **settings})
    stopping = threading.Event()

    def run():  # waitress's own run() cannot be stopped from another thread cleanly
        while not stopping.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, count=1)
        server.close()
        server.task_dispatcher.shutdown()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop():
        stopping.set()
        thread.join(timeout=5)

    return server.effective_port, stop
