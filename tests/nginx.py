"""A real nginx in front of the app, started by the tests themselves.

Debian's ``nginx`` package (``make test`` installs it); never the system service. Each
instance has its own prefix in a temporary directory (configuration, pid file, logs and
temporary files), listens on loopback on a free port and runs in the foreground
(``daemon off``) as a child of the test run, which stops it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.postgres import free_port

#: How the proxy passes the client's address on, as the nginx line that does it.
FORWARDED_FOR = {
    # Safe: the address nginx saw, whatever the client sent.
    "overwrite": "proxy_set_header X-Forwarded-For $remote_addr;",
    # Safe with waitress's trusted_proxy_count = 1: the client's header, then the address
    # nginx saw, and waitress takes the right-most entry.
    "append": "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    # Unsafe: nginx's default passes every header the client sent on untouched.
    "pass_through": "",
    # No address at all: every client looks like the proxy itself.
    "none": 'proxy_set_header X-Forwarded-For "";',
}

_CONFIG = """\
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_connect_timeout 2s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            proxy_set_header Host $http_host;
            # As if nginx terminated TLS (it listens on plain HTTP here).
            proxy_set_header X-Forwarded-Proto https;
            {forwarded_for}
        }}
    }}
}}
"""


def _binary() -> str:
    found = shutil.which("nginx", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if not found:
        raise RuntimeError("nginx is not installed: run `make test`, which installs Debian's "
                           "nginx package")
    return found


class Nginx:
    """One nginx proxying every request to ``127.0.0.1:upstream``; ``forwarded_for`` is a key
    of :data:`FORWARDED_FOR`."""

    def __init__(self, upstream: int, forwarded_for: str):
        self.upstream = upstream
        self.forwarded_for = FORWARDED_FOR[forwarded_for]
        self.root = Path(tempfile.mkdtemp(prefix="session-expiry-nginx-"))
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self, seconds: float = 5) -> Nginx:
        for _ in range(3):  # another process may take the free port before nginx binds it
            self.port = free_port()
            config = self.root / "nginx.conf"
            config.write_text(_CONFIG.format(
                # A master started as root switches its worker to "nobody", which cannot
                # write in a private temporary directory.
                user="user root;" if os.geteuid() == 0 else "",
                root=self.root, port=self.port, upstream=self.upstream,
                forwarded_for=self.forwarded_for))
            self.process = subprocess.Popen(
                [_binary(), "-p", str(self.root), "-c", str(config),
                 "-e", str(self.root / "error.log"), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait(seconds):
                return self
        raise RuntimeError(f"nginx did not start:\n{self.errors()}")

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx does not listen on {self.port} after {seconds}s:\n"
                           f"{self.errors()}")

    def errors(self) -> str:
        log = self.root / "error.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGTERM to the master this object started), then remove the prefix."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)
