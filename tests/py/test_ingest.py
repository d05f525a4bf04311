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
    r = Redis(tmp_path)  # started by its constructor
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
        # A raw session is subscribed before its 101 is written: no wait needed.
        ws = await websockets.connect(f"{server.url}/ws?topic=in", max_queue=None)
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
    # An idle blocking read is not an error (the client's answer timeout covers the block).
    time.sleep(2.5)
    assert server.stats()["ingest"]["errors"] == 0, server.stats()["ingest"]
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
        xadd_many(redis, "pushes", [publish_json("k", f"after-{i}") for i in range(1000)])
        got = await collect(ws, 1000, 30)
        assert got == {f"after-{i}" for i in range(1000)}
        await ws.close()
    asyncio.run(asyncio.wait_for(live(), 60))


# NATS JetStream: the same guarantees through a durable pull consumer.

class NatsServer:
    def __init__(self, workdir):
        from conftest import free_port
        self.port = free_port()
        self.dir = workdir / "nats"
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([shutil.which("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                      "-sd", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def natsd(tmp_path):
    if not shutil.which("nats-server"):
        pytest.fail("nats-server is missing: run scripts/install-test-deps.sh")
    n = NatsServer(tmp_path)
    n.start()
    yield n
    n.stop()


def nats_config(natsd):
    return f"""
[[ingest.nats]]
url = "{natsd.url}"
stream = "PUSHES"
subject = "pushes"
consumer = "ringcast"
batch = 200
ack_wait_ms = 2000
"""


async def nats_publish(natsd, payloads):
    import nats
    nc = await nats.connect(natsd.url)
    js = nc.jetstream()
    await js.add_stream(name="PUSHES", subjects=["pushes", "pushes.dead"])
    for p in payloads:
        await nc.publish("pushes", p.encode())
    await nc.flush()
    await nc.close()


async def nats_consumer_info(natsd):
    import nats
    nc = await nats.connect(natsd.url)
    info = await nc.jetstream().consumer_info("PUSHES", "ringcast")
    await nc.close()
    return info


def test_nats_messages_reach_subscribers_and_bad_ones_go_to_the_dead_letter(make_server, natsd):
    server = make_server("--shards", "2", "--no-auth", config=nats_config(natsd))
    n = 10_000

    async def main():
        ws = await websockets.connect(f"{server.url}/ws?topic=nats", max_queue=None)
        bodies = [publish_json("nats", str(i)) for i in range(n)]
        bodies[10] = "{not json"
        bodies[20] = json.dumps({"project": "default", "destination": "/nowhere", "body": "x"})
        await nats_publish(natsd, bodies)
        got = await collect(ws, n - 2, 60)
        assert got == {str(i) for i in range(n)} - {"10", "20"}, len(got)
        await ws.close()
        import nats
        nc = await nats.connect(natsd.url)
        sub = await nc.jetstream().pull_subscribe("pushes.dead", durable="check", stream="PUSHES")
        dead = await sub.fetch(2, timeout=5)
        reasons = sorted(m.headers["reason"] for m in dead)
        assert "destination" in reasons[0] and "invalid publish body" in reasons[1], reasons
        await nc.close()
        deadline = time.time() + 10
        while time.time() < deadline and (await nats_consumer_info(natsd)).num_ack_pending:
            await asyncio.sleep(0.2)
        assert (await nats_consumer_info(natsd)).num_ack_pending == 0
    asyncio.run(asyncio.wait_for(main(), 120))
    stats = server.stats()["ingest"]
    assert stats["received"] == n and stats["rejected"] == 2, stats


def test_nats_redelivers_what_a_killed_node_had_not_acknowledged(make_server, natsd):
    cfg = nats_config(natsd)
    server = make_server("--shards", "2", "--no-auth", config=cfg)
    n = 10_000
    asyncio.run(nats_publish(natsd, [publish_json("k", str(i)) for i in range(n)]))
    deadline = time.time() + 10
    while time.time() < deadline and server.stats().get("ingest", {}).get("received", 0) < 500:
        time.sleep(0.01)
    server.stop(sig=9)
    left = asyncio.run(nats_consumer_info(natsd))
    print(f"at the kill: {left.num_ack_pending} unacknowledged, {left.num_pending} not delivered")
    again = make_server("--shards", "2", "--no-auth", config=cfg)

    async def settle():
        deadline = time.time() + 30
        while time.time() < deadline:
            info = await nats_consumer_info(natsd)
            if info.num_ack_pending == 0 and info.num_pending == 0:
                return info
            await asyncio.sleep(0.3)
        return await nats_consumer_info(natsd)
    info = asyncio.run(settle())
    assert info.num_ack_pending == 0 and info.num_pending == 0, info

    async def live():
        ws = await websockets.connect(f"{again.url}/ws?topic=k", max_queue=None)
        await nats_publish(natsd, [publish_json("k", f"after-{i}") for i in range(1000)])
        got = await collect(ws, 1000, 30)
        assert got == {f"after-{i}" for i in range(1000)}
        await ws.close()
    asyncio.run(asyncio.wait_for(live(), 60))
