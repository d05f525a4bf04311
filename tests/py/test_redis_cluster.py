"""Redis Cluster (issue #33): ringcast nodes given a Redis Cluster's seed nodes spread their
destinations over its masters on sharded pub/sub (SSUBSCRIBE/SPUBLISH), keep presence and
history working across it, and follow the failover of a master to its replica by themselves.
Real redis-server processes in cluster mode (three masters, three replicas), built into a
cluster with `redis-cli --cluster create`, all started here."""
import asyncio
import json
import shutil
import subprocess
import time

import pytest
import websockets

from conftest import admin, free_port, parse, until
from test_cluster import (Redis, drain, local_delivery_while_hung, node_config, publish, raw,
                          stomp, token, wait_for_channels)

TOPICS = 40


def cli(port, *cmd):
    r = subprocess.run(["redis-cli", "-p", str(port), *cmd], capture_output=True, text=True)
    return r.stdout.strip()


class RedisCluster:
    def __init__(self, tmp_path, n=6):
        self.nodes = []
        for i in range(n):
            d = tmp_path / f"node{i}"
            d.mkdir()
            # A second's node timeout: a killed master is replaced within a few seconds.
            self.nodes.append(Redis(str(d), "--cluster-enabled", "yes",
                                    "--cluster-config-file", "nodes.conf",
                                    "--cluster-node-timeout", "1000",
                                    "--cluster-replica-validity-factor", "0",
                                    # Not PORT+10000, which may be past 65535.
                                    "--cluster-port", str(free_port())))
        addrs = [f"127.0.0.1:{r.port}" for r in self.nodes]
        r = subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "1",
                            "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        until(lambda: all("cluster_state:ok" in cli(x.port, "cluster", "info") for x in self.nodes),
              30, "the Redis Cluster to be ok")
        # A replica that has not synced yet cannot take over its master.
        until(lambda: all("master_link_status:up" in cli(x.port, "info", "replication")
                          for x in self.nodes if x not in self.masters()),
              30, "the replicas to sync")

    @property
    def seeds(self):
        return ", ".join(f'"{r.url}"' for r in self.nodes[:2])

    def masters(self):
        return [r for r in self.nodes if r.proc.poll() is None
                and cli(r.port, "role").splitlines()[:1] == ["master"]]

    def channels_on(self, r):
        return [c for c in cli(r.port, "pubsub", "shardchannels").splitlines() if c]

    def node_id(self, r):
        return cli(r.port, "cluster", "myid")

    def move_slot(self, slot, src, dst):
        """Hands `slot` (without keys) from master `src` to master `dst`, as a resharding does."""
        ids = self.node_id(src), self.node_id(dst)
        assert cli(dst.port, "cluster", "setslot", str(slot), "importing", ids[0]) == "OK"
        assert cli(src.port, "cluster", "setslot", str(slot), "migrating", ids[1]) == "OK"
        for r in (dst, src):
            assert cli(r.port, "cluster", "setslot", str(slot), "node", ids[1]) == "OK"

    def stop(self):
        for r in self.nodes:
            r.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is missing: run scripts/install-test-deps.sh")
    c = RedisCluster(tmp_path)
    yield c
    c.stop()


def cluster_config(c):
    return node_config(None, f"redis_cluster = [{c.seeds}]") + """
[projects.demo.history]
size = 100
ttl_ms = 60000
topics = ["kept"]
"""


def ready(node):
    return admin(node.sock, "GET", "/readyz")


async def start(make_server, c, count):
    """`count` nodes on the Redis Cluster, ready, and a reader of each topic on the second."""
    nodes = [make_server("--shards", "2", config=cluster_config(c)) for _ in range(count)]
    for n in nodes:
        until(lambda: ready(n) == (200, {"ok": True}), 15, "ready on the Redis Cluster")
    readers = [await raw(nodes[1], f"t{i}") for i in range(TOPICS)]
    await wait_for_channels(nodes[1], TOPICS)
    return nodes, readers


def test_destinations_spread_over_the_masters_and_each_arrives_once(make_server, redis_cluster):
    c = redis_cluster

    async def main():
        nodes, readers = await start(make_server, c, 3)
        for i in range(TOPICS):
            answer = publish(nodes[i % 2 * 2], f"m{i}", topic=f"t{i}")
            assert answer["cluster"] == {"nodes": 1}, answer
        for i, ws in enumerate(readers):
            assert await drain(ws, quiet=0.3) == [f"m{i}"]
        # Sharded: the destinations' channels live on more than one master.
        holding = [r for r in c.masters() if any(":t" in ch for ch in c.channels_on(r))]
        assert len(holding) == 3, [c.channels_on(r) for r in c.masters()]

        # A resharding moves t0's slot to another master: Redis unsubscribes the node there,
        # and the node follows the slot.
        src = next(r for r in c.masters() if any(ch.endswith("\x00t0") for ch in c.channels_on(r)))
        channel = next(ch for ch in c.channels_on(src) if ch.endswith("\x00t0"))
        # A name's slot is its hash tag's (the channel itself holds NULs, which argv cannot).
        slot = int(cli(src.port, "cluster", "keyslot", channel[channel.index("{"):channel.index("}") + 1]))
        dst = next(r for r in c.masters() if r is not src)
        c.move_slot(slot, src, dst)
        until(lambda: any(ch == channel for ch in c.channels_on(dst)), 20,
              "the node to resubscribe t0 on its slot's new master")
        answer = publish(nodes[0], "moved", topic="t0")
        assert await drain(readers[0]) == ["moved"], answer

        # Every node sees the new slot map on its next beat and starts over on it.
        for n in nodes:
            until(lambda: admin(n.sock, "GET", "/stats")[1]["cluster"]["reconnects"] >= 1, 20,
                  "every node to follow the new slot map")

        # A user's queue and presence, cluster-wide.
        user = await stomp(nodes[1], "alice", "/user/queue/inbox")
        await wait_for_channels(nodes[1], TOPICS + 1)
        until(lambda: [s["user"] for s in admin(
            nodes[0].sock, "GET", "/sessions?project=demo&user=alice&scope=cluster")[1]["sessions"]]
              == ["alice"], 10, "alice in the cluster's presence")
        publish(nodes[0], "to-alice", user="alice", queue="inbox")
        assert [parse(m)[2].decode() for m in await drain(user)] == ["to-alice"]

        # History numbered in the destination's slot: a client recovers on the other node.
        def kept(node, position=None):
            url = f"{node.url}/ws?topic=kept&project=demo&positions=1&token={token('u')}"
            if position:
                url += f"&since=kept:{position[0]}:{position[1]}"
            return websockets.connect(url)
        first = await kept(nodes[1])
        await wait_for_channels(nodes[1], TOPICS + 2)
        publish(nodes[0], "k1", topic="kept")
        m = json.loads(await asyncio.wait_for(first.recv(), 5))
        await first.close()
        for i in (2, 3):
            publish(nodes[0], f"k{i}", topic="kept")
        again = await kept(nodes[0], (m["epoch"], m["offset"]))
        notice = json.loads(await asyncio.wait_for(again.recv(), 5))
        assert notice["recovered"] is True, notice
        assert [json.loads(x)["offset"] for x in await drain(again)] == [m["offset"] + 1, m["offset"] + 2]
        stats = admin(nodes[0].sock, "GET", "/stats")[1]
        assert stats["cluster"]["publish_failed"] == 0, stats["cluster"]

    asyncio.run(main())


def test_a_master_failover_is_followed(make_server, redis_cluster):
    c = redis_cluster

    async def main():
        nodes, readers = await start(make_server, c, 2)
        for i in range(TOPICS):
            publish(nodes[0], f"before{i}", topic=f"t{i}")
        for i, ws in enumerate(readers):
            assert await drain(ws, quiet=0.3) == [f"before{i}"]

        # Kill the master holding the most of our channels; its replica takes over.
        victim = max(c.masters(), key=lambda r: len(c.channels_on(r)))
        victim.stop()
        until(lambda: len(c.masters()) == 3 and
              all("cluster_state:ok" in cli(r.port, "cluster", "info") for r in c.masters()),
              30, "a replica to be promoted")
        # Within 30 s every topic delivers again (what failed meanwhile is sent again).
        got, deadline = [[] for _ in range(TOPICS)], time.monotonic() + 30
        while time.monotonic() < deadline:
            missing = [i for i in range(TOPICS) if f"after{i}" not in got[i]]
            if not missing:
                break
            for i in missing:
                admin(nodes[0].sock, "POST", "/publish",
                      {"project": "demo", "destination": f"/topic/t{i}", "body": f"after{i}"})
            for i in missing:
                got[i] += await drain(readers[i], quiet=0.1)
        for i in range(TOPICS):
            assert f"after{i}" in got[i], (i, got[i])
            assert len(got[i]) == len(set(got[i])), got[i]  # nothing twice
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 20, "ready after the failover")

        # Every Redis hangs with its sockets open: unready, yet local delivery goes on.
        alive = [r.proc for r in c.nodes if r.proc.poll() is None]
        await local_delivery_while_hung(nodes[0], alive, "every Redis hung")
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 30, "ready again after SIGCONT")
        publish(nodes[0], "last", topic="t1")
        assert await drain(readers[1]) == ["last"]

    asyncio.run(main())


def test_a_redis_cluster_excludes_redis_and_sentinels(tmp_path):
    from conftest import BIN
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nredis = "redis://127.0.0.1:6379"\n'
                   'redis_cluster = ["redis://127.0.0.1:7000"]\n')
    r = subprocess.run([BIN, "serve", "--config", str(cfg), "--check-config"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "redis_cluster excludes" in r.stderr, r.stderr


def resp(port, *args):
    """One command over RESP (redis-cli cannot pass the NULs in ringcast's key names)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")

        def read():
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b"*":
                return [read() for _ in range(int(rest))] if int(rest) >= 0 else None
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2]
            return int(rest) if kind == b":" else rest
        return read()


def test_recovery_across_a_failover_is_refused_only_for_what_was_lost(make_server, redis_cluster):
    c = redis_cluster
    nodes = [make_server("--shards", "2", config=cluster_config(c)) for _ in range(2)]

    def kept(node, position=None):
        url = f"{node.url}/ws?topic=kept&project=demo&positions=1&token={token('u')}"
        if position:
            url += f"&since=kept:{position[0]}:{position[1]}"
        return websockets.connect(url)

    async def main():
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 15, "ready on the Redis Cluster")
        ws = await kept(nodes[1])
        await wait_for_channels(nodes[1], 1)
        for i in range(5):
            publish(nodes[0], f"k{i}", topic="kept")
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(5)]
        position = (got[-1]["epoch"], got[-1]["offset"])
        # The master of kept's slot dies; its replica has what replication carried before.
        owner = next(r for r in c.masters() if any(ch.endswith("\x00kept") for ch in c.channels_on(r)))
        channel = next(ch for ch in c.channels_on(owner) if ch.endswith("\x00kept"))
        await ws.close()
        owner.stop()
        until(lambda: len(c.masters()) == 3 and
              all("cluster_state:ok" in cli(r.port, "cluster", "info") for r in c.masters()),
              30, "a replica to be promoted")
        tag_end = channel.index("}:") + 2
        stream = (channel[:tag_end] + "hist:" + channel[tag_end:]).encode()
        slot = int(cli(c.masters()[0].port, "cluster", "keyslot", channel[channel.index("{"):tag_end - 1]))
        port = next(r[2][1] for r in resp(c.masters()[0].port, "CLUSTER", "SLOTS")
                    if r[0] <= slot <= r[1])
        new = next(r for r in c.nodes if r.port == port)
        kept_offsets = [int(e[0].split(b"-")[0]) for e in resp(new.port, "XRANGE", stream, "-", "+")]
        for n in nodes:
            until(lambda: ready(n) == (200, {"ok": True}), 20, "ready after the failover")
        # Published after the failover, then a client comes back from where it was.
        answer = admin(nodes[0].sock, "POST", "/publish",
                       {"project": "demo", "destination": "/topic/kept", "body": "after"})
        assert answer[0] == 200, answer
        again = await kept(nodes[0], position)
        notice = json.loads(await asyncio.wait_for(again.recv(), 5))
        whole = kept_offsets[:1] != [] and kept_offsets[-1] >= position[1]
        assert notice["recovered"] is whole, (notice, kept_offsets, position)
        if whole:
            rest = [json.loads(m) for m in await drain(again)]
            assert [m["data"] for m in rest] == ["after"], rest
            assert rest[0]["offset"] == position[1] + 1

    asyncio.run(main())
