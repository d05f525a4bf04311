"""Regression tests for the flaws found by probing the wave-2 surfaces (issue #37), each with a
real client against the real binary: raw sockets where the attack is below what a library
sends, Python `websockets` for STOMP and raw sessions, `http.client` for the network API and
the console, PyJWT for tokens, and a local `http.server` as a project's authorization backend."""
import asyncio
import http.client
import http.server
import json
import socket
import threading
import time

import jwt
import websockets

from conftest import admin, frame, free_port, parse, until, wait_port

SECRET = "wave2-secret-0123456789abcdefghijk"
OTHER = "wave2-other-0123456789abcdefghijkl"


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def token(user="alice", secret=SECRET, exp_in=300, **claims):
    return jwt.encode({"sub": user, "exp": int(time.time()) + exp_in, **claims}, secret,
                      algorithm="HS256")


def rss(server):
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def http_call(port, method, path, body=None, headers=None, source="127.0.0.1", conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                           source_address=(source, 0))
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    raw = r.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return r.status, parsed, dict(r.getheaders())


def raw_http(port, data, timeout=5):
    """Sends `data` on a fresh connection; returns everything read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except socket.timeout:
        raise AssertionError(f"the connection stayed open after {out[:200]!r}")
    finally:
        s.close()
    return out


# 1. One publish key cannot exhaust memory with a huge batch.

def test_a_publish_batch_is_capped_and_costs_no_memory(make_server):
    s = make_server("--shards", "2", "--no-auth")
    before = rss(s)
    for body, ctype in [(b"1\n" * 524_288, "application/x-ndjson"),
                        (b"[" + b",".join([b"0"] * 524_000) + b"]", "application/json")]:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(s.sock)
        sock.sendall(f"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        sock.close()
        head, _, answer = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"at most 1000 items" in answer
        assert len(answer) < 1000
    assert rss(s) - before < 100 << 20, (before, rss(s))
    # A batch of the cap is answered item by item.
    status, answer = admin(s.sock, "POST", "/publish",
                           [{"destination": "/topic/t", "body": "x"}] * 1000)
    assert status == 200 and len(answer["results"]) == 1000


# 2. History replays count against the send queue.

HISTORY = """
[auth]
enabled = false
[limits]
send_queue = 32
max_pending_per_ip = 0
[projects.default.history]
size = 100
ttl_ms = 600000
topics = ["big"]
"""


def test_replays_to_a_client_that_never_reads_stay_bounded(make_server):
    s = make_server("--shards", "1", config=HISTORY)
    body = "x" * 60_000
    for _ in range(10):
        status, _ = admin(s.sock, "POST", "/publish",
                          [{"destination": "/topic/big", "body": body}] * 10)
        assert status == 200

    async def epoch():
        async with websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"]) as ws:
            await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x"}))
            await ws.recv()
            await ws.send(frame("SUBSCRIBE", {"id": "0", "destination": "/topic/big",
                                              "x-recover-since": "none:0", "receipt": "r"}))
            while True:
                cmd, h, _ = parse(await ws.recv())
                if cmd == "RECEIPT":
                    return h["x-epoch"]

    ep = run(epoch())
    before = rss(s)
    # A raw socket that reads nothing after CONNECTED, with a small receive buffer.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Protocol: v12.stomp\r\n\r\n")

    def masked(payload):
        n = len(payload)
        head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
        return head + b"\0\0\0\0" + payload

    sock.sendall(masked(frame("CONNECT", {"accept-version": "1.2", "host": "x"})))
    for i in range(150):
        sock.sendall(masked(frame("SUBSCRIBE", {"id": "s", "destination": "/topic/big",
                                                "x-recover-since": f"{ep}:0"})))
        sock.sendall(masked(frame("UNSUBSCRIBE", {"id": "s"})))
    stats = until(lambda: (st := s.stats())["history"]["replays"] >= 151 and st, 30,
                  "the replays to be answered")
    assert rss(s) - before < 100 << 20, (before, rss(s))
    assert stats["history"]["unrecovered"] >= 100, stats["history"]
    sock.close()
    # The server still serves others.
    assert s.push("big", "after") == 0


# 3 and 10. Refreshes: bounded, and a narrower token ends the subscriptions it no longer grants.

CLAIM = f"""
[auth]
enabled = true
[limits]
max_pending_per_ip = 0
[projects.p]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"
subscribe = "claim"
channels_claim = "channels"
"""


def test_a_repeated_refresh_is_refused_and_a_narrowing_one_ends_subscriptions(make_server):
    s = make_server("--shards", "2", config=CLAIM)
    wide = token(channels=["news.*", "other"])

    async def main():
        # Raw: the same token again is refused: it expires no later than the session's.
        url = f"{s.url}/ws?project=p&topic=news.eu&topic=other&token={wide}"
        async with websockets.connect(url) as ws:
            for _ in range(2000):
                await ws.send(json.dumps({"refresh": wide}))
            answers = [json.loads(await ws.recv()) for _ in range(2000)]
            assert all("must expire later" in a.get("error", "") for a in answers), answers[:2]
            narrow = token(exp_in=900, channels=["other"])
            await ws.send(json.dumps({"refresh": narrow}))
            got = [json.loads(await ws.recv()), json.loads(await ws.recv())]
            assert {"refreshed"} <= set(got[0]) or {"refreshed"} <= set(got[1]), got
            assert any(g.get("unsubscribed") == "news.eu" for g in got), got
            s.push("news.eu", "revoked", project="p")
            s.push("other", "still", project="p")
            assert await asyncio.wait_for(ws.recv(), 5) == "still"

        # STOMP: the session's subscription to news.eu ends at the refresh.
        async with websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"]) as ws:
            await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x",
                                            "projectId": "p", "token": wide}))
            assert parse(await ws.recv())[0] == "CONNECTED"
            for i, d in enumerate(["/topic/news.eu", "/topic/other"]):
                await ws.send(frame("SUBSCRIBE", {"id": str(i), "destination": d,
                                                  "receipt": f"s{i}"}))
                assert parse(await ws.recv())[0] == "RECEIPT"
            narrow = token(exp_in=900, channels=["other"])
            await ws.send(frame("SEND", {"destination": "/app/refresh", "token": narrow,
                                         "receipt": "fresh"}))
            assert parse(await ws.recv())[0] == "RECEIPT"
            s.push("news.eu", "revoked", project="p")
            s.push("other", "still", project="p")
            cmd, h, b = parse(await asyncio.wait_for(ws.recv(), 5))
            assert (cmd, h["destination"], b) == ("MESSAGE", "/topic/other", b"still")
            # Repeating the token is refused (and closes, as every failed refresh does).
            await ws.send(frame("SEND", {"destination": "/app/refresh", "token": narrow}))
            cmd, h, b = parse(await ws.recv())
            assert cmd == "ERROR" and b"must expire later" in b, (cmd, h, b)

    run(main())


# 4. SockJS sessions over HTTP are counted like connections.

def test_sockjs_sessions_count_against_the_connection_limits(make_server):
    cfg = """
[auth]
enabled = false
[limits]
max_connections_per_ip = 40
max_pending_per_ip = 20
"""
    s = make_server("--shards", "4", "--echo", config=cfg)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)

    def xhr(path):
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                .split(b":")[1])
        while len(rest) < n:
            rest += sock.recv(65536)
        return int(head.split()[1])

    # STOMP sessions (the /ws endpoint) are unauthenticated until CONNECT: 20 per address.
    codes = [xhr(f"/ws/000/stomp{i}/xhr") for i in range(30)]
    assert codes[:20] == [200] * 20 and codes[20:] == [429] * 10, codes
    # Echo sessions count as open connections: 40 per address in all, the carrying
    # connection and the 20 STOMP sessions included.
    codes = [xhr(f"/echo/000/echo{i}/xhr") for i in range(30)]
    assert codes[:19] == [200] * 19 and codes[19:] == [429] * 11, codes
    assert s.stats()["rejected"] >= 20
    sock.close()


# 5. No request smuggling on the WebSocket/SockJS listener.

def test_ambiguous_request_bodies_are_refused_and_the_connection_closed(make_server):
    s = make_server("--shards", "2", "--echo", "--no-auth")
    second = b"POST /echo/000/smuggled/xhr HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    for framing in [b"Content-Length: 5\r\nContent-Length: 0\r\n",
                    b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"]:
        out = raw_http(s.port, b"POST /echo/000/first/xhr_send HTTP/1.1\r\nHost: x\r\n" + framing
                       + b"\r\n0\r\n\r\n" + second)
        assert out.startswith(b"HTTP/1.1 400"), out[:200]
        assert out.count(b"HTTP/1.1") == 1, out


# 6. The API's slots cannot be held by keyless sockets.

def test_silent_sockets_cannot_keep_the_api_busy(make_server):
    port = free_port()
    cfg = f"""
[auth]
enabled = false
[api]
listen = "127.0.0.1:{port}"
max_connections = 8
max_connections_per_ip = 4
[api.keys.backend]
key = "backend-key-0123456789"
scopes = ["publish", "admin"]
"""
    s = make_server("--shards", "1", config=cfg)
    assert wait_port(port)
    keyed = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    auth = {"Authorization": "Bearer backend-key-0123456789"}
    assert http_call(port, "GET", "/stats", headers=auth, conn=keyed)[0] == 200
    silent = []
    stop = time.time() + 4
    statuses = []
    while time.time() < stop:
        # Keep reopening silent sockets from two addresses, as fast as they are closed. The
        # server evicts them (8 slots), so only the newest few can still be open: the rest
        # are closed here too, or a fast loop runs out of descriptors in this process.
        for x in silent[:-64]:
            x.close()
        silent = silent[-64:]
        for src in ("127.0.0.2", "127.0.0.3"):
            for _ in range(4):
                try:
                    silent.append(socket.create_connection(("127.0.0.1", port), timeout=2,
                                                           source_address=(src, 0)))
                except OSError:
                    pass
        statuses.append(http_call(port, "GET", "/healthz")[0])
    assert statuses and all(st == 200 for st in statuses), statuses
    # The keyed connection was never evicted.
    assert http_call(port, "GET", "/stats", headers=auth, conn=keyed)[0] == 200
    # A silent socket is closed by the short first-request deadline.
    lone = socket.create_connection(("127.0.0.1", port), timeout=15,
                                    source_address=("127.0.0.4", 0))
    assert lone.recv(100) == b""
    for x in silent:
        x.close()


# 7-9. The console: throttle, project scope, key scope.

def console_server(make_server):
    port = free_port()
    cfg = f"""
[auth]
enabled = true
[limits]
max_pending_per_ip = 0
[projects.a]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"
[projects.b]
jwt_alg = "HS256"
jwt_secret = "{OTHER}"
[api]
listen = "127.0.0.1:{port}"
console = true
max_connections_per_ip = 0
[api.keys.limited]
key = "limited-admin-key-0123"
scopes = ["admin"]
projects = ["a"]
[api.keys.full]
key = "full-admin-key-0123456"
scopes = ["admin", "publish"]
"""
    s = make_server("--shards", "2", config=cfg)
    s.api_port = port
    assert wait_port(port)
    return s


def console_login(s, key, source="127.0.0.1"):
    status, body, headers = http_call(s.api_port, "POST", "/console/login", {"key": key},
                                      source=source)
    assert status == 200, body
    cookie = headers["Set-Cookie"].split(";")[0]
    return {"Cookie": cookie, "X-CSRF-Token": body["csrf"]}


def test_console_login_throttle_holds_when_its_table_is_full(make_server):
    s = console_server(make_server)

    def fail(source):
        return http_call(s.api_port, "POST", "/console/login", {"key": "wrong-key-0123456789"},
                         source=source)[0]

    # One failure from each of 10,000 addresses fills the table...
    for i in range(10_000):
        assert fail(f"127.1.{i // 250}.{i % 250 + 1}") == 401
    # ...and a fresh address is still throttled, after the shared bucket's ten failures.
    fresh = [fail(f"127.2.0.{i + 1}") for i in range(12)]
    assert fresh[:10] == [401] * 10 and fresh[10:] == [429, 429], fresh
    log = s.output()
    assert log.count("console: a login from") < 100, "the failure log is rate-limited"


def test_a_project_limited_console_key_sees_only_its_projects(make_server):
    s = console_server(make_server)

    async def main():
        # Sessions of b first (so they fill the first shard slots), then one of a.
        b_clients = [await websockets.connect(
            f"{s.url}/ws?project=b&topic=secret-b{i}&token={token('bob', OTHER)}")
            for i in range(20)]
        a_client = await websockets.connect(
            f"{s.url}/ws?project=a&topic=public-a&token={token('ann')}")
        h = console_login(s, "limited-admin-key-0123")
        port = s.api_port
        st, dests, _ = http_call(port, "GET", "/console/api/destinations?limit=1", headers=h)
        assert st == 200 and [d["project"] for d in dests["items"]] == ["a"], dests
        assert "secret-b" not in json.dumps(dests)
        st, ses, _ = http_call(port, "GET", "/console/api/sessions?limit=1", headers=h)
        assert st == 200 and [x["project"] for x in ses["items"]] == ["a"], ses
        st, info, _ = http_call(port, "GET", "/console/api/session", headers=h)
        assert info["signing_projects"] == [] or set(info["signing_projects"]) <= {"a"}, info
        samples = until(lambda: [x for x in http_call(port, "GET", "/console/api/overview",
                                                      headers=h)[1]["samples"]
                                 if x.get("sessions_by_project")], 10, "an overview sample")
        assert set(samples[-1]["sessions_by_project"]) <= {"a"}, samples[-1]
        assert "b" not in json.dumps(samples[-1]["sessions_by_project"])
        for c in b_clients + [a_client]:
            await c.close()

    run(main())


def test_the_console_keeps_to_its_keys_scopes(make_server):
    s = console_server(make_server)
    port = s.api_port
    h = console_login(s, "limited-admin-key-0123")
    publish = {"project": "a", "destination": "/topic/x", "body": "hi"}
    assert http_call(port, "POST", "/console/api/publish", publish, headers=h)[0] == 403
    full = console_login(s, "full-admin-key-0123456")
    assert http_call(port, "POST", "/console/api/publish", publish, headers=full)[0] == 200
    # Try it mints only for test users, never for a real one.
    for hh in (h, full):
        st, body, _ = http_call(port, "POST", "/console/api/token",
                                {"project": "a", "user": "alice"}, headers=hh)
        assert st == 403 and "console-" in body["error"], body
    st, body, _ = http_call(port, "POST", "/console/api/token",
                            {"project": "a", "user": "console-tester"}, headers=full)
    assert st == 200, body
    assert jwt.decode(body["token"], SECRET, algorithms=["HS256"])["sub"] == "console-tester"


# Also: a NUL in a backend's reason, and nosniff on echoed paths.

class Deny(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"allow": False, "reason": "no\u0000MESSAGE\nforged:1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_a_backend_reason_cannot_break_a_stomp_frame(make_server):
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    cfg = f"""
[auth]
enabled = true
[projects.p]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"
subscribe = "proxy"
subscribe_proxy = "http://127.0.0.1:{backend.server_address[1]}/"
"""
    s = make_server("--shards", "1", config=cfg)

    async def main():
        async with websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"]) as ws:
            await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x",
                                            "projectId": "p", "token": token()}))
            assert parse(await ws.recv())[0] == "CONNECTED"
            await ws.send(frame("SUBSCRIBE", {"id": "0", "destination": "/topic/t"}))
            data = await asyncio.wait_for(ws.recv(), 10)
            data = data.encode() if isinstance(data, str) else data
            assert data.startswith(b"ERROR") and data.count(b"\0") == 1, data
            assert data.endswith(b"\0") or data.endswith(b"\0\n")

    try:
        run(main())
    finally:
        backend.shutdown()
    out = raw_http(s.port, b"GET /<script>x</script> HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404")
    assert b"X-Content-Type-Options: nosniff" in out
