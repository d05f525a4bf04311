"""History and recovery across nodes (issue #17) on a real redis-server: Redis numbers every
message, so a client that loses its node recovers on another; a Redis flush starts a new
epoch; the nodes' caches keep a reconnect storm from becoming a storm of Redis reads."""
import asyncio
import json
import subprocess
import threading
import time

from conftest import admin, frame, parse
from test_cluster import SECRET, redis, token  # noqa: F401 (the fixture is used by name)

TOPICS = 10


def config(redis_url):
    return f"""
[auth]
user_claim = "userName"

[limits]
max_pending_per_ip = 0
max_connections_per_ip = 0

[projects.demo]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"

[projects.demo.history]
size = 10000
ttl_ms = 120000
topics = ["live.*"]

[cluster]
redis = "{redis_url}"
presence_ttl_ms = 3000
"""


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Publisher(threading.Thread):
    """`rate` publishes a second round-robin over live.0 … live.{TOPICS-1}, in batches of 10,
    through one node's admin socket, until stopped; counts what each topic was sent."""

    def __init__(self, sock, rate):
        super().__init__(daemon=True)
        self.sock, self.rate = sock, rate
        self.stop = threading.Event()
        self.sent = 0
        self.failed = 0

    def run(self):
        batch = 10
        next_at = time.time()
        while not self.stop.is_set():
            items = [{"project": "demo", "destination": f"/topic/live.{(self.sent + i) % TOPICS}",
                      "body": f"m{self.sent + i}"} for i in range(batch)]
            status, answer = admin(self.sock, "POST", "/publish", items)
            assert status == 200, answer
            self.sent += batch
            next_at += batch / self.rate
            time.sleep(max(0, next_at - time.time()))


def raw_url(node, topic, position=None):
    url = f"{node.url}/ws?topic={topic}&project=demo&positions=1&token={token('u')}"
    if position:
        url += f"&since={topic}:{position[0]}:{position[1]}"
    return url


def test_sessions_of_a_killed_node_recover_everything_on_the_others(make_server, redis):
    import websockets

    a, b, c = (make_server("--shards", "2", config=config(redis.url)) for _ in range(3))
    sessions = 1000
    pub = Publisher(b.sock, 500)
    killed = asyncio.Event()
    back = []  # sessions that reached their second node

    async def client(i):
        topic = f"live.{i % TOPICS}"
        seen, position, notices = [], None, []
        ws = await websockets.connect(raw_url(a, topic), open_timeout=30, max_queue=None)
        for node in (a, (b, c)[i % 2]):
            if node is not a:
                ws = await websockets.connect(raw_url(node, topic, position), open_timeout=30,
                                              max_queue=None)
                notices.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                back.append(i)
            try:
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 3 if node is not a else 60))
                    seen.append(m["offset"])
                    position = (m["epoch"], m["offset"])
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass
        await ws.close()
        return topic, seen, notices

    async def main():
        tasks = [asyncio.create_task(client(i)) for i in range(sessions)]
        # Every session on node A, then messages flow for a while before A dies.
        deadline = time.time() + 30
        while a.stats()["connections"] < sessions and time.time() < deadline:
            await asyncio.sleep(0.2)
        assert a.stats()["connections"] == sessions
        pub.start()
        # Messages flow for a while (counted, not timed) before A dies.
        deadline = time.time() + 30
        while pub.sent < 1000 and time.time() < deadline:
            await asyncio.sleep(0.05)
        a.proc.kill()
        a.proc.wait()
        killed.set()
        # Publishing goes on while the sessions find the other nodes, and a while after.
        deadline = time.time() + 60
        while len(back) < sessions and time.time() < deadline:
            await asyncio.sleep(0.05)
        after = pub.sent + 500
        while pub.sent < after and time.time() < deadline:
            await asyncio.sleep(0.05)
        pub.stop.set()
        return await asyncio.gather(*tasks)

    results = run(main())
    pub.join(5)
    assert pub.sent >= 1500, pub.sent
    last = {}
    for topic, seen, _ in results:
        last[topic] = max(last.get(topic, 0), max(seen, default=0))
    # Every topic got its share of what was published, numbered 1..n without holes.
    assert sum(last.values()) == pub.sent, (last, pub.sent)
    for topic, seen, notices in results:
        assert notices and notices[0]["recovered"] is True, notices
        # From the first message each session saw to the last one published: no gap, no repeat.
        assert seen == list(range(seen[0], last[topic] + 1)), (topic, seen[:3], seen[-3:])
    reads = sum(n.stats()["history"]["redis_reads"] for n in (b, c))
    # One read per topic and node at most, however many sessions came back at once.
    assert reads <= 2 * TOPICS, reads


def test_another_node_recovers_over_stomp_and_a_flush_starts_a_new_epoch(make_server, redis):
    import websockets

    a, b = (make_server("--shards", "2", config=config(redis.url)) for _ in range(2))

    async def stomp(node, since=None):
        ws = await websockets.connect(f"{node.url}/ws", subprotocols=["v12.stomp"])
        await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x",
                                        "projectId": "demo", "token": token("s")}))
        assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "CONNECTED"
        headers = {"id": "s0", "destination": "/topic/live.stomp", "receipt": "r"}
        if since:
            headers["x-recover-since"] = since
        await ws.send(frame("SUBSCRIBE", headers))
        return ws

    async def messages(ws, n):
        got = []
        while len(got) < n:
            cmd, headers, body = parse(await asyncio.wait_for(ws.recv(), 5))
            if cmd == "MESSAGE":
                got.append((int(headers["x-offset"]), headers["x-epoch"], body.decode()))
        return got

    def push(node, body):
        status, answer = admin(node.sock, "POST", "/publish", {
            "project": "demo", "destination": "/topic/live.stomp", "body": body})
        assert status == 200, answer
        return answer

    async def main():
        ws = await stomp(a)
        assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "RECEIPT"
        # Published on node B, which has no subscriber: numbered by Redis all the same.
        for i in range(5):
            push(b, f"b{i}")
        got = await messages(ws, 5)
        epoch = got[0][1]
        assert [(o, e) for o, e, _ in got] == [(i, epoch) for i in range(1, 6)]
        await ws.close()
        for i in range(5, 8):
            push(a, f"a{i}")
        # Node B holds nothing for this topic: Redis answers, in order, then live ones.
        ws = await stomp(b, f"{epoch}:2")
        cmd, receipt, _ = parse(await asyncio.wait_for(ws.recv(), 5))
        assert (cmd, receipt["x-recovered"], receipt["x-offset"]) == ("RECEIPT", "true", "8")
        replayed = await messages(ws, 6)
        assert [b for _, _, b in replayed] == ["b2", "b3", "b4", "a5", "a6", "a7"]
        answer = push(a, "live")
        assert answer["sessions"] == 0 and answer["cluster"]["nodes"] == 1, answer
        assert (await messages(ws, 1))[0][:1] == (9,)
        await ws.close()
        # History gone from Redis: a new epoch, and the old position is refused.
        subprocess.run(["redis-cli", "-p", str(redis.port), "flushall"], check=True,
                       capture_output=True)
        push(a, "after the flush")
        ws = await stomp(b, f"{epoch}:9")
        cmd, receipt, _ = parse(await asyncio.wait_for(ws.recv(), 5))
        assert (cmd, receipt["x-recovered"]) == ("RECEIPT", "false"), receipt
        assert receipt["x-epoch"] != epoch and receipt["x-offset"] == "1"
        await ws.close()

    run(main())
    # The local publish above counted its own sessions after its copy came back from Redis.
    assert a.stats()["history"]["recorded"] == 0
