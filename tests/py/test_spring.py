"""Drop-in for Spring STOMP push centers (issue #21): `stomp.py`'s `WSStompConnection`, which
offers no subprotocol, gets a STOMP session; the seed's destinations with
`legacy_destinations = true` are reached by msg-center's REST shapes; raw clients stay raw."""
import asyncio
import http.client
import json
import queue
import time

import jwt
import pytest
import stomp
import websockets

from conftest import free_port, wait_port

SECRET = "spring-test-secret-0123456789abcdef"
KEY = "spring-publish-key-0123"


@pytest.fixture
def spring(make_server):
    port = free_port()
    cfg = f"""
[auth]
enabled = true
user_claim = "userName"

[stomp]
legacy_destinations = true

[sockjs]
endpoints = ["/msg-center/dfocus"]

[projects.sec]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"

[api]
listen = "127.0.0.1:{port}"
msgcenter_compat = true

[api.keys.backend]
key = "{KEY}"
scopes = ["publish"]
"""
    server = make_server("--shards", "2", config=cfg)
    server.api_port = port
    wait_port(port)
    return server


def token(user):
    return jwt.encode({"userName": user, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")


def rest(server, path, body):
    c = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=5)
    c.request("POST", path, body=json.dumps(body),
              headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read())


class Inbox(stomp.ConnectionListener):
    def __init__(self):
        self.frames = queue.Queue()
        self.errors = queue.Queue()
        self.receipts = queue.Queue()

    def on_message(self, frame):
        self.frames.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers["receipt-id"])

    def receipt(self, rid, timeout=5):
        """Waits for RECEIPT `rid` (a SUBSCRIBE is in place once its receipt is in)."""
        while self.receipts.get(timeout=timeout) != rid:
            pass


def stomp_py(server, user, path="/msg-center/dfocus/websocket"):
    conn = stomp.WSStompConnection([("127.0.0.1", server.port)], ws_path=path,
                                   heartbeats=(10000, 10000))
    inbox = Inbox()
    conn.set_listener("inbox", inbox)
    conn.connect(wait=True, headers={"token": token(user), "projectId": "sec"})
    return conn, inbox


def test_stomp_py_without_subprotocol_gets_topic_and_user_pushes(spring):
    s = spring
    alice, inbox = stomp_py(s, "alice")
    try:
        alice.subscribe("/topic/sec/news", id="t", receipt="r1")
        alice.subscribe("/user/queue/sec", id="u", receipt="r2")
        inbox.receipt("r1")
        inbox.receipt("r2")
        status, body = rest(s, "/ws_message/topic",
                            {"projectId": "sec", "topic": "news", "playLoad": "{\"n\":1}"})
        assert status == 200 and body["sessions"] == 1, body
        status, body = rest(s, "/ws_message/user",
                            {"projectId": "sec", "user": "alice", "playLoad": {"n": 2}})
        assert status == 200 and body["sessions"] == 1, body
        got = {}
        for _ in range(2):
            f = inbox.frames.get(timeout=5)
            got[f.headers["destination"]] = f.body
        assert got["/topic/sec/news"] == "{\"n\":1}", got
        assert json.loads(got["/user/queue/sec"]) == {"n": 2}, got
    finally:
        alice.disconnect()


def test_stomp_py_on_the_plain_path_and_a_bad_token(spring):
    s = spring
    bob, inbox = stomp_py(s, "bob", path="/ws")
    bob.subscribe("/topic/news", id="t", receipt="r")
    inbox.receipt("r")
    assert s.push("news", "plain", project="sec") == 1
    assert inbox.frames.get(timeout=5).body == "plain"
    bob.disconnect()
    conn = stomp.WSStompConnection([("127.0.0.1", s.port)], ws_path="/ws")
    bad = Inbox()
    conn.set_listener("bad", bad)
    with pytest.raises(stomp.exception.ConnectFailedException):
        conn.connect(wait=True, headers={"token": "not-a-jwt", "projectId": "sec"})
    assert bad.errors.get(timeout=5).headers["message"] == "auth_fail"


def test_raw_clients_without_subprotocol_stay_raw(spring):
    s = spring

    async def main():
        url = f"{s.url}/ws?project=sec&topic=news&token={token('carol')}"
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.2)
            assert s.push("news", "raw body", project="sec") == 1
            assert await asyncio.wait_for(ws.recv(), 5) == "raw body"
        # Without a token, the raw form is refused at the upgrade, as before.
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            await websockets.connect(f"{s.url}/ws?project=sec&topic=news")
        assert e.value.response.status_code == 401

    asyncio.run(asyncio.wait_for(main(), 30))
