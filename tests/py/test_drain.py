"""A paced drain on SIGTERM (issue #32, first part), with real clients: raw sessions and STOMP
sessions (Python `websockets`) and SockJS-over-WebSocket sessions, `[server] drain_ms = 4000`.
Every session gets 1012 with a `retry-after` hint (STOMP first an ERROR `server restart` with a
`retry-after` header; SockJS a `c[1012,…]` frame), the closes are spread over the window, a
push during the drain reaches the sessions still open, and the process exits."""
import asyncio
import signal
import time
import uuid

import websockets

from conftest import admin, frame, parse, until

CONFIG = """
[server]
drain_ms = 4000
shutdown_grace_ms = 1000
[auth]
enabled = false
[limits]
max_pending_per_ip = 0
"""
N = 600  # of each kind


async def stomp(url):
    ws = await websockets.connect(f"{url}/ws", subprotocols=["v12.stomp"], open_timeout=30)
    await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x", "login": "u"}))
    assert parse(await ws.recv())[0] == "CONNECTED"
    await ws.send(frame("SUBSCRIBE", {"id": "0", "destination": "/topic/t", "receipt": "r"}))
    assert parse(await ws.recv())[0] == "RECEIPT"
    return ws


async def sockjs(url):
    ws = await websockets.connect(f"{url}/echo/000/{uuid.uuid4()}/websocket", open_timeout=30)
    assert await ws.recv() == "o"
    return ws


async def watch(kind, ws, t0, log):
    """Reads until the close; logs (kind, messages, close code, reason, seconds after t0)."""
    got = []
    try:
        while True:
            got.append(await ws.recv())
    except websockets.ConnectionClosed as e:
        log.append((kind, got, e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else "",
                    time.monotonic() - t0[0]))


def test_sigterm_drains_sessions_over_the_window(make_server):
    s = make_server("--shards", "2", "--echo", config=CONFIG)

    async def main():
        sessions = []
        for kind, make in [("raw", lambda: websockets.connect(f"{s.url}/ws?topic=t", open_timeout=30)),
                           ("stomp", lambda: stomp(s.url)), ("sockjs", lambda: sockjs(s.url))]:
            for i in range(0, N, 100):
                batch = await asyncio.gather(*[make() for _ in range(100)])
                sessions += [(kind, ws) for ws in batch]
        until(lambda: s.stats()["connections"] >= 3 * N, 30, "every session")
        t0 = [0.0]
        log = []
        watchers = [asyncio.create_task(watch(k, ws, t0, log)) for k, ws in sessions]
        assert admin(s.sock, "GET", "/readyz") == (200, {"ok": True})
        t0[0] = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        # A push a second into the drain reaches the sessions still open.
        await asyncio.sleep(1.0)
        # Draining: alive, but no longer ready for new clients.
        status, ready = admin(s.sock, "GET", "/readyz")
        assert status == 503 and ready["error"] == "the server is stopping", ready
        assert admin(s.sock, "GET", "/healthz")[0] == 200
        reached = s.push("t", "during the drain")
        pushed_at = time.monotonic() - t0[0]
        await asyncio.wait_for(asyncio.gather(*watchers), 60)
        return log, reached, pushed_at

    log, reached, pushed_at = asyncio.run(main())
    assert len(log) == 3 * N
    for kind, got, code, reason, _ in log:
        assert code == 1012 and "retry-after=" in reason, (kind, code, reason)
        if kind == "stomp":
            cmd, h, _ = parse(got[-1])
            assert cmd == "ERROR" and h["message"] == "server restart", (cmd, h)
            assert int(h["retry-after"]) >= 1000
        if kind == "sockjs":
            assert got[-1].startswith('c[1012,"server restart retry-after='), got[-1]
    # STOMP sessions go first.
    order = sorted(log, key=lambda e: e[4])
    assert all(e[0] == "stomp" for e in order[:N // 2]), [e[0] for e in order[:N // 2]][:10]
    # Spread over the window: the server closes a share a tick, never all at once.
    first = [e for e in log if e[4] < 0.1]
    assert len(first) < len(log) / 4, len(first)
    # The push reached sessions that were open then, and every one closed after it got it.
    assert reached > 0
    for kind, got, code, _, at in log:
        if kind in ("raw", "stomp") and at > pushed_at + 0.5:
            bodies = [m if kind == "raw" else parse(m)[2].decode() for m in got]
            assert "during the drain" in bodies, (kind, at, pushed_at)
    assert s.proc.wait(15) == 0


def test_a_second_sigterm_closes_the_rest_at_once(make_server):
    s = make_server("--shards", "2", config=CONFIG.replace("drain_ms = 4000", "drain_ms = 60000"))

    async def main():
        clients = await asyncio.gather(*[websockets.connect(f"{s.url}/ws?topic=t") for _ in range(200)])
        until(lambda: s.stats()["connections"] >= 200, 20, "every session")
        t0 = [time.monotonic()]
        log = []
        watchers = [asyncio.create_task(watch("raw", ws, t0, log)) for ws in clients]
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while not log and time.monotonic() < deadline:  # the event loop runs the watchers
            await asyncio.sleep(0.05)
        assert log, "no session was drained"
        s.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*watchers), 30)
        return log

    log = asyncio.run(main())
    assert len(log) == 200 and all(code == 1012 for _, _, code, _, _ in log)
    assert s.proc.wait(15) == 0
