"""Redis Sentinel (issue #33): ringcast nodes that find their Redis through a sentinel follow a
failover of the master to its promoted replica by themselves, say so while it lasts (`/readyz`
503, publishes answered with the cluster's error), deliver nothing twice, and turn unready when
the master hangs with its sockets open. Real redis-server processes: a master, its replica and
a sentinel in sentinel mode, all started here."""
import asyncio
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import admin, free_port, until
from test_cluster import (Redis, drain, local_delivery_while_hung, node_config, publish, raw,
                          wait_for_channels)


class Sentinel:
    """One sentinel watching `master_port` as `mymaster`, quorum 1, quick to fail over."""

    def __init__(self, workdir, master_port):
        self.port = free_port()
        conf = os.path.join(workdir, f"sentinel-{self.port}.conf")
        with open(conf, "w") as f:
            # Sentinel rewrites its file: it must be its own and writable.
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
                    "sentinel down-after-milliseconds mymaster 1000\n"
                    "sentinel failover-timeout mymaster 10000\n")
        self.proc = subprocess.Popen([shutil.which("redis-server"), conf, "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(lambda: self.ask("ping") == "PONG", 10, "the sentinel to start")

    def ask(self, *cmd):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *cmd], capture_output=True, text=True)
        return r.stdout.strip()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sentinel_config(sentinel_url):
    # A dead first sentinel is skipped: the second one answers.
    return node_config(None, f'sentinels = ["redis://127.0.0.1:1", "{sentinel_url}"]\n'
                             'sentinel_master = "mymaster"')


@pytest.fixture
def redis_pair(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is missing: run scripts/install-test-deps.sh")
    dirs = [tmp_path / "master", tmp_path / "replica"]
    for d in dirs:
        d.mkdir()
    master = Redis(str(dirs[0]))
    replica = Redis(str(dirs[1]), "--replicaof", "127.0.0.1", str(master.port))
    sentinel = Sentinel(str(tmp_path), master.port)
    yield master, replica, sentinel
    for r in (sentinel, replica, master):
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGCONT)
        r.stop()


def ready(node):
    return admin(node.sock, "GET", "/readyz")


def test_a_failover_is_followed_and_a_hung_master_is_not_ready(make_server, redis_pair):
    master, replica, sentinel = redis_pair
    nodes = [make_server("--shards", "2", config=sentinel_config(sentinel.url)) for _ in range(2)]
    # The sentinel must know the replica before it can promote it.
    until(lambda: "master_link_status:up" in subprocess.run(
        ["redis-cli", "-p", str(replica.port), "info", "replication"],
        capture_output=True, text=True).stdout, 20, "the replica to sync")
    until(lambda: str(replica.port) in sentinel.ask("sentinel", "replicas", "mymaster"), 30,
          "the sentinel to discover the replica")

    async def main():
        remote = await raw(nodes[1], "news")
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 10, "ready through the sentinel")
        await wait_for_channels(nodes[1], 1)
        publish(nodes[0], "before", topic="news")
        assert await drain(remote) == ["before"]

        master.stop()  # SIGKILL: the sentinel promotes the replica
        status, why = until(lambda: (r := ready(nodes[0]))[0] == 503 and r, 10,
                            "/readyz 503 while the master is gone")
        assert "Redis" in why["error"], why
        got, failed, start = [], 0, time.monotonic()
        for i in range(200):
            answer = publish(nodes[0], f"after-{i}", topic="news")
            failed += "error" in answer.get("cluster", {})
            got += await drain(remote, quiet=0.2)
            if got:
                break
            assert time.monotonic() - start < 40, "no delivery through the promoted replica"
        assert len(got) == len(set(got)), got  # nothing twice
        assert failed >= 1, "the publishes during the failover were answered as delivered"
        assert sentinel.ask("sentinel", "get-master-addr-by-name", "mymaster").split() == \
            ["127.0.0.1", str(replica.port)]
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 15, "ready on the promoted replica")
        assert admin(nodes[0].sock, "GET", "/stats")[1]["cluster"]["reconnects"] >= 1

        # The new master hangs: its sockets stay open, only the probe notices.
        await local_delivery_while_hung(nodes[0], [replica.proc], "the master hung")
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 20, "ready again after SIGCONT")
        publish(nodes[0], "last", topic="news")
        assert await drain(remote) == ["last"]

    asyncio.run(main())


def test_sentinels_and_redis_exclude_each_other(tmp_path):
    from conftest import BIN
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nredis = "redis://127.0.0.1:6379"\nsentinels = ["redis://127.0.0.1:26379"]\n')
    r = subprocess.run([BIN, "serve", "--config", str(cfg), "--check-config"], capture_output=True, text=True)
    assert r.returncode != 0 and "exclude each other" in r.stderr, r.stderr
