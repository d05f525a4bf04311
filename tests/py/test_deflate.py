"""permessage-deflate with real clients (part of issue #16): Python `websockets` offers it by
default; pushes arrive compressed and intact, echoes too; a decompression bomb is closed with
1009 at the message limit; without [compression] the offer is declined, not refused."""
import asyncio
import json
import socket
import struct
import zlib

import websockets

CONFIG = """
[server]
echo = true

[limits]
max_message_bytes = 65536

[compression]
enabled = true
min_bytes = 64
"""


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_pushes_and_echoes_travel_compressed(make_server):
    s = make_server("--no-auth", config=CONFIG)

    async def main():
        async with websockets.connect(f"{s.url}/ws?topic=news") as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert ext.startswith("permessage-deflate"), ext
            assert "client_no_context_takeover" in ext and "server_no_context_takeover" in ext
            await asyncio.sleep(0.2)
            body = json.dumps({"items": [{"id": i, "name": "item"} for i in range(100)]})
            sent_before = s.stats()["bytes_out"]
            assert s.push("news", body) == 1
            assert await asyncio.wait_for(ws.recv(), 5) == body
            # What went over the wire is far smaller than the body.
            assert s.stats()["bytes_out"] - sent_before < len(body) / 4
        async with websockets.connect(f"{s.url}/echo") as ws:
            text = "é" * 5000
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 5) == text

    run(main())


def frame(payload, rsv1=True, opcode=1):
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload  # zero mask


def upgrade(port, path="/echo", ext="permessage-deflate"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Extensions: {ext}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    return s, head.decode()


def test_a_decompression_bomb_is_closed_at_the_limit(make_server):
    s = make_server("--no-auth", config=CONFIG)
    c, head = upgrade(s.port)
    assert "permessage-deflate" in head
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = z.compress(b"\0" * (4 << 20)) + z.flush(zlib.Z_SYNC_FLUSH)
    c.sendall(frame(bomb[:-4]))
    data = b""
    while len(data) < 4:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data[0] == 0x88 and struct.unpack(">H", data[2:4])[0] == 1009, data
    # Corrupt compressed data is 1007; RSV1 on a control frame is 1002.
    for payload, opcode, code in [(b"\xff\xff\xff", 1, 1007), (b"", 9, 1002)]:
        c, _ = upgrade(s.port)
        c.sendall(frame(payload, opcode=opcode))
        data = c.recv(4096)
        assert struct.unpack(">H", data[2:4])[0] == code, (payload, data)


def test_the_offer_is_declined_when_compression_is_off(make_server):
    s = make_server("--no-auth", "--echo")
    c, head = upgrade(s.port)
    assert head.startswith("HTTP/1.1 101") and "Sec-WebSocket-Extensions" not in head
    # And a compressed frame is then a protocol error.
    c.sendall(frame(b"\xf2\x48\xcd\xc9\xc9\x07\x00"))
    data = c.recv(4096)
    assert struct.unpack(">H", data[2:4])[0] == 1002
