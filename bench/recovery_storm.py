#!/usr/bin/env python3
"""Issue #17's reconnect storm: N raw clients (default 10,000) over T topics with history drop
at once while M messages per topic are published, then all reconnect at the same moment with
`since=` and must each get the notice (`recovered: true`) and exactly what they missed. Prints
the time from the first reconnect to the last client fully recovered, as JSON.

With `--cluster`, a redis-server and two nodes: the clients take their positions on node A,
the missed messages are published there, and everyone reconnects to node B, which holds
nothing for these topics: it reads Redis, once per topic if its cache does its job (the
result says how many reads per reconnect).

Usage: bench/recovery_storm.py [--clients N] [--topics T] [--missed M] [--cluster]
(starts its own `ringcast serve` (and redis-server) from target/release; loopback only)."""
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ringcast")


def admin(sock, body):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    data = json.dumps(body).encode()
    s.sendall(f"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    assert out.startswith(b"HTTP/1.1 200"), out[:200]


def publish_round(sock, topics, tag):
    items = [{"destination": f"/topic/storm-{t}", "body": f"{tag}-{t}"} for t in range(topics)]
    for i in range(0, len(items), 100):
        admin(sock, items[i:i + 100])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_node(d, name, history, redis_url, procs):
    cfg = os.path.join(d, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write('[auth]\nenabled = false\n[limits]\nmax_pending_per_ip = 0\n' + history)
        if redis_url:
            f.write(f'[cluster]\nredis = "{redis_url}"\n')
    port = free_port()
    sock = os.path.join(d, f"{name}.sock")
    procs.append(subprocess.Popen(
        [BIN, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}", "--admin-socket", sock],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, f"{name}.log"), "w")))
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return port, sock


def history_stats(sock):
    out = subprocess.run([BIN, "stats", "--admin-socket", sock], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out).get("history", {})


async def main(a):
    d = tempfile.mkdtemp(prefix="ringcast-storm-")
    history = (f'[projects.default.history]\nsize = {max(100, a.missed * 2)}\nttl_ms = 300000\n'
               'topics = ["storm-*"]\n')
    procs = []
    redis_url = None
    if a.cluster:
        rport = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL))
        time.sleep(0.5)
        redis_url = f"redis://127.0.0.1:{rport}"
    try:
        port, sock = start_node(d, "a", history, redis_url, procs)
        back_port, back_sock = (start_node(d, "b", history, redis_url, procs) if a.cluster
                                else (port, sock))
        url = f"ws://127.0.0.1:{port}/ws"
        back_url = f"ws://127.0.0.1:{back_port}/ws"
        sem = asyncio.Semaphore(500)

        async def first(i):
            async with sem:
                ws = await websockets.connect(f"{url}?topic=storm-{i % a.topics}&positions=1",
                                              open_timeout=60, compression=None)
            return ws

        conns = await asyncio.gather(*(first(i) for i in range(a.clients)))
        await asyncio.sleep(0.5)
        publish_round(sock, a.topics, "seen")
        positions = []
        for ws in conns:
            m = json.loads(await asyncio.wait_for(ws.recv(), 30))
            positions.append((m["epoch"], m["offset"]))
        await asyncio.gather(*(ws.close() for ws in conns))
        for r in range(a.missed):
            publish_round(sock, a.topics, f"missed{r}")

        done = []

        async def back(i):
            topic = f"storm-{i % a.topics}"
            epoch, offset = positions[i]
            async with sem:
                ws = await websockets.connect(f"{back_url}?topic={topic}&since={topic}:{epoch}:{offset}",
                                              open_timeout=60, compression=None, max_queue=None)
            notice = json.loads(await asyncio.wait_for(ws.recv(), 60))
            got = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in range(a.missed)]
            done.append(time.time())
            ok = notice["recovered"] and [g["offset"] for g in got] == list(range(offset + 1, offset + 1 + a.missed))
            await ws.close()
            return ok

        t0 = time.time()
        oks = await asyncio.gather(*(back(i) for i in range(a.clients)))
        last = max(done) - t0
        reads = history_stats(back_sock).get("redis_reads", 0)
        result = {"clients": a.clients, "topics": a.topics, "missed_per_client": a.missed,
                  "all_recovered": all(oks), "recovered": sum(oks),
                  "seconds_until_all_recovered": round(last, 3),
                  "redis_reads": reads, "redis_reads_per_reconnect": reads / a.clients,
                  "note": ("two nodes on redis-server: positions taken on node A, "
                           "everyone reconnects to node B") if a.cluster
                  else "standalone node: history in memory"}
        print(json.dumps(result, indent=2))
        return 0 if all(oks) else 1
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--topics", type=int, default=100)
    p.add_argument("--missed", type=int, default=20)
    p.add_argument("--cluster", action="store_true")
    sys.exit(asyncio.run(main(p.parse_args())))
