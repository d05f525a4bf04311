"""Admission under a storm (issue #32, second part), with real sockets: 5,000 clients open
their WebSocket at once against `[limits] max_handshakes_per_s = 500`. None times out; the
excess is answered at once with 503 and a `Retry-After`, counted as `shed`; a client that
waits what it was told (plus its own jitter) gets in on its next try; the admin socket's
`/healthz`, polled by curl throughout, keeps answering. (How fast it answers is a benchmark
figure, `bench/storm.py`; here it only has to answer well inside its deadline.)"""
import asyncio
import random
import subprocess
import threading
import time

from conftest import until

CONFIG = """
[auth]
enabled = false
[limits]
max_handshakes_per_s = 500
max_pending_per_ip = 0
"""
N = 5000
UPGRADE = ("GET /ws?topic=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def client(port, i, log, held):
    """Connects until upgraded; logs (tries, hints, statuses)."""
    tries, hints, statuses = 0, [], []
    while tries < 5:
        tries += 1
        # From 127.0.0.x: the client's ports are spread over several source addresses.
        r, w = await asyncio.open_connection("127.0.0.1", port,
                                             local_addr=(f"127.0.0.{2 + i % 50}", 0))
        w.write(UPGRADE)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        status = int(head.split()[1])
        statuses.append(status)
        if status == 101:
            held.append(w)
            break
        retry = [l for l in head.decode().split("\r\n") if l.lower().startswith("retry-after:")]
        w.close()
        hint = int(retry[0].split(":")[1]) if retry else None
        hints.append(hint)
        if status != 503 or hint is None:
            break
        await asyncio.sleep(hint + random.uniform(0, 1))
    log.append((tries, hints, statuses))


def poll_healthz(sock, stop, seen):
    while not stop.is_set():
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                              "--max-time", "5", "--unix-socket", sock, "http://x/healthz"],
                             capture_output=True, text=True).stdout.split()
        seen.append((int(out[0]) if out else 0, float(out[1]) if len(out) > 1 else 99.0))
        stop.wait(0.05)


def test_a_burst_beyond_the_rate_is_shed_with_hints_and_all_get_in(make_server):
    s = make_server("--shards", "2", config=CONFIG)
    stop, seen = threading.Event(), []
    poller = threading.Thread(target=poll_healthz, args=(s.sock, stop, seen))
    poller.start()

    async def main():
        log, held = [], []
        await asyncio.wait_for(
            asyncio.gather(*[client(s.port, i, log, held) for i in range(N)]), 120)
        return log, held

    try:
        log, held = asyncio.run(main())
        until(lambda: s.stats()["connections"] >= N, 30, "every client connected")
    finally:
        stop.set()
        poller.join()
    assert len(log) == N
    statuses = [st for _, _, sts in log for st in sts]
    assert set(statuses) <= {101, 503}, set(statuses)
    assert sum(1 for _, _, sts in log if sts[-1] == 101) == N, "everybody got in"
    shed = [(tries, hints) for tries, hints, _ in log if tries > 1]
    # How many are shed depends on how fast this machine opens 5,000 sockets (at 500/s a burst
    # spread over 9 s would fit): only that some were is asserted.
    assert shed, f"none of {N} was shed at 500/s"
    assert all(1 <= h <= 60 for _, hints in shed for h in hints)
    second = sum(1 for tries, _ in shed if tries == 2)
    print(f"shed {len(shed)}, in on the second try {second}, hints up to "
          f"{max(h for _, hints in shed for h in hints)} s")
    # Hints promise each a second with room; a client this busy process wakes late can still
    # land in a full one, so most (not all) get in on the second try, and all do in the end.
    assert second >= 0.8 * len(shed), f"{second} of {len(shed)} got in on their second try"
    st = s.stats()
    assert st["shed"] == statuses.count(503)
    # Which process this is, and since when (the names a live upgrade reports under).
    assert st["pid"] == s.proc.pid and 0 <= time.time() - st["started_at"] < 600, st
    assert seen and all(code == 200 for code, _ in seen), seen
    print(f"/healthz answered {len(seen)} times, slowest {max(t for _, t in seen) * 1000:.1f} ms")
    assert max(t for _, t in seen) < 2.0, "the admin socket answers throughout"
