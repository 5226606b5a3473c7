"""A real Redis for the tests, started by the suite itself.

Debian's ``redis-server`` package (``make test`` installs it); never the system service.
Each server has its own temporary directory (working directory, unix socket, log, AOF and
cluster state), listens on loopback on a free port, keeps no RDB snapshots and runs in the
foreground (``--daemonize no``) as a child of the test run, which stops it.
:class:`RedisCluster` joins three such servers into a cluster of three masters.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redis.cluster

from tests.postgres import free_port

#: The number of hash slots of a Redis cluster.
CLUSTER_SLOTS = 16384


def _binary(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"]))
    if not found:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs Debian's "
                           "redis-server package")
    return found


class RedisServer:
    """One ``redis-server`` on ``127.0.0.1`` on a free port, in a temporary directory.

    ``appendonly``: keep an append-only file (fsynced per ``appendfsync``: ``always``,
    ``everysec`` or ``no``), which :meth:`restart` reloads. ``cluster``: run as a cluster
    node (see :class:`RedisCluster`). ``settings``: server options besides the tests', as
    ``--name value`` (underscores in a name become dashes: ``maxmemory_policy="noeviction"``).
    """

    def __init__(self, *, appendonly: bool = False, appendfsync: str = "everysec",
                 cluster: bool = False, **settings: object):
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.settings = settings
        self.binary = _binary("redis-server")
        self.root = Path(tempfile.mkdtemp(prefix="session-expiry-redis-"))
        self.root.chmod(0o700)
        self.socket = self.root / "redis.sock"
        self.log = self.root / "redis.log"
        self.port = 0
        #: The cluster bus's port (cluster nodes only): by default Redis takes ``port + 10000``,
        #: which is past 65535 for much of the ephemeral range that :func:`free_port` draws from.
        self.bus_port = 0
        self.process: subprocess.Popen | None = None

    def _argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.root), "--save", "", "--daemonize", "no",
                "--protected-mode", "no", "--logfile", "",
                "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        if self.cluster:
            argv += ["--cluster-enabled", "yes",
                     "--cluster-config-file", str(self.root / "nodes.conf"),
                     "--cluster-node-timeout", "5000", "--cluster-port", str(self.bus_port)]
        for name, value in self.settings.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        return argv

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, seconds: float = 10) -> RedisServer:
        """Start the server on a free port and wait until it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server already runs on port {self.port}")
        for _ in range(3):  # another process may take the free port before redis binds it
            self.port = free_port()
            if self.cluster:
                self.bus_port = free_port()
            if self._launch(seconds):
                return self
        raise RuntimeError(f"redis-server did not start:\n{self.log_tail()}")

    def restart(self, seconds: float = 10) -> RedisServer:
        """Start the server again on the same port and directory (stopping it first if it
        still runs), and wait until it has loaded its data (its AOF with ``appendonly``)."""
        if not self.port:
            raise RuntimeError("restart() a server that was never started: call start()")
        self._terminate()
        if not self._launch(seconds):
            raise RuntimeError(f"redis-server did not restart on port {self.port}:\n"
                               f"{self.log_tail()}")
        return self

    def _launch(self, seconds: float) -> bool:
        """Run redis-server and wait until it answers and has loaded its data; False if it
        exited (e.g. its port was taken)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self._argv(), cwd=self.root,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + seconds
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                         socket_connect_timeout=0.2) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if probe.ping() and probe.info("persistence")["loading"] == 0:
                        return True
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.02)
        self._terminate()
        raise RuntimeError(f"redis-server does not answer on port {self.port} after "
                           f"{seconds}s:\n{self.log_tail()}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, **options: object) -> redis.Redis:
        """A client for this server (``decode_responses=True``); close it after use."""
        return redis.Redis.from_url(self.url, **{"decode_responses": True, **options})

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server (as ``kill -9``: no shutdown, no final fsync) and reap it."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def _terminate(self) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """Shut the server down (SIGTERM, SIGKILL if it hangs) and remove its directory."""
        try:
            self._terminate()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self if self.running else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisCluster:
    """Three :class:`RedisServer` cluster masters, which share the 16384 slots between them
    (``redis-cli --cluster create``, no replicas). ``settings`` go to every node."""

    def __init__(self, size: int = 3, **settings: object):
        self.nodes = [RedisServer(cluster=True, **settings) for _ in range(size)]

    def start(self, seconds: float = 20) -> RedisCluster:
        """Start the nodes, join them, and wait until every node reports ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [_binary("redis-cli"), "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=seconds, check=False)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                                   f"{created.stderr}")
            self._wait_ok(seconds)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        states: dict[int, str] = {}
        while time.monotonic() < deadline:
            for node in self.nodes:
                with node.client() as client:
                    states[node.port] = client.cluster("INFO").get("cluster_state", "")
            if all(state == "ok" for state in states.values()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the cluster is not ok after {seconds}s: {states}")

    @property
    def url(self) -> str:
        """The first node's URL, a seed from which a cluster client finds the others."""
        return self.nodes[0].url

    def client(self, **options: object) -> redis.cluster.RedisCluster:
        """A cluster client (``decode_responses=True``); close it after use."""
        return redis.cluster.RedisCluster.from_url(
            self.url, **{"decode_responses": True, **options})

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
