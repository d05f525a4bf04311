"""`ringcast upgrade` (issue #31): a running server hands its listeners and every connection to
a new process of a copy of its binary, three times in a row, while a publisher pushes
throughout. Raw clients (with and without permessage-deflate), a STOMP session beating every
second and a SockJS-over-WebSocket STOMP session stay connected; each gets every message once,
in order. Failed upgrades (a binary that exits at once, a configuration the new process
refuses, a binary that is not there) leave the old server serving, and the command says why.

The test process is a child subreaper, so the old processes (children of each other after the
first) are reaped here and their exit codes read."""
import asyncio
import ctypes
import json
import os
import shutil
import signal
import socket
import threading
import time

import pytest
import websockets

from conftest import BIN, until

CONFIG = """
[compression]
enabled = true
min_bytes = 1

[stomp]
heartbeat_send_ms = 1000
heartbeat_receive_ms = 1000
"""

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(autouse=True)
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def exit_code(pid, timeout=15):
    """Waits for `pid` (a child or an orphan reparented here) and returns its exit code."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} did not exit within {timeout} s")


def admin_publish(sock_path, body):
    """One publish over the admin socket: the status (0 if the socket could not be reached)."""
    data = json.dumps({"destination": "/topic/news", "body": body}).encode()
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return int(out.split()[1])
    except (OSError, IndexError, ValueError):
        return 0


class Feeder(threading.Thread):
    """Calls `step` every `pause` seconds until stopped (for `limit` seconds at most)."""

    def __init__(self, step, pause, limit=120):
        super().__init__(daemon=True)
        self.step, self.pause, self.limit, self.stop = step, pause, limit, threading.Event()

    def run(self):
        deadline = time.time() + self.limit
        while not self.stop.is_set() and time.time() < deadline:
            self.step()
            time.sleep(self.pause)


class Publisher(Feeder):
    """Pushes 0, 1, 2, … to /topic/news until stopped, each until accepted (503 and an
    unreachable socket are retried): every number is accepted exactly once."""

    def __init__(self, sock_path, pad=0):
        super().__init__(self.publish, 0.002)
        self.sock, self.sent, self.refused = sock_path, 0, 0
        self.pad = pad

    def body(self, n):
        """`n`, and every seventh one `pad` bytes longer (writes long enough to be cut)."""
        return f"{n}:{'x' * self.pad}" if self.pad and n % 7 == 0 else str(n)

    def publish(self):
        status = admin_publish(self.sock, self.body(self.sent))
        if status == 200:
            self.sent += 1
        else:
            assert status in (0, 503), f"publish answered {status}"
            self.refused += 1


def run_reaping(coro, pids, timeout=150):
    """Runs `coro`, then stops the successors in `pids[1:]` (`pids[0]` is the fixture's)."""
    try:
        asyncio.run(asyncio.wait_for(coro, timeout))
    finally:
        for pid in pids[1:]:
            try:
                os.kill(pid, signal.SIGTERM)
                exit_code(pid)
            except (ProcessLookupError, ChildProcessError):
                pass


def first_difference(got, want):
    return next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


async def news_reader(s):
    """A raw subscriber to /topic/news, subscribed: `got` fills with what it reads (the warm-up
    push left out) until "end"."""
    ws = await websockets.connect(f"{s.url}/ws?topic=news")
    until(lambda: s.push("news", "warm-up") == 1, what="the subscriber")
    got = []

    async def read():
        async for m in ws:
            if m == "end":
                return
            if m != "warm-up":
                got.append(m)

    return ws, got, asyncio.create_task(read())


async def upgrade_when(s, copy, pids, count, more):
    """Once `count()` has grown by `more`, upgrades `s` to `copy`: the report, once the old
    process exited 0 (its successor's pid appended to `pids`)."""
    before = count()
    await asyncio.to_thread(until, lambda: count() >= before + more, 30, "traffic before the upgrade")
    r = await asyncio.to_thread(upgrade, s, copy)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert await asyncio.to_thread(exit_code, pids[-1]) == 0, "the old process exits 0"
    pids.append(report["pid"])
    return report


def alive_pid(s):
    return s.stats()["pid"]


def upgrade(s, binary, *extra):
    return s.cli("upgrade", "--binary", binary, "--json", *extra, check=False)


@pytest.mark.parametrize("io", ["multishot", "compat"])
def test_three_upgrades_in_a_row_lose_no_connection_and_no_message(make_server, tmp_path, io):
    args = ["--no-auth", "--shards", "2"] + (["--io-compat"] if io == "compat" else [])
    s = make_server(*args, config=CONFIG)
    copy = str(tmp_path / "ringcast-next")
    shutil.copy(BIN, copy)
    pids = [s.proc.pid]

    async def main():
        raw = [await websockets.connect(f"{s.url}/ws?topic=news", compression=None if i % 2 else "deflate")
               for i in range(8)]
        assert "permessage-deflate" in raw[0].response.headers.get("Sec-WebSocket-Extensions", "")
        stomp = await websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"])
        await stomp.send("CONNECT\naccept-version:1.2\nheart-beat:1000,1000\n\n\0")
        assert (await asyncio.wait_for(stomp.recv(), 10)).startswith("CONNECTED")
        await stomp.send("SUBSCRIBE\nid:s1\ndestination:/topic/news\n\n\0")
        sockjs = await websockets.connect(f"{s.url}/ws/000/upgrade1/websocket", compression=None)
        assert await asyncio.wait_for(sockjs.recv(), 10) == "o"
        await sockjs.send(json.dumps(["CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0"]))
        assert json.loads((await asyncio.wait_for(sockjs.recv(), 10))[1:])[0].startswith("CONNECTED")
        await sockjs.send(json.dumps(["SUBSCRIBE\nid:j1\ndestination:/topic/news\n\n\0"]))
        until(lambda: s.stats()["connections"] == 10, what="10 connections")
        # Subscriptions are in place once a push reaches all ten.
        until(lambda: s.push("news", "warm-up") == 10, what="every subscription")

        got = {i: [] for i in range(10)}
        beats = [0]  # beats seen while the publisher ran: none needed, pushes count

        async def read_raw(i, ws):
            async for m in ws:
                got[i].append(m)
                if m == "end":
                    return

        async def read_stomp():
            async for m in stomp:
                if m == "\n":
                    beats[0] += 1
                    continue
                assert m.startswith("MESSAGE\n"), m
                body = m.split("\n\n", 1)[1].rstrip("\0")
                got[8].append(body)
                if body == "end":
                    return

        async def beat():
            while True:
                await stomp.send("\n")
                await asyncio.sleep(0.3)

        async def read_sockjs():
            async for m in sockjs:
                if m == "h":
                    continue
                assert m.startswith("a"), m
                for f in json.loads(m[1:]):
                    body = f.split("\n\n", 1)[1].rstrip("\0")
                    got[9].append(body)
                    if body == "end":
                        return

        readers = [asyncio.create_task(read_raw(i, ws)) for i, ws in enumerate(raw)]
        readers += [asyncio.create_task(read_stomp()), asyncio.create_task(read_sockjs())]
        beater = asyncio.create_task(beat())
        pub = Publisher(s.sock)
        pub.start()
        try:
            for _ in range(3):
                report = await upgrade_when(s, copy, pids, lambda: pub.sent, 50)
                assert report["connections"] == 10 and report["closed"] == 0, report
                st = s.stats()
                assert st["pid"] == report["pid"] and st["connections"] == 10
                assert st["upgrade"]["from_pid"] == pids[-2] and st["upgrade"]["connections"] == 10
            before = pub.sent
            await asyncio.to_thread(until, lambda: pub.sent >= before + 50, 30, "publishes after the last upgrade")
        finally:
            pub.stop.set()
            await asyncio.to_thread(pub.join)
        assert admin_publish(s.sock, "end") == 200
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        # With the pushes over, the last process's beats show (one a second), and the
        # session's own beats keep it open for longer than two periods.
        for _ in range(3):
            assert await asyncio.wait_for(stomp.recv(), 10) == "\n"
            beats[0] += 1
        beater.cancel()
        want = [str(i) for i in range(pub.sent)] + ["end"]
        for i, g in got.items():
            g = [m for m in g if m != "warm-up"]
            assert g == want, f"client {i}: {len(g)} messages, first difference at {first_difference(g, want)}"
        for ws in raw + [stomp, sockjs]:
            assert ws.close_code is None, f"a client saw close {ws.close_code}"
        for ws in raw + [stomp, sockjs]:
            await ws.close()

    run_reaping(main(), pids)


TLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tls")


@pytest.mark.parametrize("io", ["multishot", "compat"])
def test_wss_sessions_move_with_their_keys(make_server, tmp_path, io):
    """TLS 1.3 sessions (raw with and without deflate, STOMP with beats, echo) move with their
    keys and sequence numbers through three upgrades while long and short pushes flow; a TLS
    1.2 session, which stays in rustls, is closed with 1012 instead."""
    import ssl
    args = ["--no-auth", "--shards", "2", "--echo", "--tls-cert", os.path.join(TLS, "server.pem"),
            "--tls-key", os.path.join(TLS, "server.key")] + (["--io-compat"] if io == "compat" else [])
    s = make_server(*args, config=CONFIG)
    url = f"wss://127.0.0.1:{s.port}"
    copy = str(tmp_path / "ringcast-next")
    shutil.copy(BIN, copy)
    pids = [s.proc.pid]

    def ctx(max_version=None):
        c = ssl.create_default_context(cafile=os.path.join(TLS, "ca.pem"))
        if max_version:
            c.maximum_version = max_version
        return c

    async def main():
        raw = [await websockets.connect(f"{url}/ws?topic=news", ssl=ctx(), max_size=None,
                                        compression=None if i % 2 else "deflate") for i in range(4)]
        stomp = await websockets.connect(f"{url}/ws", subprotocols=["v12.stomp"], ssl=ctx(), max_size=None)
        await stomp.send("CONNECT\naccept-version:1.2\nheart-beat:1000,1000\n\n\0")
        assert (await asyncio.wait_for(stomp.recv(), 10)).startswith("CONNECTED")
        await stomp.send("SUBSCRIBE\nid:s1\ndestination:/topic/news\n\n\0")
        echo = await websockets.connect(f"{url}/echo", ssl=ctx(), max_size=None)
        old = await websockets.connect(f"{url}/ws?topic=news", ssl=ctx(ssl.TLSVersion.TLSv1_2))
        assert old.transport.get_extra_info("ssl_object").version() == "TLSv1.2"
        until(lambda: s.stats()["connections"] == 7, what="7 connections")
        until(lambda: s.push("news", "warm-up") == 6, what="every subscription")

        got = {i: [] for i in range(5)}

        async def read(i, ws, unwrap):
            async for m in ws:
                if m == "\n":
                    continue
                body = unwrap(m)
                got[i].append(body)
                if body == "end":
                    return

        def stomp_body(m):
            assert m.startswith("MESSAGE\n"), m[:80]
            return m.split("\n\n", 1)[1].rstrip("\0")

        async def beat():
            while True:
                await stomp.send("\n")
                await asyncio.sleep(0.3)

        readers = [asyncio.create_task(read(i, ws, lambda m: m)) for i, ws in enumerate(raw)]
        readers.append(asyncio.create_task(read(4, stomp, stomp_body)))
        beater = asyncio.create_task(beat())
        pub = Publisher(s.sock, pad=300_000)
        pub.start()
        try:
            for n in range(3):
                report = await upgrade_when(s, copy, pids, lambda: pub.sent, 30)
                assert (report["connections"], report["closed"]) == (6, 1 if n == 0 else 0), report
                # Both directions' keys moved: a message of many records each way.
                big = f"echo {n} " + "é" * 30_000
                await echo.send(big)
                assert await asyncio.wait_for(echo.recv(), 10) == big
            before = pub.sent
            await asyncio.to_thread(until, lambda: pub.sent >= before + 30, 30, "publishes after the last upgrade")
        finally:
            pub.stop.set()
            await asyncio.to_thread(pub.join)
        assert admin_publish(s.sock, "end") == 200
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        beater.cancel()
        want = [pub.body(i) for i in range(pub.sent)] + ["end"]
        for i, g in got.items():
            g = [m for m in g if m != "warm-up"]
            assert len(g) == len(want) and g == want, f"client {i}: {len(g)} of {len(want)} messages"
        # The TLS 1.2 session was told to come back, in a close it could read.
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(old.recv(), 10)
        assert old.close_code == 1012, old.close_code
        for ws in raw + [stomp, echo]:
            assert ws.close_code is None, f"a client saw close {ws.close_code}"
        assert s.stats()["tls_failures"] == 0
        for ws in raw + [stomp, echo]:
            await ws.close()

    run_reaping(main(), pids)


def test_a_failed_upgrade_leaves_the_old_server_serving(make_server, tmp_path):
    path = tmp_path / "ringcast.toml"
    path.write_text(CONFIG)
    s = make_server("--no-auth", "--shards", "2", "--config", str(path))
    pid = alive_pid(s)

    async def main():
        ws = await websockets.connect(f"{s.url}/ws?topic=news")
        until(lambda: s.push("news", "x") == 1, what="the subscriber")
        assert await asyncio.wait_for(ws.recv(), 5) == "x"

        r = upgrade(s, "/bin/false")
        assert r.returncode != 0 and "exited" in r.stderr, r.stderr
        r = upgrade(s, str(tmp_path / "no-such-binary"))
        assert r.returncode != 0 and "no-such-binary" in r.stderr, r.stderr
        # The new process reads the configuration again and refuses it.
        path.write_text("[server\nthis is not TOML")
        r = upgrade(s, BIN)
        assert r.returncode != 0 and "exited" in r.stderr, r.stderr
        # A network API on an address another socket holds: refused before anything moves.
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path.write_text(CONFIG + f'\n[api]\nlisten = "127.0.0.1:{taken.getsockname()[1]}"\n')
        r = upgrade(s, BIN)
        assert r.returncode != 0 and "api.listen" in r.stderr, r.stderr
        taken.close()
        path.write_text(CONFIG)

        assert alive_pid(s) == pid and s.proc.poll() is None
        assert s.push("news", "still here") == 1
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"
        assert ws.close_code is None
        await ws.close()

    asyncio.run(asyncio.wait_for(main(), 60))


# A cluster link to a Redis that is not there: it retries in the background.
CLUSTER = """
[cluster]
redis = "redis://127.0.0.1:1"
"""


def test_what_cannot_move_yet_is_refused_with_the_reason(make_server):
    s = make_server("--no-auth", config=CLUSTER)
    r = upgrade(s, BIN)
    assert r.returncode != 0 and "[cluster]" in r.stderr and "#31" in r.stderr, r.stderr
    assert s.proc.poll() is None


class Broker:
    """A real broker for `[[ingest.*]]`: its configuration, and a way to add messages."""

    def __init__(self, kind, tmp_path):
        from test_ingest import publish_json
        self.kind, self.body = kind, lambda i: publish_json("news", str(i))
        if kind == "redis_stream":
            from test_cluster import Redis
            self.server = Redis(str(tmp_path))
            self.config = f"""
[[ingest.redis_stream]]
url = "{self.server.url}"
stream = "pushes"
group = "ringcast"
consumer = "node-1"
batch = 50
"""
        elif kind == "postgres":
            from test_outbox import OUTBOX_SQL, Postgres
            self.server = Postgres(tmp_path)
            self.server.sql(OUTBOX_SQL)
            self.config = f"""
[[ingest.postgres]]
url = "{self.server.url}"
batch = 50
poll_ms = 50
"""
        else:
            from test_ingest import NatsServer, nats_config, nats_publish
            self.server = NatsServer(tmp_path)
            self.server.start()
            asyncio.run(nats_publish(self.server, []))  # the stream
            self.config = nats_config(self.server).replace("batch = 200", "batch = 50")

    def add(self, first, n):
        bodies = [self.body(i) for i in range(first, first + n)]
        if self.kind == "redis_stream":
            from test_ingest import xadd_many
            xadd_many(self.server, "pushes", bodies)
        elif self.kind == "postgres":
            from test_outbox import quote
            self.server.sql("INSERT INTO ringcast_outbox (payload) VALUES "
                            + ", ".join(f"({quote(b)}::jsonb)" for b in bodies) + ";")
        else:
            from test_ingest import nats_publish
            asyncio.run(nats_publish(self.server, bodies))


@pytest.mark.parametrize("kind", ["redis_stream", "postgres", "nats"])
def test_a_consumer_hands_over_without_losing_or_repeating_a_message(make_server, tmp_path, kind):
    """`[[ingest.*]]` on a real broker: messages added throughout three upgrades reach the
    subscriber once each, in order. The old process stops fetching when the hand-over starts;
    what it had fetched and not handed out it gives back (a Redis consumer's pending entries, a
    PostgreSQL claim ended, NATS messages NAKed), and the successor's consumers start once the
    old ones are idle."""
    broker = Broker(kind, tmp_path)
    s = make_server("--no-auth", "--shards", "2", config=broker.config)
    copy = str(tmp_path / "ringcast-next")
    shutil.copy(BIN, copy)
    pids = [s.proc.pid]
    added = [0]

    def produce():
        broker.add(added[0], 10)
        added[0] += 10

    async def main():
        ws, got, reader = await news_reader(s)
        t = Feeder(produce, 0.01, limit=90)
        t.start()
        try:
            for _ in range(3):
                # Entries added, and the ones before them delivered.
                await upgrade_when(s, copy, pids, lambda: min(added[0] - 100, len(got)), 100)
        finally:
            t.stop.set()
            await asyncio.to_thread(t.join)
        want = [str(i) for i in range(added[0])]
        deadline = time.time() + 30
        while len(got) < len(want) and time.time() < deadline:
            await asyncio.sleep(0.05)
        j = first_difference(got, want)
        assert got == want, f"{len(got)} of {len(want)}, first difference at {j}: {got[max(0, j - 3):j + 15]}"
        assert ws.close_code is None
        reader.cancel()
        await ws.close()

    try:
        run_reaping(main(), pids)
    finally:
        broker.server.stop()


API_KEY = "upgrade-api-key-0123456789"


def api_publish(port, conn, body):
    """One publish through the network API on keep-alive connection `conn[0]` (reopened when
    the server closed it): the status, 0 for a connection that failed."""
    import http.client
    data = json.dumps({"destination": "/topic/news", "body": body})
    for _ in range(2):
        if conn[0] is None:
            conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn[0].request("POST", "/publish", data, {"Authorization": f"Bearer {API_KEY}",
                                                       "Content-Type": "application/json"})
            r = conn[0].getresponse()
            r.read()
            if r.getheader("Connection", "").lower() == "close":
                conn[0].close()
                conn[0] = None
            return r.status
        except (OSError, http.client.HTTPException):
            conn[0].close()
            conn[0] = None
    return 0


def test_the_network_api_listener_moves_too(make_server, tmp_path):
    """`[api] listen`: the listener itself goes to the new process (same port, nothing in its
    queue refused); a backend publishing over HTTP keep-alive throughout sees only 200s and
    retryable 503s, and a subscriber gets every accepted message once, in order."""
    from conftest import free_port, wait_port
    port = free_port()
    cfg = f"""
[api]
listen = "127.0.0.1:{port}"

[api.keys.backend]
key = "{API_KEY}"
scopes = ["publish", "metrics"]
"""
    s = make_server("--no-auth", "--shards", "2", config=cfg)
    wait_port(port)
    copy = str(tmp_path / "ringcast-next")
    shutil.copy(BIN, copy)
    pids = [s.proc.pid]
    sent, statuses, conn = [], [], [None]

    def publish():
        status = api_publish(port, conn, str(len(sent)))
        statuses.append(status)
        if status == 200:
            sent.append(len(sent))

    async def main():
        ws, got, reader = await news_reader(s)
        t = Feeder(publish, 0.002, limit=90)
        t.start()
        try:
            for _ in range(3):
                await upgrade_when(s, copy, pids, lambda: len(sent), 50)
            before = len(sent)
            await asyncio.to_thread(until, lambda: len(sent) >= before + 50, 30, "API publishes after")
        finally:
            t.stop.set()
            await asyncio.to_thread(t.join)
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert api_publish(port, [None], "end") == 200
        await asyncio.wait_for(reader, 30)
        assert got == [str(i) for i in range(len(sent))]
        assert ws.close_code is None
        await ws.close()

    run_reaping(main(), pids)


def test_doctor_says_whether_an_upgrade_would_work(make_server):
    s = make_server("--no-auth")
    line = [l for l in s.cli("doctor", "--connections", "1000").stdout.splitlines() if "live upgrade" in l]
    assert line and "[ OK ]" in line[0] and str(s.proc.pid) in line[0], line
    clustered = make_server("--no-auth", config=CLUSTER)
    out = clustered.cli("doctor", "--connections", "1000").stdout
    assert "[WARN] live upgrade" in out and "[cluster]" in out, out


def test_systemd_follows_the_service_to_the_new_process(make_server, tmp_path, monkeypatch):
    """`Type=notify`: READY=1 once serving; the successor names itself MAINPID before the old
    process exits (what keeps `systemctl reload` from stopping the service)."""
    path = str(tmp_path / "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    s = make_server("--no-auth")
    assert rx.recv(256) == b"READY=1"
    copy = str(tmp_path / "ringcast-next")
    shutil.copy(BIN, copy)
    r = upgrade(s, copy)
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)["pid"]
    try:
        assert rx.recv(256) == f"MAINPID={new}\nREADY=1".encode()
        assert exit_code(s.proc.pid) == 0
    finally:
        os.kill(new, signal.SIGTERM)
        exit_code(new)


HISTORY = """
[projects.default.history]
size = 100
ttl_ms = 60000
topics = ["news.*"]
"""


def test_history_moves_so_a_client_recovers_after_the_upgrade(make_server, tmp_path):
    from conftest import frame, parse
    s = make_server("--no-auth", config=HISTORY)
    copy = str(tmp_path / "ringcast-next")
    shutil.copy(BIN, copy)

    async def session(headers):
        ws = await websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"])
        await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x"}))
        assert parse(await asyncio.wait_for(ws.recv(), 10))[0] == "CONNECTED"
        await ws.send(frame("SUBSCRIBE", {"id": "n", "destination": "/topic/news.a", **headers}))
        cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 10))
        assert cmd == "RECEIPT", cmd
        ws.receipt = h
        return ws

    async def main():
        live = await session({"receipt": "in"})
        assert s.push("news.a", "first") == 1
        _, h, body = parse(await asyncio.wait_for(live.recv(), 5))
        assert body == b"first" and h["x-offset"] == "1"
        epoch = h["x-epoch"]
        for i in range(3):
            assert s.push("news.a", f"before {i}") == 1
        r = await asyncio.to_thread(upgrade, s, copy)
        assert r.returncode == 0, r.stderr
        new = json.loads(r.stdout)["pid"]
        try:
            assert await asyncio.to_thread(exit_code, s.proc.pid) == 0
            # The session that moved goes on in the same epoch, at the next offset.
            assert s.push("news.a", "after") == 1
            got = [parse(await asyncio.wait_for(live.recv(), 5)) for _ in range(4)]
            assert [(h["x-epoch"], h["x-offset"], b) for _, h, b in got] == \
                [(epoch, str(i + 2), f"before {i}".encode()) for i in range(3)] + [(epoch, "5", b"after")]
            # A client back after the upgrade recovers what it missed from the moved history.
            back = await session({"x-recover-since": f"{epoch}:1", "receipt": "r"})
            assert back.receipt["x-recovered"] == "true", back.receipt
            got = [parse(await asyncio.wait_for(back.recv(), 5)) for _ in range(4)]
            assert [b for _, _, b in got] == [f"before {i}".encode() for i in range(3)] + [b"after"]
            assert s.stats()["history"]["unrecovered"] == 0
            for ws in (live, back):
                await ws.close()
        finally:
            os.kill(new, signal.SIGTERM)
            exit_code(new)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_an_upgrade_to_another_shard_count_deals_the_connections_out(make_server, tmp_path):
    """`[server] shards` changed between upgrades (6 → 9 → 6): every connection moves and gets
    the next push, and every listener the new process has takes new connections."""
    path = tmp_path / "ringcast.toml"
    path.write_text("[server]\nshards = 6\n")
    s = make_server("--no-auth", "--config", str(path))
    pids = []

    async def main():
        wss = [await websockets.connect(f"{s.url}/ws?topic=news") for _ in range(40)]
        until(lambda: s.stats()["connections"] == 40, what="40 connections")
        for shards in (9, 6):
            path.write_text(f"[server]\nshards = {shards}\n")
            r = await asyncio.to_thread(upgrade, s, BIN)
            assert r.returncode == 0, r.stderr
            report = json.loads(r.stdout)
            assert report["connections"] == 40 and report["closed"] == 0, report
            pids.append(report["pid"])
            st = s.stats()
            assert st["shard_count"] == shards and st["connections"] == 40, st
            assert s.push("news", f"after {shards}") == 40
            assert {await asyncio.wait_for(w.recv(), 5) for w in wss} == {f"after {shards}"}
        more = [await websockets.connect(f"{s.url}/ws?topic=news") for _ in range(30)]
        until(lambda: s.stats()["connections"] == 70, what="70 connections")
        assert s.push("news", "last") == 70
        for w in wss + more:
            await w.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
        assert exit_code(s.proc.pid) == 0
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
                exit_code(pid)
            except (ProcessLookupError, ChildProcessError):
                pass
