"""A node cut off from Redis while its clients stay connected (issue #33): node A runs in a
network namespace of its own, with one link for its clients and another for Redis; the Redis
link is taken down (`ip link set ... down`: no FIN, no RST, packets just stop). Node A must turn
unready while it keeps delivering its local pushes, and once the link is back it resubscribes
and cross-node delivery resumes, both ways."""
import asyncio
import os
import shutil
import subprocess

import pytest

from conftest import admin, until
from test_cluster import Redis, drain, node_config, publish, raw, wait_for_channels


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Namespace:
    """A namespace with two veth links to the host: `clients` and `redis`, each a /30."""

    def __init__(self):
        n = os.getpid() % 200 + 20
        self.name = f"rcpart{os.getpid()}"
        self.links = {}
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        for i, role in enumerate(["clients", "redis"]):
            host, inside = f"rc{os.getpid() % 100000}{role[0]}h", f"rc{os.getpid() % 100000}{role[0]}n"
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", self.name)
            net = f"10.{210 + i}.{n}"
            sh("ip", "addr", "add", f"{net}.1/30", "dev", host)
            sh("ip", "link", "set", host, "up")
            sh("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{net}.2/30", "dev", inside)
            sh("ip", "netns", "exec", self.name, "ip", "link", "set", inside, "up")
            self.links[role] = (host, f"{net}.1", f"{net}.2")

    def cut(self, role, down=True):
        sh("ip", "link", "set", self.links[role][0], "down" if down else "up")

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        for host, _, _ in self.links.values():
            subprocess.run(["ip", "link", "del", host], capture_output=True)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("this test needs root and iproute2 (ip netns)")
    ns = Namespace()
    yield ns
    ns.close()


def test_a_node_cut_off_from_redis_is_unready_keeps_local_delivery_and_comes_back(
        make_server, netns, tmp_path):
    _, redis_host, _ = netns.links["redis"]
    _, _, client_addr = netns.links["clients"]
    # Not loopback only: protected mode would refuse the namespace.
    redis = Redis(str(tmp_path), "--bind", "127.0.0.1", redis_host, "--protected-mode", "no")
    try:
        inside = make_server("--shards", "2", config=node_config(f"redis://{redis_host}:{redis.port}"),
                             host=client_addr, wrap=("ip", "netns", "exec", netns.name))
        outside = make_server("--shards", "2", config=node_config(redis.url))

        async def main():
            a, b = await raw(inside, "news"), await raw(outside, "news")
            for n in (inside, outside):
                until(lambda: admin(n.sock, "GET", "/readyz")[0] == 200, 10, "both ready")
                await wait_for_channels(n, 1)
            publish(outside, "before", topic="news")
            assert await drain(a) == ["before"] and await drain(b) == ["before"]

            netns.cut("redis")
            try:
                status, why = until(lambda: (r := admin(inside.sock, "GET", "/readyz"))[0] == 503 and r,
                                    10, "the cut-off node to turn unready")
                assert "Redis" in why["error"] or "probe" in why["error"], why
                assert admin(inside.sock, "GET", "/healthz")[0] == 200
                assert admin(outside.sock, "GET", "/readyz")[0] == 200
                # Its clients are still connected and still get its own pushes.
                publish(inside, "local", topic="news")
                assert await drain(a) == ["local"]
                assert await drain(b, quiet=0.3) == []
            finally:
                netns.cut("redis", down=False)

            until(lambda: admin(inside.sock, "GET", "/readyz") == (200, {"ok": True}), 20,
                  "ready again once the link is back")
            # Resubscribed: deliveries cross again, both ways.
            for src, dst, own, body in [(outside, a, b, "to-inside"), (inside, b, a, "to-outside")]:
                for _ in range(50):
                    publish(src, body, topic="news")
                    got = await drain(dst, quiet=0.2)
                    if got:
                        break
                assert got and set(got) == {body}, (body, got)
                await drain(own)  # the publishing node's own copies
            assert admin(inside.sock, "GET", "/stats")[1]["cluster"]["reconnects"] >= 1

        asyncio.run(main())
    finally:
        redis.stop()
