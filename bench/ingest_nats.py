#!/usr/bin/env python3
"""Ingest rate from NATS JetStream: N publishes (the `/publish` JSON, to 10,000 topics) are put
in a stream first, then a fresh ringcast with `[[ingest.nats]]` consumes them; the rate is what
`ringcast stats` counts as received between its first and last change (polled every 100 ms).
Needs `nats-server` (Debian) and `nats-py`.

  bench/ingest_nats.py -n 200000 --batch 100 --batch 1000
"""
import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "ringcast")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def fill(url, n):
    import nats
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="PUSHES", subjects=["pushes", "pushes.dead"])
    for i in range(n):
        body = json.dumps({"project": "default", "destination": f"/topic/t{i % 10000}", "body": str(i)})
        await nc.publish("pushes", body.encode())
        if i % 10000 == 9999:
            await nc.flush()
    await nc.flush()
    info = await js.stream_info("PUSHES")
    await nc.close()
    return info.state.messages


def run(n, batch):
    work = tempfile.mkdtemp(prefix="ringcast-ingest-nats-")
    port = free_port()
    nats = subprocess.Popen([shutil.which("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port),
                             "-sd", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        wait_port(port)
        url = f"nats://127.0.0.1:{port}"
        stored = asyncio.run(fill(url, n))
        cfg = os.path.join(work, "ringcast.toml")
        with open(cfg, "w") as f:
            f.write(f'[[ingest.nats]]\nurl = "{url}"\nstream = "PUSHES"\nsubject = "pushes"\n'
                    f'consumer = "ringcast"\nbatch = {batch}\n')
        sock = os.path.join(work, "admin.sock")
        server = subprocess.Popen([BIN, "serve", "--no-auth", "--shards", "2", "--config", cfg,
                                   "--listen", f"127.0.0.1:{free_port()}", "--admin-socket", sock],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        deadline = time.time() + 300
        while time.time() < deadline:
            if os.path.exists(sock):
                out = subprocess.run([BIN, "stats", "--admin-socket", sock], capture_output=True, text=True)
                if out.returncode == 0:
                    got = json.loads(out.stdout)["ingest"]["received"]
                    samples.append((time.time(), got))
                    if got >= stored:
                        break
            time.sleep(0.1)
        moving = [s for s in samples if s[1] > 0]
        first = next(s for s in samples if s[1] > 0)
        last = moving[-1]
        before = samples[samples.index(first) - 1] if samples.index(first) > 0 else (first[0], 0)
        rate = (last[1] - before[1]) / max(last[0] - before[0], 1e-9)
        return {"batch": batch, "stored": stored, "received": last[1], "seconds": round(last[0] - before[0], 2),
                "rate": round(rate)}
    finally:
        if server:
            server.terminate()
            server.wait(10)
        nats.terminate()
        nats.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=200000)
    p.add_argument("--batch", type=int, action="append")
    a = p.parse_args()
    for b in a.batch or [100, 1000]:
        print(json.dumps(run(a.n, b)), flush=True)
