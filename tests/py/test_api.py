"""The network API (issue #15, first part): keys and scopes, project limits, keep-alive, batch
publish, size and time limits, msg-center's REST routes, all driven over real TCP by
`http.client`, raw sockets and `curl`, with `websockets` subscribers on the other side."""
import asyncio
import http.client
import json
import socket
import subprocess
import time

import jwt
import pytest
import websockets

from conftest import free_port, wait_port, frame, parse

SECRET = "api-test-secret"
PUBLISH_KEY = "publish-key-0123456789"
OPS_KEY = "ops-key-0123456789abc"
WIDE_KEY = "wide-key-0123456789ab"


@pytest.fixture
def api_server(make_server):
    port = free_port()
    cfg = f"""
[auth]
enabled = true

[projects.sec]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"

[projects.other]
jwt_alg = "HS256"
jwt_secret = "{SECRET}-other"

[api]
listen = "127.0.0.1:{port}"
msgcenter_compat = true
max_body_bytes = 4096
request_timeout_ms = 1000

[api.keys.backend]
key = "{PUBLISH_KEY}"
scopes = ["publish"]
projects = ["sec"]

[api.keys.ops]
key = "{OPS_KEY}"
scopes = ["admin", "metrics"]

[api.keys.wide]
key = "{WIDE_KEY}"
scopes = ["publish"]
"""
    server = make_server("--shards", "2", config=cfg)
    server.api_port = port
    wait_port(port)
    return server


def call(server, method, path, body=None, key=None, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=5)
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode()
    return r.status, parsed


def token(user="alice", project_secret=SECRET):
    return jwt.encode({"sub": user, "exp": int(time.time()) + 300}, project_secret, algorithm="HS256")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_keys_scopes_and_projects(api_server):
    s = api_server
    pub = {"project": "sec", "destination": "/topic/t", "body": "x"}
    assert call(s, "POST", "/publish", pub)[0] == 401
    status, body = call(s, "POST", "/publish", pub, key="not-a-key-at-all-xx")
    assert status == 401 and "unknown API key" in body["error"]
    status, body = call(s, "GET", "/sessions?project=sec", key=PUBLISH_KEY)
    assert status == 403 and "admin scope" in body["error"], body
    status, body = call(s, "POST", "/publish", {**pub, "project": "other"}, key=PUBLISH_KEY)
    assert status == 403 and "may not use project" in body["error"], body
    assert call(s, "POST", "/publish", {**pub, "project": "other"}, key=WIDE_KEY)[0] == 200
    assert call(s, "GET", "/sessions?project=sec", key=OPS_KEY)[0] == 200
    # `apikey KEY` works too; health is public; metrics need their scope.
    assert call(s, "POST", "/publish", pub, headers={"Authorization": f"apikey {PUBLISH_KEY}"})[0] == 200
    assert call(s, "GET", "/healthz")[0] == 200
    assert call(s, "GET", "/readyz")[0] == 200
    assert call(s, "GET", "/metrics", key=PUBLISH_KEY)[0] == 403
    status, text = call(s, "GET", "/metrics", key=OPS_KEY)
    assert status == 200 and "ringcast_connections" in text


def test_publish_reaches_subscribers_over_a_kept_alive_connection(api_server):
    s = api_server

    async def main():
        url = f"{s.url}/ws?topic=news&project=sec&token={token()}"
        subs = [await websockets.connect(url) for _ in range(3)]
        conn = http.client.HTTPConnection("127.0.0.1", s.api_port, timeout=5)
        socks = set()
        for i in range(5):
            status, body = call(s, "POST", "/publish", {"project": "sec", "destination": "/topic/news",
                                                        "body": f"m{i}"}, key=PUBLISH_KEY, conn=conn)
            assert status == 200 and body["sessions"] == 3, body
            socks.add(id(conn.sock))
        assert len(socks) == 1, "one TCP connection for every request"
        for ws in subs:
            assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(5)] == [f"m{i}" for i in range(5)]
            await ws.close()
    run(main())


def test_batch_publish_answers_per_item(api_server):
    s = api_server
    items = [{"project": "sec", "destination": "/topic/a", "body": "1"},
             {"project": "sec", "destination": "/nowhere", "body": "2"},
             {"project": "other", "destination": "/topic/a", "body": "3"}]
    status, body = call(s, "POST", "/publish", items, key=PUBLISH_KEY)
    assert status == 200
    r = body["results"]
    assert r[0] == {"sessions": 0}
    assert r[1]["status"] == 400 and "destination" in r[1]["error"]
    assert r[2]["status"] == 403
    ndjson = "\n".join(json.dumps(i) for i in items[:1] * 4) + "\n"
    status, body = call(s, "POST", "/publish", ndjson, key=PUBLISH_KEY,
                        headers={"Content-Type": "application/x-ndjson"})
    assert status == 200 and body["results"] == [{"sessions": 0}] * 4


def test_limits_answer_413_431_and_408(api_server):
    s = api_server
    big = {"project": "sec", "destination": "/topic/t", "body": "x" * 10_000}
    assert call(s, "POST", "/publish", big, key=PUBLISH_KEY)[0] == 413
    assert call(s, "GET", "/healthz", headers={"X-Big": "y" * 20_000})[0] == 431
    # A request that trickles in and never completes is answered 408 and dropped.
    c = socket.create_connection(("127.0.0.1", s.api_port), timeout=5)
    c.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\n")
    start = time.monotonic()
    answer = b""
    while chunk := c.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - start < 3
    # Meanwhile and after, others are served.
    assert call(s, "GET", "/healthz")[0] == 200


def test_curl_publishes(api_server):
    s = api_server
    r = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {PUBLISH_KEY}",
                        "-H", "Content-Type: application/json",
                        "-d", json.dumps({"project": "sec", "destination": "/topic/c", "body": "hi"}),
                        f"http://127.0.0.1:{s.api_port}/publish"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and json.loads(r.stdout) == {"sessions": 0}, (r.stdout, r.stderr)


def test_msgcenter_routes_with_its_own_bodies(api_server):
    s = api_server

    async def stomp(user, destination):
        ws = await websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"])
        await ws.send(frame("CONNECT", {"accept-version": "1.2", "projectId": "sec", "token": token(user)}))
        assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "CONNECTED"
        await ws.send(frame("SUBSCRIBE", {"id": "sub-0", "destination": destination, "receipt": "r"}))
        assert parse(await asyncio.wait_for(ws.recv(), 5))[0] == "RECEIPT"
        return ws

    async def main():
        topic_sub = await stomp("alice", "/topic/sec/news")
        user_sub = await stomp("bob", "/user/queue/sec")
        status, body = call(s, "POST", "/ws_message/topic",
                            {"projectId": "sec", "topic": "news", "playLoad": "{\"n\":1}",
                             "updateTime": 1764000000000}, key=PUBLISH_KEY)
        assert status == 200 and body["data"] is True and body["sessions"] == 1, body
        cmd, h, b = parse(await asyncio.wait_for(topic_sub.recv(), 5))
        assert cmd == "MESSAGE" and h["destination"] == "/topic/sec/news" and b == b'{"n":1}'
        assert h["content-type"].startswith("text/plain"), h  # a string playLoad, as it is
        status, body = call(s, "POST", "/ws_message/user",
                            {"projectId": "sec", "user": "bob", "playLoad": {"n": 2},
                             "updateTime": 1764000000000}, key=PUBLISH_KEY)
        assert status == 200 and body["data"] is True and body["sessions"] == 1, body
        cmd, h, b = parse(await asyncio.wait_for(user_sub.recv(), 5))
        assert cmd == "MESSAGE" and json.loads(b) == {"n": 2}
        assert h["content-type"] == "application/json", h  # an object, as Spring labels it
        status, body = call(s, "GET", "/ws_session/list", key=OPS_KEY)
        assert status == 200
        [project] = body["data"]
        assert project["projectId"] == "sec"
        users = {u["userId"]: u["wsSessionVos"] for u in project["wsUserSessionVos"]}
        assert users["alice"][0]["subscriptions"] == ["/topic/sec/news"]
        assert users["bob"][0]["subscriptions"] == ["/user/queue/sec"]
        # The publish key may not list sessions; its project limit holds on these routes too.
        assert call(s, "GET", "/ws_session/list", key=PUBLISH_KEY)[0] == 403
        assert call(s, "POST", "/ws_message/topic", {"projectId": "other", "topic": "x", "playLoad": "p"},
                    key=PUBLISH_KEY)[0] == 403
        for ws in (topic_sub, user_sub):
            await ws.close()
    run(main())
