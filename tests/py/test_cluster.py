"""Three ringcast nodes on one real redis-server (the distribution's package), started and
stopped here on a free port: cross-node delivery, presence, Redis outages and a killed node."""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import time

import jwt
import pytest
import websockets

from conftest import admin, frame, free_port, parse, until

SECRET = "cluster-secret-of-at-least-32-bytes!"
TTL_MS = 3000


class Redis:
    """One redis-server on loopback; `args` are more of its options (`--replicaof`, ...)."""

    def __init__(self, workdir, *args):
        self.port = free_port()
        self.dir = workdir
        self.args = list(args)
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir] + self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is missing: run scripts/install-test-deps.sh")
    r = Redis(str(tmp_path))
    yield r
    r.stop()


def node_config(redis_url, cluster=None):
    """Three nodes' shared configuration; `cluster` replaces the `redis` line (sentinels, ...)."""
    cluster = cluster or f'redis = "{redis_url}"'
    return f"""
[auth]
user_claim = "userName"

[projects.demo]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"
client_publish = true

[cluster]
{cluster}
presence_ttl_ms = {TTL_MS}
"""


@pytest.fixture
def nodes(make_server, redis):
    return [make_server("--shards", "2", config=node_config(redis.url)) for _ in range(3)]


def token(user):
    now = int(time.time())
    return jwt.encode({"userName": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


async def raw(node, topic, user="reader"):
    return await websockets.connect(f"{node.url}/ws?topic={topic}&project=demo&token={token(user)}")


async def stomp(node, user, *destinations):
    ws = await websockets.connect(f"{node.url}/ws", subprotocols=["v12.stomp"])
    await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x", "projectId": "demo",
                                    "token": token(user)}))
    assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "CONNECTED"
    for i, d in enumerate(destinations):
        await ws.send(frame("SUBSCRIBE", {"id": f"s{i}", "destination": d, "receipt": f"r{i}"}))
        assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "RECEIPT"
    return ws


async def drain(ws, quiet=0.4):
    """Every message that arrives until `quiet` seconds pass without one."""
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(ws.recv(), quiet))
        except asyncio.TimeoutError:
            return got


def body_of(m):
    return parse(m)[2].decode() if isinstance(m, str) and m.startswith("MESSAGE") else m


def publish(node, body, **target):
    dest = {"destination": f"/topic/{target['topic']}"} if "topic" in target else \
        {"user": target["user"], "destination": f"/queue/{target['queue']}"}
    status, answer = admin(node.sock, "POST", "/publish", {"project": "demo", "body": body, **dest})
    assert status == 200, answer
    return answer


async def local_delivery_while_hung(node, procs, what):
    """SIGSTOPs `procs` (Redis servers: their sockets stay open), checks `node` turns unready
    yet still live and delivering locally, then SIGCONTs them whatever happened."""
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    try:
        until(lambda: admin(node.sock, "GET", "/readyz")[0] == 503, 10, f"/readyz 503 with {what}")
        assert admin(node.sock, "GET", "/healthz")[0] == 200
        local = await raw(node, "local")
        status, answer = admin(node.sock, "POST", "/publish",
                               {"project": "demo", "destination": "/topic/local", "body": "x"})
        assert status == 200 and answer["sessions"] == 1, answer
        assert await drain(local) == ["x"]
        await local.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)


async def wait_for_channels(node, n, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if admin(node.sock, "GET", "/stats")[1]["cluster"]["channels"] >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"node never listened on {n} channels")


def test_pushes_from_every_node_reach_exactly_the_right_sessions_once(nodes):
    async def main():
        readers = [await raw(n, "news") for n in nodes]
        others = [await raw(n, "other") for n in nodes]
        users = [await stomp(n, f"u{i}", "/topic/news", "/user/queue/notice")
                 for i, n in enumerate(nodes)]
        for n in nodes:
            await wait_for_channels(n, 2)
        for j, origin in enumerate(nodes):
            answer = publish(origin, f"news from {j}", topic="news")
            assert answer["sessions"] == 2, answer  # this node's raw reader and STOMP user
            assert answer["cluster"] == {"nodes": 2}, answer
            for i in range(3):
                answer = publish(origin, f"for u{i} from {j}", user=f"u{i}", queue="notice")
                assert answer["sessions"] == (1 if i == j else 0), answer
        for ws in readers:
            assert await drain(ws) == [f"news from {j}" for j in range(3)]
        for ws in others:
            assert await drain(ws) == []
        for i, ws in enumerate(users):
            got = sorted(body_of(m) for m in await drain(ws))
            assert got == sorted([f"news from {j}" for j in range(3)] +
                                 [f"for u{i} from {j}" for j in range(3)]), got
        # A client's SEND crosses nodes too, once.
        await users[0].send(frame("SEND", {"destination": "/topic/news"}, b"from a client"))
        for ws in readers:
            assert await drain(ws) == ["from a client"]
        # The last subscriber leaving a destination takes the node off its channel.
        for ws in readers + users:
            await ws.close()
        deadline = time.time() + 5
        while admin(nodes[2].sock, "GET", "/stats")[1]["cluster"]["channels"] != 1:
            assert time.time() < deadline, "node 3 kept listening to channels nobody wants"
            await asyncio.sleep(0.05)

    asyncio.run(main())


def test_presence_and_disconnect_are_cluster_wide(nodes):
    async def main():
        sessions = [await stomp(n, f"u{i}", "/topic/news") for i, n in enumerate(nodes)]
        deadline = time.time() + TTL_MS / 1000 + 2
        while True:
            status, answer = admin(nodes[0].sock, "GET", "/sessions?project=demo&scope=cluster")
            assert status == 200, answer
            if answer["total"] == 3:
                break
            assert time.time() < deadline, answer
            await asyncio.sleep(0.2)
        assert sorted(s["user"] for s in answer["sessions"]) == ["u0", "u1", "u2"]
        assert len({s["node"] for s in answer["sessions"]}) == 3
        status, one = admin(nodes[0].sock, "GET", "/sessions?project=demo&user=u2&scope=cluster")
        assert [s["user"] for s in one["sessions"]] == ["u2"]
        status, stats = admin(nodes[1].sock, "GET", "/stats?scope=cluster")
        assert stats["node_count"] == 3 and stats["connections"] == 3, stats
        cli = nodes[1].cli("stats", "--cluster")
        assert json.loads(cli.stdout)["node_count"] == 3
        # Node 1 disconnects a user whose session lives on node 3.
        status, answer = admin(nodes[0].sock, "POST", "/disconnect", {"project": "demo", "user": "u2"})
        assert status == 200 and answer["sessions"] == 1, answer
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(sessions[2].recv(), 5)
        assert closed.value.rcvd.code == 1008
        assert not sessions[0].close_code and not sessions[1].close_code
        # Standalone scope questions get a clear answer.
        status, err = admin(nodes[0].sock, "GET", "/stats?scope=galaxy")
        assert status == 400 and "scope" in err["error"]

    asyncio.run(main())


def test_redis_outage_keeps_local_delivery_and_cross_node_delivery_resumes(nodes, redis):
    async def main():
        local, remote = await raw(nodes[0], "news"), await raw(nodes[1], "news")
        await wait_for_channels(nodes[1], 1)
        assert admin(nodes[0].sock, "GET", "/readyz") == (200, {"ok": True})
        publish(nodes[0], "before", topic="news")
        assert await drain(remote) == ["before"] and await drain(local) == ["before"]

        redis.stop()
        deadline = time.time() + 10
        while nodes[0].stats()["cluster"]["redis_up"] and time.time() < deadline:
            await asyncio.sleep(0.05)
        # Alive, but not ready: the balancer should send new clients to a node that has Redis.
        status, ready = admin(nodes[0].sock, "GET", "/readyz")
        assert status == 503 and "Redis" in ready["error"], ready
        assert admin(nodes[0].sock, "GET", "/healthz")[0] == 200
        answer = publish(nodes[0], "during", topic="news")
        assert answer["sessions"] == 1 and "error" in answer["cluster"], answer
        assert await drain(local) == ["during"]
        r = nodes[0].cli("push", "--topic", "news", "--project", "demo", "during-cli", check=False)
        assert r.returncode != 0 and "WARNING" in r.stdout, r
        assert admin(nodes[0].sock, "GET", "/stats")[1]["cluster"]["publish_failed"] >= 2
        status, err = admin(nodes[0].sock, "GET", "/sessions?project=demo&scope=cluster")
        assert status == 503 and "Redis" in err["error"]
        # Nodes and clients stay up; new local subscribers still get local pushes.
        late = await raw(nodes[0], "late")
        publish(nodes[0], "local only", topic="late")
        assert await drain(late) == ["local only"]
        assert await drain(remote) == []

        redis.start()
        restarted = time.monotonic()
        while True:
            publish(nodes[0], "after", topic="news")
            got = await drain(remote, quiet=0.25)
            if got:
                break
            assert time.monotonic() - restarted < 5, "cross-node delivery did not resume within 5 s"
        assert got == ["after"]
        assert admin(nodes[1].sock, "GET", "/stats")[1]["cluster"]["reconnects"] >= 1
        assert admin(nodes[0].sock, "GET", "/readyz") == (200, {"ok": True})

    asyncio.run(main())


def metrics(node):
    return subprocess.run(["curl", "-s", "--unix-socket", node.sock, "http://admin/metrics"],
                          capture_output=True, text=True, timeout=10).stdout


def test_a_hung_redis_turns_readyz_503_and_back(make_server, redis):
    """SIGSTOP keeps Redis's sockets open (no FIN, no RST): only a probe through pub/sub notices."""
    node = make_server("--shards", "2", config=node_config(redis.url))

    async def main():
        local = await raw(node, "news")
        until(lambda: admin(node.sock, "GET", "/readyz")[0] == 200, 10, "ready on Redis")
        assert "ringcast_broker_up 1" in metrics(node)
        rtt = [l for l in metrics(node).splitlines() if l.startswith("ringcast_broker_probe_seconds ")]
        assert rtt and float(rtt[0].split()[1]) > 0, rtt

        redis.proc.send_signal(signal.SIGSTOP)
        try:
            status, ready = until(lambda: (r := admin(node.sock, "GET", "/readyz"))[0] == 503 and r,
                                  10, "/readyz 503 within 10 s of Redis hanging")
            assert "Redis" in ready["error"], ready
            assert admin(node.sock, "GET", "/healthz")[0] == 200
            assert "ringcast_broker_up 0" in metrics(node)
            status, answer = admin(node.sock, "POST", "/publish",
                                   {"project": "demo", "destination": "/topic/news", "body": "local"})
            assert status == 200 and answer["sessions"] == 1, answer
            assert await drain(local) == ["local"]
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        until(lambda: admin(node.sock, "GET", "/readyz") == (200, {"ok": True}), 15,
              "ready again after SIGCONT")
        assert "ringcast_broker_up 1" in metrics(node)

    asyncio.run(main())


def test_a_killed_node_leaves_presence_within_the_ttl(nodes):
    async def main():
        ws = [await stomp(n, f"u{i}", "/topic/news") for i, n in enumerate(nodes)]
        deadline = time.time() + TTL_MS / 1000 + 2
        while admin(nodes[0].sock, "GET", "/sessions?project=demo&scope=cluster")[1]["total"] != 3:
            assert time.time() < deadline
            await asyncio.sleep(0.2)
        nodes[2].stop(sig=9)
        killed = time.monotonic()
        while True:
            answer = admin(nodes[0].sock, "GET", "/sessions?project=demo&scope=cluster")[1]
            if answer["total"] == 2:
                break
            assert time.monotonic() - killed < TTL_MS / 1000 + 0.5, answer
            await asyncio.sleep(0.1)
        assert sorted(s["user"] for s in answer["sessions"]) == ["u0", "u1"]
        assert admin(nodes[0].sock, "GET", "/stats?scope=cluster")[1]["node_count"] == 2
        # The survivors keep serving each other.
        publish(nodes[0], "still here", topic="news")
        for w in ws[:2]:
            assert [body_of(m) for m in await drain(w)] == ["still here"]

    asyncio.run(main())


def test_a_hung_redis_fails_publishes_in_bounded_time_and_recovers(nodes, redis):
    """Redis stopped (SIGSTOP), not killed: no FIN or RST tells the nodes; timeouts and the
    per-beat PING must."""
    async def main():
        remote = await raw(nodes[1], "news")
        await wait_for_channels(nodes[1], 1)
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            answer = publish(nodes[0], "while hung", topic="news")
            assert "error" in answer["cluster"], answer
            assert time.monotonic() - start < 5, "the admin answer waited on a hung Redis"
            await asyncio.sleep(TTL_MS / 1000)
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        while True:
            publish(nodes[0], "after", topic="news")
            got = await drain(remote, quiet=0.25)
            if "after" in got:
                break
            assert time.monotonic() - resumed < 10, "cross-node delivery did not resume"
        # "while hung" may or may not arrive: Redis can still run a PUBLISH it had buffered
        # when it stopped, after the node gave up on the answer (README: at most a late copy).

    asyncio.run(main())
