"""Regression tests for the flaws found by probing the running server (issue #23), each with a
real client: Python `websockets`, raw sockets where the attack is below what a library sends,
PyJWT for tokens, and the admin socket as another Unix user."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from conftest import BIN, admin, frame, parse, until

SECRET = "sec-secret"
CONFIG = f"""
[auth]
enabled = true

[limits]
connect_timeout_ms = {{connect_ms}}
max_pending_per_ip = {{pending}}
max_connections_per_ip = 0

[projects.sec]
jwt_alg = "HS256"
jwt_secret = "{SECRET}"
client_publish = true

[projects.other]
jwt_alg = "HS256"
jwt_secret = "other-secret"
"""

STOMP_UPGRADE = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: v12.stomp\r\n\r\n").encode()


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def token(user="alice", project_secret=SECRET, exp_in=300, headers=None):
    claims = {"sub": user, "exp": int(time.time()) + exp_in}
    return jwt.encode(claims, project_secret, algorithm="HS256", headers=headers)


def masked(opcode, payload):
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + body


def upgraded_stomp(port, source="127.0.0.1"):
    """A raw STOMP-mode connection past its 101, not yet CONNECTED, and the answer's status
    and everything read."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    s.sendall(STOMP_UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    if int(head.split()[1]) != 101:
        head += read_until_closed(s, 2)
    return s, int(head.split()[1]), head


def read_until_closed(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


def server_frames(data):
    """Unmasked server frames -> [(opcode, payload)]."""
    out, i = [], 0
    while i + 2 <= len(data):
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = int.from_bytes(data[i:i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i:i + 8], "big"), i + 8
        out.append((op, data[i:i + n]))
        i += n
    return out


@pytest.fixture
def sec_server(make_server):
    def make(connect_ms=10000, pending=1000, *args):
        return make_server("--shards", "2", *args,
                           config=CONFIG.format(connect_ms=connect_ms, pending=pending))
    return make


async def stomp_session(url, tok=None, project="sec", **connect):
    ws = await websockets.connect(f"{url}/ws", subprotocols=["v12.stomp"], open_timeout=10)
    headers = {"accept-version": "1.2", "host": "x", "projectId": project,
               "token": tok or token(), **connect}
    await ws.send(frame("CONNECT", headers))
    return ws, parse(await asyncio.wait_for(ws.recv(), 5))


# 1. Unauthenticated STOMP connections.

def test_silent_stomp_upgrades_get_an_error_and_free_their_slots(make_server):
    server = make_server("--shards", "2", "--max-connections", "50",
                         config=CONFIG.format(connect_ms=1000, pending=1000))
    silent = [upgraded_stomp(server.port) for _ in range(50)]
    assert all(status == 101 for _, status, _ in silent)
    _, status, _ = upgraded_stomp(server.port)
    assert status == 503, "the server is full while the silent ones hold it"
    start = time.monotonic()
    for s, _, _ in silent:
        frames = server_frames(read_until_closed(s))
        assert frames[0][0] == 1, frames
        cmd, h, _ = parse(frames[0][1])
        assert cmd == "ERROR" and h["message"].startswith("no CONNECT within 1000 ms"), h
        assert frames[-1][0] == 8 and int.from_bytes(frames[-1][1][:2], "big") == 1008
        s.close()
    assert time.monotonic() - start < 5
    # Their slots are free again: a real client gets in.
    async def main():
        ws, (cmd, _, _) = await stomp_session(server.url)
        assert cmd == "CONNECTED"
        await ws.close()
    run(main())
    assert server.stats()["connect_timeouts"] == 50


def test_before_connect_a_session_may_send_only_a_few_kb(sec_server):
    server = sec_server()

    async def main():
        ws = await websockets.connect(f"{server.url}/ws", subprotocols=["v12.stomp"])
        await ws.send("CONNECT\nx:" + "y" * 20_000 + "\n\n\0")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009, ws.close_code
        # A STOMP frame trickled in small messages is bounded the same way.
        ws = await websockets.connect(f"{server.url}/ws", subprotocols=["v12.stomp"])
        got = []
        with pytest.raises(ConnectionClosed):
            for _ in range(20):
                await ws.send("CONNECT\nx:" + "y" * 1000)
            while True:
                got.append(parse(await asyncio.wait_for(ws.recv(), 5)))
        assert got and got[0][0] == "ERROR", got
        assert ws.close_code == 1002, ws.close_code
        # After CONNECT the configured (64 KiB) limit is back.
        ws, (cmd, _, _) = await stomp_session(server.url)
        assert cmd == "CONNECTED"
        await ws.send(frame("SEND", {"destination": "/topic/t", "receipt": "r1"}, b"z" * 30_000))
        cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 5))
        assert cmd == "RECEIPT", h
        await ws.close()
    run(main())


def test_unauthenticated_connections_are_capped_per_address(sec_server):
    server = sec_server(pending=5)
    pending = [upgraded_stomp(server.port) for _ in range(5)]
    assert [st for _, st, _ in pending] == [101] * 5
    s, status, answer = upgraded_stomp(server.port)
    assert status == 429
    assert b"still authenticating" in answer, answer
    # Another address is not affected.
    other, status, _ = upgraded_stomp(server.port, source="127.0.0.2")
    assert status == 101
    # One pending session authenticates: its address has room for one more.
    s0 = pending[0][0]
    s0.sendall(masked(1, frame("CONNECT", {"accept-version": "1.2", "projectId": "sec",
                                           "token": token()})))
    s0.settimeout(5)
    assert parse(server_frames(s0.recv(4096))[0][1])[0] == "CONNECTED"
    s, status, _ = upgraded_stomp(server.port)
    assert status == 101
    # Closing pending connections frees their places; authenticated sessions are not counted,
    # so many behind one address are fine.
    for c in [s, other] + [p for p, _, _ in pending[1:]]:
        c.close()
    until(lambda: server.stats()["connections"] == 1, 10, "the closed connections to go")

    async def main():
        sessions = [await stomp_session(server.url) for _ in range(20)]
        assert all(cmd == "CONNECTED" for _, (cmd, _, _) in sessions)
        for ws, _ in sessions:
            await ws.close()
    run(main())


# 2. A body that is not UTF-8.

def test_a_binary_publish_does_not_disconnect_anyone(sec_server):
    server = sec_server()
    tok = token()

    async def main():
        raw = await websockets.connect(f"{server.url}/ws?topic=bin&project=sec&token={tok}")
        sub, _ = await stomp_session(server.url)
        await sub.send(frame("SUBSCRIBE", {"id": "s0", "destination": "/topic/bin", "receipt": "r"}))
        assert parse(await asyncio.wait_for(sub.recv(), 5))[0] == "RECEIPT"
        pub, _ = await stomp_session(server.url)
        body = b"\xff\xfe\x00binary"
        await pub.send(frame("SEND", {"destination": "/topic/bin", "content-length": len(body)}, body))
        got = await asyncio.wait_for(raw.recv(), 5)
        assert got == body, got  # bytes: it came in a binary frame
        msg = await asyncio.wait_for(sub.recv(), 5)
        assert isinstance(msg, bytes), msg
        head, _, rest = msg.partition(b"\n\n")
        assert head.startswith(b"MESSAGE\n") and rest[:len(body)] == body
        assert b"content-type:application/octet-stream" in head
        # Everyone is still there, and text still arrives as text.
        assert server.push("bin", "after", project="sec") == 2
        assert await asyncio.wait_for(raw.recv(), 5) == "after"
        assert isinstance(await asyncio.wait_for(sub.recv(), 5), str)
        for ws in (raw, sub, pub):
            await ws.close()
    run(main())


# 3. Subscription ids.

def test_subscription_ids_with_nul_or_control_characters_are_refused(sec_server):
    server = sec_server()

    async def main():
        for bad in ["a\0b", "a\tb"]:
            ws, _ = await stomp_session(server.url)
            await ws.send(frame("SUBSCRIBE", {"id": bad, "destination": "/topic/x"}))
            cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 5))
            assert cmd == "ERROR" and ("NUL" in h["message"] or "subscription id" in h["message"]), h
        # Ids that are accepted round-trip: 2,000 pairs leave no subscription behind.
        ws, _ = await stomp_session(server.url, tok=token("bob"))
        for i in range(2000):
            sid = f"id-{i}:\\c{i}"
            await ws.send(frame("SUBSCRIBE", {"id": sid, "destination": f"/topic/t{i}"}))
            await ws.send(frame("UNSUBSCRIBE", {"id": sid}))
        await ws.send(frame("DISCONNECT", {"receipt": "done"}))
        assert parse(await asyncio.wait_for(ws.recv(), 10))[0] == "RECEIPT"
    run(main())
    status, sessions = admin(server.sock, "GET", "/sessions?project=sec&user=bob")
    assert status == 200
    assert all(not s["subscriptions"] for s in sessions["sessions"]), sessions


# 4. The user claim.

def test_a_user_claim_with_a_line_break_cannot_forge_frames(sec_server):
    server = sec_server()
    forged = "eve\nMESSAGE\ndestination:/topic/x\nsubscription:s0\n\nforged\0"

    async def main():
        ws, (cmd, h, body) = await stomp_session(server.url, tok=token(forged))
        assert cmd == "ERROR" and h["message"] == "auth_fail", (cmd, h)
        assert b"not a valid user name" in body, body
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    run(main())


# 5. Server-owned headers.

def test_client_send_cannot_set_server_headers(sec_server):
    server = sec_server()

    async def main():
        sub, _ = await stomp_session(server.url)
        await sub.send(frame("SUBSCRIBE", {"id": "mine", "destination": "/topic/h", "receipt": "r"}))
        assert parse(await asyncio.wait_for(sub.recv(), 5))[0] == "RECEIPT"
        pub, _ = await stomp_session(server.url)
        await pub.send(frame("SEND", {"destination": "/topic/h", "subscription": "theirs",
                                      "message-id": "forged", "ack": "client", "x-app": "1"}, b"hi"))
        msg = await asyncio.wait_for(sub.recv(), 5)
        lines = msg.split("\n\n")[0].split("\n")
        names = [l.split(":")[0] for l in lines[1:]]
        for n in ["subscription", "message-id", "destination", "content-length"]:
            assert names.count(n) == 1, lines
        assert "ack" not in names and "subscription:mine" in lines and "x-app:1" in lines, lines
        assert "message-id:forged" not in lines
        for ws in (sub, pub):
            await ws.close()
    run(main())
    # The admin API refuses them with a reason.
    for name in ["subscription", "message-id", "ack"]:
        status, body = admin(server.sock, "POST", "/publish", {
            "project": "sec", "destination": "/topic/h", "body": "x", "headers": {name: "1"}})
        assert status == 400 and "reserved" in body["error"], body


# 6. The admin accept loop.

@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_silent_connections_of_another_user_do_not_stall_the_admin_socket(sec_server):
    server = sec_server()
    os.chmod(os.path.dirname(server.sock), 0o755)
    os.chmod(server.sock, 0o666)
    script = ("import socket,sys,time\n"
              f"ss=[socket.socket(socket.AF_UNIX) for _ in range(40)]\n"
              f"[s.connect({server.sock!r}) for s in ss]\n"
              "print('ready',flush=True)\ntime.sleep(20)\n")
    nobody = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert nobody.stdout.readline().strip() == "ready"
        start = time.monotonic()
        status, body = admin(server.sock, "GET", "/healthz")
        took = time.monotonic() - start
        assert status == 200 and body["ok"], body
        assert took < 1.0, f"/healthz took {took:.2f} s behind 40 silent connections"
    finally:
        nobody.kill()
        nobody.wait()


# 7. Smaller ones.

def test_print_config_masks_secrets(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(connect_ms=1000, pending=5)
                   + '\n[cluster]\nredis = "redis://user:hunter2@127.0.0.1:1/0"\n')
    out = subprocess.run([BIN, "serve", "--config", str(cfg), "--print-config"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout and "other-secret" not in out.stdout and "hunter2" not in out.stdout
    assert "jwt_secret" in out.stdout and "not shown" in out.stdout


def test_token_errors_are_ours_and_crit_is_refused(sec_server):
    server = sec_server()
    cases = [
        (token(exp_in=-600), "token expired"),
        (token(project_secret="wrong"), "signature"),
        (token(headers={"crit": ["x-unknown"]}), "critical header"),
        ("not.a.jwt", "malformed token"),
    ]

    async def main():
        for tok, why in cases:
            ws, (cmd, h, body) = await stomp_session(server.url, tok=tok)
            assert cmd == "ERROR" and h["message"] == "auth_fail"
            text = body.decode()
            assert why in text, text
            assert "Signature" not in text and "ErrorKind" not in text and "Invalid" not in text, text
            await ws.close()
    run(main())


def test_admin_refuses_ambiguous_content_length(sec_server):
    server = sec_server()
    body = json.dumps({"project": "sec", "destination": "/topic/t", "body": "x"}).encode()
    for head in [f"Content-Length: +{len(body)}",
                 f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 1}"]:
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.sock)
        s.sendall(f"POST /publish HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode() + body + b" ")
        reply = read_until_closed(s, 5)
        assert reply.startswith(b"HTTP/1.1 400"), (head, reply)
        assert b"Content-Length" in reply


def test_projects_sharing_a_secret_are_warned_about(make_server):
    server = make_server("--shards", "1", config=CONFIG.format(connect_ms=1000, pending=5)
                         + '\n[projects.twin]\njwt_alg = "HS256"\njwt_secret = "sec-secret"\n')
    until(lambda: 'projects "sec" and "twin" share a JWT key' in server.output(), 10,
          "the warning about the shared key")
