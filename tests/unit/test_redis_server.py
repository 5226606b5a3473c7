"""The Redis harness itself: real redis-server processes, a real AOF and a real cluster."""
from __future__ import annotations

import signal

import redis

from tests.redis_server import CLUSTER_SLOTS, RedisCluster, RedisServer


def test_a_server_answers_over_tcp_and_its_unix_socket():
    server = RedisServer().start()
    try:
        with server.client() as client:
            assert client.set("greeting", "hello")
            assert client.get("greeting") == "hello"
            assert client.connection_pool.connection_kwargs["port"] == server.port
        with redis.Redis.from_url(server.unix_url, decode_responses=True) as client:
            assert client.get("greeting") == "hello"
            assert client.set("other", "by socket")
            assert client.connection_pool.connection_kwargs["path"] == str(server.socket)
        with server.client() as client:
            assert client.get("other") == "by socket"
            assert client.config_get("save") == {"save": ""}
    finally:
        server.stop()
    assert server.process.returncode is not None
    assert not server.root.exists()


def test_an_always_fsynced_aof_keeps_a_write_across_kill_and_restart():
    with RedisServer(appendonly=True, appendfsync="always") as server:
        with server.client() as client:
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
            client.set("session", "kept")
        first = server.process.pid
        port = server.port
        server.kill()
        assert server.process.returncode == -signal.SIGKILL
        server.restart()
        assert server.process.pid != first
        assert server.port == port
        with server.client() as client:
            assert client.get("session") == "kept"
            assert client.info("persistence")["loading"] == 0


def test_without_aof_a_killed_server_restarts_empty():
    """The control for the test above: the restart really starts a fresh process."""
    with RedisServer() as server:
        with server.client() as client:
            client.set("session", "lost")
        server.kill()
        server.restart()
        with server.client() as client:
            assert client.get("session") is None


def test_a_cluster_of_three_masters_covers_every_slot():
    with RedisCluster() as cluster:
        assert len(cluster.nodes) == 3
        assert cluster.url == f"redis://127.0.0.1:{cluster.nodes[0].port}/0"
        for node in cluster.nodes:
            with node.client() as client:
                info = client.cluster("INFO")
                assert info["cluster_state"] == "ok"
                assert info["cluster_known_nodes"] == "3"
        with cluster.nodes[0].client() as client:
            slots = client.execute_command("CLUSTER SLOTS")
        assert sum(end - start + 1 for start, end, *_ in slots) == CLUSTER_SLOTS
        assert {master[1] for _, _, master, *_ in slots} == {n.port for n in cluster.nodes}

        keys = {f"{{tag{n}}}:session": f"value {n}" for n in range(6)}
        with cluster.client() as client:
            for key, value in keys.items():
                assert client.set(key, value)
            assert {key: client.get(key) for key in keys} == keys
            owners = {client.get_node_from_key(key).port for key in keys}
        assert len(owners) > 1  # the hash tags spread the keys over several masters
