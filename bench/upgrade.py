#!/usr/bin/env python3
"""`ringcast upgrade` under load (issue #31's benchmark): N raw connections held by
`ringcast-bench raw` with sustained publishes over K topics; once they flow, the server is
upgraded to a copy of its binary. Prints (and writes as JSON with --json) the time from the
command to the new process serving, connections moved and closed, the deliveries expected and
made, the publish → delivery latency (a publish refused during the hand-over is tried again
with its first stamp, so the largest latency bounds the longest gap any client saw), and the
peak RSS of the old process, the new one and both together during the hand-over.

With --tls, the connections are `wss://` (TLS 1.3, the test certificate in tests/tls): each
session's keys move with it.

With --stomp, STOMP sessions instead: each CONNECTs with its own JWT, subscribes, and beats
every --heartbeat-ms both ways (the bench counts beats missed); the topics keep history.

Run from the repository root after `make build` (and `make tune` for large N):
    python3 bench/upgrade.py --connections 200000 --shards 12 --topics 2000 --rate 500
    python3 bench/upgrade.py --stomp --connections 100000 --shards 6 --topics 1000 --rate 500
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ringcast")
BENCH = os.path.join(ROOT, "target", "release", "ringcast-bench")


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid):
    """Children of any thread of `pid` (the successor is started by an admin thread)."""
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def stats(sock):
    r = subprocess.run([BIN, "stats", "--admin-socket", sock], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--upgrade-at", type=float, default=5.0, help="seconds into the publishes")
    ap.add_argument("--stomp", action="store_true")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--heartbeat-ms", type=int, default=10000)
    ap.add_argument("--json")
    a = ap.parse_args()
    libc = ctypes.CDLL(None)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the successor is reaped here
    d = tempfile.mkdtemp(prefix="ringcast-upgrade-bench-")
    sock = os.path.join(d, "admin.sock")
    copy = os.path.join(d, "ringcast-next")
    shutil.copy(BIN, copy)
    # A wrapper (a profiler around the binary, say) instead of the plain copy.
    copy = os.environ.get("UPGRADE_BINARY", copy)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(d, "server.log"), "w")
    cfg = os.path.join(d, "ringcast.toml")
    with open(cfg, "w") as f:
        if a.stomp:
            f.write(f"""[auth]\nenabled = true\nuser_claim = "sub"\n
[projects.bench]\njwt_alg = "HS256"\njwt_secret = "upgrade-bench-secret-not-for-production"\n
[projects.bench.history]\nsize = 100\nttl_ms = 300000\ntopics = ["u*"]\n
[stomp]\nheartbeat_send_ms = {a.heartbeat_ms}\nheartbeat_receive_ms = {a.heartbeat_ms}\n
[limits]\nmax_pending_per_ip = 0\n""")
        else:
            f.write("[auth]\nenabled = false\n")
    tls_dir = os.path.join(ROOT, "tests", "tls")
    tls = ["--tls-cert", os.path.join(tls_dir, "server.pem"),
           "--tls-key", os.path.join(tls_dir, "server.key")] if a.tls else []
    server = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--admin-socket", sock,
                               "--config", cfg, "--shards", str(a.shards), *tls,
                               "--max-connections", str(a.connections + 10000)],
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while not os.path.exists(sock) and time.time() < deadline:
        time.sleep(0.05)
    out = os.path.join(d, "bench.json")
    kind = ["stomp", "--config", cfg, "--heartbeat-ms", str(a.heartbeat_ms)] if a.stomp else ["raw"]
    project = "&project=bench" if a.stomp else ""
    scheme = "wss" if a.tls else "ws"
    bench = subprocess.Popen([BENCH, *kind, "--url", f"{scheme}://127.0.0.1:{port}/ws?topic=u{project}",
                              "--admin-socket", sock, "-n", str(a.connections), "--messages", "0",
                              "--topics", str(a.topics), "--rate", str(a.rate),
                              "--duration", str(a.duration), "--timeout", "300", "--json", out],
                             stderr=subprocess.PIPE, text=True)
    # The publishes start once every connection is up.
    deadline = time.time() + 600
    while time.time() < deadline:
        st = stats(sock)
        if st and st["connections"] >= a.connections:
            break
        time.sleep(0.2)
    time.sleep(a.upgrade_at)
    old = server.pid
    before = stats(sock)
    peak = {"old": rss(old), "new": 0, "both": rss(old)}
    done = threading.Event()

    def sample():
        while not done.is_set():
            o = rss(old)
            n = sum(rss(c) for c in children(old))
            peak["old"], peak["new"], peak["both"] = max(peak["old"], o), max(peak["new"], n), max(peak["both"], o + n)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    prof = None
    if os.environ.get("PERF"):
        prof = subprocess.Popen(["perf", "record", "-g", "-o", os.environ["PERF"], "-p", str(old)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    t0 = time.time()
    r = subprocess.run([BIN, "upgrade", "--binary", copy, "--json", "--timeout", "300s",
                        "--admin-socket", sock], capture_output=True, text=True, timeout=400)
    took = time.time() - t0
    done.set()
    sampler.join()
    if r.returncode != 0:
        raise SystemExit(f"upgrade failed: {r.stderr}")
    report = json.loads(r.stdout)
    old_exit = server.wait(30)
    if prof:
        prof.wait(30)
    after = stats(sock)
    _, err = bench.communicate(timeout=900)
    with open(out) as f:
        b = json.load(f)
    new = report["pid"]
    os.kill(new, signal.SIGTERM)
    os.waitpid(new, 0)
    result = {
        "connections": a.connections, "shards": a.shards, "topics": a.topics, "rate": a.rate,
        "command_seconds": took, "report": report, "old_exit": old_exit,
        "rss_before": before["rss_bytes"], "rss_after_new": after["rss_bytes"],
        "peak_rss_old": peak["old"], "peak_rss_new": peak["new"], "peak_rss_both": peak["both"],
        "mode": ("stomp" if a.stomp else "raw") + (" wss" if a.tls else ""),
        "bench_connected": b["connected"], "closed_by_server": b["closed_by_server"],
        "missed_heartbeats": b.get("missed_heartbeats"),
        "expected": b["sustained"]["expected"], "delivered": b["sustained"]["delivered"],
        "latency_ms": b["latency_ms"],
    }
    print(err.strip().splitlines()[-1] if err.strip() else "")
    log.flush()
    with open(os.path.join(d, "server.log")) as f:
        print("".join(line for line in f if "upgrade" in line or "handed" in line or "took over" in line))
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
