"""SockJS over HTTP against hostile and careless clients (issue #21), with raw sockets on a
server of 4 shards: one session's requests arrive through many connections (so many shards),
sends to unknown sessions, oversized and broken bodies, and a streaming response nobody reads,
none of which may harm another session. The suite's `/echo` service (`--echo`) is the peer."""
import json
import socket
import time

import pytest

CONFIG = """
[limits]
max_message_bytes = 65536
send_queue = 32
"""


@pytest.fixture
def echo(make_server):
    return make_server("--shards", "4", "--echo", "--no-auth", config=CONFIG)


def request(port, method, path, body=b"", headers=None, sock=None):
    """One HTTP/1.1 request; returns (status, headers, body, socket kept alive)."""
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    h = {"Host": "x", "Content-Length": str(len(body)), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    s.sendall(head.encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "connection closed before an answer"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v for k, _, v in (l.partition(": ") for l in lines[1:])}
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        rest += s.recv(65536)
    return status, hdrs, rest[:n], s


def read_chunks(s, until, limit=5.0):
    """Reads a chunked response's payload until `until` is in it (or the time runs out)."""
    s.settimeout(limit)
    data = b""
    deadline = time.time() + limit
    while until not in data and time.time() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def open_stream(port, session):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"POST /echo/000/{session}/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    assert b"o\n" in read_chunks(s, b"o\n")
    return s


def test_one_session_through_many_connections(echo):
    stream = open_stream(echo.port, "shared")
    # Twenty sends, each on a fresh connection (so on any of the 4 shards), in order.
    for i in range(20):
        status, _, _, s = request(echo.port, "POST", "/echo/000/shared/xhr_send", json.dumps([f"m{i}"]).encode())
        s.close()
        assert status == 204
    got = read_chunks(stream, b'a["m19"]')
    assert [f'a["m{i}"]' for i in range(20)] == [l for l in got.decode().split("\n") if l.startswith("a[")]
    # A second receiver for the same id, from wherever it lands, is refused; the first goes on.
    status, _, body, s = request(echo.port, "POST", "/echo/000/shared/xhr", b"")
    assert status == 200 and body == b'c[2010,"Another connection still open"]\n'
    s.close()
    request(echo.port, "POST", "/echo/000/shared/xhr_send", b'["after"]')[3].close()
    assert b'a["after"]' in read_chunks(stream, b'a["after"]')
    stream.close()


def test_bad_sends_get_clear_answers(echo):
    status, _, body, s = request(echo.port, "POST", "/echo/000/nobody/xhr_send", b'["x"]')
    assert status == 404 and body == b"Session not found."
    s.close()
    stream = open_stream(echo.port, "victim")
    for body, status, reason in [(b"", 500, b"Payload expected."),
                                 (b'["x', 500, b"Broken JSON encoding."),
                                 (b'{"not": "strings"}', 500, b"Broken JSON encoding."),
                                 (b"x" * 70000, 413, b"request body over 65536 bytes")]:
        st, _, got, s = request(echo.port, "POST", "/echo/000/victim/xhr_send", body)
        s.close()
        assert st == status and reason in got, (st, got)
    # An oversized chunked body is refused as well.
    s = socket.create_connection(("127.0.0.1", echo.port), timeout=5)
    s.sendall(b"POST /echo/000/victim/xhr_send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"10000\r\n" + b"x" * 0x10000 + b"\r\n10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n")
    assert b" 413 " in s.recv(4096)
    s.close()
    # The session lived through all of it.
    request(echo.port, "POST", "/echo/000/victim/xhr_send", b'["still here"]')[3].close()
    assert b'a["still here"]' in read_chunks(stream, b"still here")
    stream.close()


def test_a_streaming_response_nobody_reads(echo):
    stuck = socket.create_connection(("127.0.0.1", echo.port), timeout=5)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"POST /echo/000/stuck/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    healthy = open_stream(echo.port, "healthy")
    big = json.dumps(["z" * 60000]).encode()
    s = None
    for i in range(200):
        status, _, _, s = request(echo.port, "POST", "/echo/000/stuck/xhr_send", big, sock=s)
        assert status == 204
    s.close()
    # The other session is served at once, and the stuck one is bounded: closed as a slow
    # consumer or trimmed, never buffered without end.
    request(echo.port, "POST", "/echo/000/healthy/xhr_send", b'["ok"]')[3].close()
    assert b'a["ok"]' in read_chunks(healthy, b'a["ok"]')
    stats = echo.stats()
    assert stats["slow_closed"] + stats["dropped"] >= 1, stats
    assert stats["rss_bytes"] < 200 * 1024 * 1024, stats
    stuck.close()
    healthy.close()


def test_info_greeting_and_preflight(echo):
    status, h, body, s = request(echo.port, "GET", "/echo/info", headers={"Origin": "http://app.example"})
    info = json.loads(body)
    assert status == 200 and info["websocket"] is True and info["cookie_needed"] is False
    assert h["access-control-allow-origin"] == "http://app.example"
    assert h["access-control-allow-credentials"] == "true"
    # Kept alive: the greeting comes on the same connection.
    status, _, body, s = request(echo.port, "GET", "/echo", sock=s)
    assert status == 200 and body == b"Welcome to SockJS!\n"
    s.close()
    status, h, _, s = request(echo.port, "OPTIONS", "/echo/000/x/xhr_send",
                              headers={"Access-Control-Request-Headers": "content-type"})
    s.close()
    assert status == 204 and "POST" in h["access-control-allow-methods"]
    assert h["access-control-allow-headers"] == "content-type"
    status, _, body, s = request(echo.port, "GET", "/cookie_needed_echo/info")
    s.close()
    assert json.loads(body)["cookie_needed"] is True
    status, _, body, s = request(echo.port, "GET", "/disabled_websocket_echo/info")
    s.close()
    assert json.loads(body)["websocket"] is False
    status, _, body, s = request(echo.port, "POST", "/echo/000/x/jsonp", b"")
    s.close()
    assert status == 404 and b"xhr_send" in body
