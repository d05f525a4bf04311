"""Raw mode and the admin socket, driven by Python `websockets` against the real server."""
import asyncio
import json
import os
import socket
import stat
import subprocess

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def connect(url, **kw):
    return await websockets.connect(url, open_timeout=10, **kw)


def test_push_reaches_exactly_the_subscribers_across_shards(server):
    async def main():
        news = [await connect(f"{server.url}/ws?topic=news") for _ in range(16)]
        both = await connect(f"{server.url}/ws?topic=news&topic=sport")
        sport = await connect(f"{server.url}/ws?topic=sport")
        other_project = await connect(f"{server.url}/ws?topic=news&project=other")
        stats = server.stats()
        assert stats["connections"] == 19
        busy = [s for s in stats["shards"] if s["connections"] > 0]
        assert len(busy) >= 2, "SO_REUSEPORT should spread connections over shards"

        assert server.push("news", "hello") == 17
        for c in news + [both]:
            assert await asyncio.wait_for(c.recv(), 5) == "hello"
        assert server.push("sport", "goal") == 2
        assert await asyncio.wait_for(both.recv(), 5) == "goal"
        assert await asyncio.wait_for(sport.recv(), 5) == "goal"
        assert server.push("news", "p2", project="other") == 1
        assert await asyncio.wait_for(other_project.recv(), 5) == "p2"
        # Nobody got anything they should not have.
        for c in news + [sport, other_project]:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.recv(), 0.2)
        for c in news + [both, sport, other_project]:
            await c.close()
    run(main())


def test_push_body_from_stdin_and_unicode(server):
    async def main():
        c = await connect(f"{server.url}/ws?topic=t")
        r = server.cli("push", "--topic", "t", "-", stdin="κόσμε ✓")
        assert "reached 1 session" in r.stdout
        assert await asyncio.wait_for(c.recv(), 5) == "κόσμε ✓"
        await c.close()
    run(main())


def test_echo_and_ping(server):
    async def main():
        c = await connect(f"{server.url}/echo")
        await c.send("text")
        assert await c.recv() == "text"
        await c.send(bytes(range(256)) * 100)
        assert await c.recv() == bytes(range(256)) * 100
        pong = await c.ping(b"abc")
        await asyncio.wait_for(pong, 5)
        await c.close()
        assert c.close_code == 1000
    run(main())


def raw_exchange(port, data, read=4096):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(read)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out


UPGRADE = ("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {v}\r\n\r\n")


@pytest.mark.parametrize("path,version,status,reason", [
    ("/ws", "8", 426, b"only 13"),
    ("/nowhere", "13", 404, b"no WebSocket endpoint"),
    ("/ws?topic=", "13", 400, b"invalid topic"),
])
def test_bad_handshakes_get_http_errors(server, path, version, status, reason):
    resp = raw_exchange(server.port, UPGRADE.format(path=path, v=version).encode())
    assert resp.startswith(f"HTTP/1.1 {status} ".encode()), resp
    assert reason in resp


def test_plain_http_gets_426(server):
    resp = raw_exchange(server.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 426 "), resp


def close_code_of(frame_bytes):
    assert frame_bytes[0] == 0x88, frame_bytes
    return int.from_bytes(frame_bytes[2:4], "big")


def masked(opcode, payload, fin=True):
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + body


@pytest.mark.parametrize("frame,code", [
    (b"\x81\x05hello", 1002),                       # unmasked client frame
    (masked(1, b"\xff\xfe"), 1007),                 # invalid UTF-8
    (masked(2, b"x" * 70000), 1009),                # over the 64 KiB message limit
    (masked(9, b"x", fin=False), 1002),             # fragmented ping
])
def test_violations_get_close_codes_and_spare_others(server, frame, code):
    async def main():
        bystander = await connect(f"{server.url}/ws?topic=b")
        resp = raw_exchange(server.port, UPGRADE.format(path="/ws", v="13").encode() + frame)
        head, _, rest = resp.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert close_code_of(rest) == code
        assert server.push("b", "still here") == 1
        assert await asyncio.wait_for(bystander.recv(), 5) == "still here"
        await bystander.close()
    run(main())


def test_client_close_is_echoed(server):
    async def main():
        c = await connect(f"{server.url}/ws?topic=x")
        await c.close(4001, "bye")
        assert c.close_code == 4001
        for _ in range(50):
            if server.stats()["connections"] == 0:
                break
            await asyncio.sleep(0.05)
        assert server.stats()["connections"] == 0
    run(main())


def test_admin_socket_is_private_and_validates(server):
    assert stat.S_IMODE(os.stat(server.sock).st_mode) == 0o600
    r = server.cli("push", "--topic", "t", "x", check=True)
    assert "reached 0 sessions" in r.stdout
    out = subprocess.run(["curl", "-s", "--unix-socket", server.sock, "http://x/publish",
                          "-d", '{"destination":"news","body":"x"}'],
                         capture_output=True, text=True)
    if out.returncode == 0:
        assert "/topic/NAME" in json.loads(out.stdout)["error"]
    for path, code in [("/healthz", 200), ("/metrics", 200), ("/nope", 404)]:
        o = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                            server.sock, f"http://x{path}"], capture_output=True, text=True)
        if o.returncode == 0:
            assert o.stdout == str(code)


def test_sigterm_closes_sessions_with_1001(make_server):
    server = make_server("--shards", "2")

    async def main():
        conns = [await connect(f"{server.url}/ws?topic=t") for _ in range(20)]
        server.proc.send_signal(15)
        for c in conns:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(c.recv(), 5)
            assert c.close_code == 1001
    run(main())
    assert server.proc.wait(5) == 0


def test_handshake_timeout(make_server):
    server = make_server("--shards", "1", "--no-auth", config="[limits]\nhandshake_timeout_ms = 300\n")
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\n")
    resp = s.recv(4096)
    assert resp.startswith(b"HTTP/1.1 408 "), resp
    assert server.stats()["handshake_timeouts"] == 1
