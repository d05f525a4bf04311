"""History and recovery (issue #17) with real clients: raw-mode clients (Python `websockets`)
that drop and resubscribe with `since=` while publishes run at 2,000/s must each see a gapless,
duplicate-free run of offsets; user queues recover over STOMP; hostile positions get clear
errors and leave other sessions alone. (@stomp/stompjs flows: tests/node/history.test.mjs.)"""
import asyncio
import json
import random
import threading
import time

import websockets

from conftest import admin, frame, parse

CONFIG = """
[auth]
enabled = false

[limits]
max_pending_per_ip = 0
max_connections_per_ip = 0

[projects.default.history]
size = 2000
ttl_ms = 60000
topics = ["race-*", "news.*"]
queues = ["inbox"]
"""


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Publisher(threading.Thread):
    """Publishes `rate` messages a second round-robin over /topic/race-0 … race-{topics-1}
    through the admin socket, in batches of 20, until stopped."""

    def __init__(self, sock, topics, rate):
        super().__init__(daemon=True)
        self.sock, self.topics, self.rate = sock, topics, rate
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        batch = 20
        period = batch / self.rate
        next_at = time.time()
        while not self.stop.is_set():
            items = [{"destination": f"/topic/race-{(self.sent + i) % self.topics}",
                      "body": f"m{self.sent + i}"} for i in range(batch)]
            status, _ = admin(self.sock, "POST", "/publish", items)
            assert status == 200
            self.sent += batch
            next_at += period
            time.sleep(max(0, next_at - time.time()))


def test_resubscribing_under_load_loses_and_repeats_nothing(make_server):
    s = make_server("--shards", "2", config=CONFIG)
    # 2,000 publishes/s over 50 topics, 10 clients on each: what one Python process can read.
    topics, clients = 50, 500
    pub = Publisher(s.sock, topics, 2000)
    deadline = time.time() + 8

    async def client(i):
        seen = []
        position = None
        rounds = 0
        topic = f"race-{i % topics}"
        # At least two resubscriptions each, however slow the machine: a count, not a rate.
        while time.time() < deadline or position is None or rounds < 2:
            url = f"{s.url}/ws?topic={topic}&positions=1"
            if position:
                url += f"&since={topic}:{position[0]}:{position[1]}"
            async with websockets.connect(url, open_timeout=20) as ws:
                if position:
                    notice = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    assert notice["recovered"] is True, notice
                # Stay a random while, then drop the connection mid-stream.
                stay = time.time() + random.uniform(0.1, 0.8)
                while time.time() < stay:
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    except asyncio.TimeoutError:
                        continue
                    seen.append(m["offset"])
                    position = (m["epoch"], m["offset"])
            rounds += 1
            await asyncio.sleep(random.uniform(0, 0.3))
        return seen, rounds

    async def main():
        # Everyone connected and numbered before the race starts.
        pub.start()
        try:
            results = await asyncio.gather(*(client(i) for i in range(clients)))
        finally:
            pub.stop.set()
        return results

    results = run(main())
    pub.join(5)
    assert pub.sent >= 8000, pub.sent
    total_rounds = 0
    for seen, rounds in results:
        total_rounds += rounds
        assert seen, "every client got messages"
        # Gapless and without repeats from the first offset it saw to the last.
        assert seen == list(range(seen[0], seen[0] + len(seen))), (seen[:5], len(seen))
    assert total_rounds >= 2 * clients, total_rounds


def test_a_user_queue_recovers_over_stomp(make_server):
    s = make_server(config=CONFIG)

    def push_user(body):
        status, _ = admin(s.sock, "POST", "/publish",
                          {"user": "ada", "destination": "/queue/inbox", "body": body})
        assert status == 200

    async def session(headers):
        ws = await websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"])
        await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x", "login": "ada"}))
        assert parse(await ws.recv())[0] == "CONNECTED"
        await ws.send(frame("SUBSCRIBE", {"id": "q", "destination": "/user/queue/inbox", **headers}))
        return ws

    async def main():
        ws = await session({"receipt": "in"})
        assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "RECEIPT"
        push_user("first")
        _, h, body = parse(await asyncio.wait_for(ws.recv(), 5))
        assert body == b"first" and h["x-offset"] == "1"
        epoch = h["x-epoch"]
        await ws.close()
        for i in range(5):
            push_user(f"away {i}")
        ws = await session({"x-recover-since": f"{epoch}:1", "receipt": "r"})
        cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 5))
        assert cmd == "RECEIPT" and h["x-recovered"] == "true" and h["x-offset"] == "6", h
        got = [parse(await asyncio.wait_for(ws.recv(), 5)) for _ in range(5)]
        assert [b for _, _, b in got] == [f"away {i}".encode() for i in range(5)]
        assert [h["x-offset"] for _, h, _ in got] == ["2", "3", "4", "5", "6"]
        await ws.close()

    run(main())
    # The store's gauges in `ringcast stats` and in Prometheus text.
    h = s.stats()["history"]
    assert h["messages"] == 6 and h["recorded"] == 6 and h["replays"] == 1 and h["unrecovered"] == 0, h
    status, _ = admin(s.sock, "GET", "/healthz")
    assert status == 200


def test_hostile_positions_get_clear_errors_and_harm_no_one(make_server):
    s = make_server(config=CONFIG)

    async def main():
        async with websockets.connect(f"{s.url}/ws?topic=news.eu&positions=1") as calm:
            for bad, why in [
                ("since=news.eu:zz", "EPOCH:OFFSET"),
                ("since=news.eu:e:-4", "EPOCH:OFFSET"),
                ("since=elsewhere:e:1", "not one of this URL's topics"),
                ("since=news.eu:" + "e" * 100 + ":1", "EPOCH:OFFSET"),
                ("positions=maybe", "give 1 or 0"),
            ]:
                try:
                    async with websockets.connect(f"{s.url}/ws?topic=news.eu&topic=plain&{bad}"):
                        raise AssertionError(f"{bad} was accepted")
                except websockets.InvalidStatus as e:
                    assert e.response.status_code == 400 and why in e.response.body.decode(), bad
            try:
                async with websockets.connect(f"{s.url}/ws?topic=plain&since=plain:e:1"):
                    raise AssertionError("a topic without history recovered")
            except websockets.InvalidStatus as e:
                assert "keeps no history" in e.response.body.decode()
            # A huge offset or another epoch: accepted, told it cannot recover.
            for since in ["news.eu:0123456789abcdef:18446744073709551615", "news.eu:other:3"]:
                async with websockets.connect(f"{s.url}/ws?topic=news.eu&since={since}") as ws:
                    notice = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert notice["recovered"] is False, notice
            # STOMP: malformed, and on a topic without history.
            for header, why in [("nonsense", "a position is EPOCH"), ("e:1", None)]:
                ws = await websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"])
                await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x"}))
                await ws.recv()
                dest = "/topic/news.eu" if why else "/topic/plain"
                await ws.send(frame("SUBSCRIBE", {"id": "1", "destination": dest, "x-recover-since": header}))
                cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 5))
                assert cmd == "ERROR", (cmd, h)
                assert (why or "keeps no history") in h["message"], h
                await ws.close()
            # A publisher cannot forge positions.
            ws = await websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"])
            await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x"}))
            await ws.recv()
            await ws.send(frame("SUBSCRIBE", {"id": "1", "destination": "/topic/news.eu",
                                              "receipt": "s"}))
            assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "RECEIPT"
            status, _ = admin(s.sock, "POST", "/publish", {"destination": "/topic/news.eu", "body": "x",
                                                           "headers": {"x-offset": "999"}})
            assert status == 400
            await ws.close()
            status, _ = admin(s.sock, "POST", "/publish", {"destination": "/topic/news.eu", "body": "still"})
            assert status == 200
            m = json.loads(await asyncio.wait_for(calm.recv(), 5))
            assert m["data"] == "still" and m["offset"] == 1, m

    run(main())
