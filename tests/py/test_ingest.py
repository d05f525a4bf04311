"""Ingest from a real redis-server's stream (issue #15): entries in the /publish JSON shape reach
subscribers, malformed ones land in the dead-letter stream without stopping the consumer, and a
SIGKILLed node leaves nothing unacknowledged once restarted (its pending entries are re-read)."""
import asyncio
import json
import shutil
import subprocess
import time

import pytest
import websockets

from test_cluster import Redis


def cli(redis, *args, stdin=None):
    r = subprocess.run([shutil.which("redis-cli"), "-p", str(redis.port), *args], input=stdin,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


def xadd_many(redis, stream, bodies):
    """XADDs in one pipe (redis-cli --pipe takes RESP)."""
    out = []
    for b in bodies:
        parts = ["XADD", stream, "*", "data", b]
        out.append(f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts))
    cli(redis, "--pipe", stdin="".join(out).encode())


def publish_json(topic, body):
    return json.dumps({"project": "default", "destination": f"/topic/{topic}", "body": body})


@pytest.fixture
def redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is missing: run scripts/install-test-deps.sh")
    r = Redis(tmp_path)
    r.start()
    yield r
    r.stop()


def config(redis):
    return f"""
[[ingest.redis_stream]]
url = "{redis.url}"
stream = "pushes"
group = "ringcast"
consumer = "node-1"
batch = 500
"""


async def collect(ws, want, timeout):
    got = set()
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            got.add(await asyncio.wait_for(ws.recv(), 1))
        except asyncio.TimeoutError:
            pass
    return got


def test_stream_entries_reach_subscribers_and_bad_ones_go_to_the_dead_letter(make_server, redis):
    server = make_server("--shards", "2", "--no-auth", config=config(redis))
    n = 20_000

    async def main():
        ws = await websockets.connect(f"{server.url}/ws?topic=in", max_queue=None)
        await asyncio.sleep(0.5)
        bodies = [publish_json("in", str(i)) for i in range(n)]
        bodies[100] = "{not json"
        bodies[200] = json.dumps({"project": "default", "destination": "/nowhere", "body": "x"})
        xadd_many(redis, "pushes", bodies)
        got = await collect(ws, n - 2, 60)
        assert got == {str(i) for i in range(n)} - {"100", "200"}, len(got)
        await ws.close()
    asyncio.run(asyncio.wait_for(main(), 120))
    assert cli(redis, "XLEN", "pushes:dead") == "2"
    dead = cli(redis, "XRANGE", "pushes:dead", "-", "+")
    assert "invalid publish body" in dead and "destination" in dead, dead
    stats = server.stats()["ingest"]
    assert stats["received"] == n and stats["rejected"] == 2, stats
    # Everything was acknowledged.
    assert cli(redis, "XPENDING", "pushes", "ringcast").split("\n")[0] == "0"


def test_a_killed_node_rereads_what_it_had_not_acknowledged(make_server, redis):
    cfg = config(redis)
    server = make_server("--shards", "2", "--no-auth", config=cfg)
    n = 30_000
    xadd_many(redis, "pushes", [publish_json("k", str(i)) for i in range(n)])
    # Kill it while it is consuming (some entries delivered to it and not yet acknowledged).
    deadline = time.time() + 10
    while time.time() < deadline and server.stats().get("ingest", {}).get("received", 0) < 1000:
        time.sleep(0.01)
    server.stop(sig=9)
    left = int(cli(redis, "XPENDING", "pushes", "ringcast").split("\n")[0])
    print(f"unacknowledged at the kill: {left}")
    xadd_many(redis, "pushes", [publish_json("k", str(i)) for i in range(n, 2 * n)])
    # A new node with the same consumer name: its pending entries first, then the rest.
    again = make_server("--shards", "2", "--no-auth", config=cfg)
    deadline = time.time() + 60
    while time.time() < deadline:
        info = cli(redis, "XINFO", "GROUPS", "pushes")
        pending = cli(redis, "XPENDING", "pushes", "ringcast").split("\n")[0]
        lag_done = "lag\n0" in info or "\nlag\n0" in info
        if pending == "0" and again.stats()["ingest"]["received"] > 0 and lag_done:
            break
        time.sleep(0.2)
    assert cli(redis, "XPENDING", "pushes", "ringcast").split("\n")[0] == "0"
    assert "lag\n0" in cli(redis, "XINFO", "GROUPS", "pushes")

    async def live():
        ws = await websockets.connect(f"{again.url}/ws?topic=k", max_queue=None)
        await asyncio.sleep(0.3)
        xadd_many(redis, "pushes", [publish_json("k", f"after-{i}") for i in range(1000)])
        got = await collect(ws, 1000, 30)
        assert got == {f"after-{i}" for i in range(1000)}
        await ws.close()
    asyncio.run(asyncio.wait_for(live(), 60))
