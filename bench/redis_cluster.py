#!/usr/bin/env python3
"""Cross-node delivery through one Redis and through a 3-master Redis Cluster (sharded pub/sub),
same load, same run (issue #33): node A takes the publishes on its admin socket, node B holds
the subscribers, so every delivery crossed Redis. Prints, per Redis kind, the publishes and
deliveries per second `ringcast-bench raw` achieved, its latency, and the CPU the Redis
processes spent per published message (from /proc, summed over every redis-server).

    python3 bench/redis_cluster.py [--rate 20000] [--duration 20] [--topics 2000]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *cmd):
    return subprocess.run(["redis-cli", "-p", str(port), *cmd], capture_output=True,
                          text=True).stdout.strip()


def wait(cond, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def cpu_seconds(pids):
    total = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def readyz(sock):
    """The status of `GET /readyz` on an admin socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = s.recv(64).decode(errors="replace")
    return int(head.split()[1]) if head.startswith("HTTP/") else 0


def start_redis(workdir, *args):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save",
                             "", "--appendonly", "no", "--dir", workdir, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: cli(port, "ping") == "PONG", 10, "redis-server")
    return port, proc


def calls(ports):
    """Commands Redis ran so far (`INFO commandstats`), summed over `ports`."""
    total = 0
    for p in ports:
        for line in cli(p, "info", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def start_redis_kind(kind, workdir):
    if kind == "single":
        port, proc = start_redis(workdir)
        return f'redis = "redis://127.0.0.1:{port}"', [(port, proc)]
    procs, ports = [], []
    for i in range(6):
        d = os.path.join(workdir, f"n{i}")
        os.mkdir(d)
        port, proc = start_redis(d, "--cluster-enabled", "yes", "--cluster-config-file",
                                 "nodes.conf", "--cluster-port", str(free_port()))
        procs.append((port, proc))
        ports.append(port)
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "1", "--cluster-yes"], check=True,
                   capture_output=True, timeout=60)
    wait(lambda: all("cluster_state:ok" in cli(p, "cluster", "info") for p in ports), 30,
         "the Redis Cluster")
    seeds = ", ".join(f'"redis://127.0.0.1:{p}"' for p in ports[:2])
    return f"redis_cluster = [{seeds}]", procs


def start_node(workdir, name, cluster_line, max_connections):
    conf = os.path.join(workdir, f"{name}.toml")
    with open(conf, "w") as f:
        f.write(f"[cluster]\n{cluster_line}\n")
    port, sock = free_port(), os.path.join(workdir, f"{name}.sock")
    log = open(os.path.join(workdir, f"{name}.log"), "w")
    proc = subprocess.Popen([f"{BIN}/ringcast", "serve", "--config", conf, "--listen",
                             f"127.0.0.1:{port}", "--admin-socket", sock, "--no-auth", "--shards",
                             "1", "--max-connections", str(max_connections)],
                            stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: os.path.exists(sock), 10, f"node {name}")
    return port, sock, proc


def run(kind, args):
    workdir = tempfile.mkdtemp(prefix=f"rc-bench-{kind}-")
    procs = []
    try:
        line, redis = start_redis_kind(kind, workdir)
        procs += [p for _, p in redis]
        masters = [port for port, _ in redis if cli(port, "role").splitlines()[:1] == ["master"]]
        pids = {port: p.pid for port, p in redis}
        _, sock_a, a = start_node(workdir, "a", line, 100)
        port_b, sock_b, b = start_node(workdir, "b", line, args.topics + 100)
        procs += [a, b]
        for sock in (sock_a, sock_b):
            wait(lambda: readyz(sock) == 200, 20, "the nodes to be ready")
        out = os.path.join(workdir, "bench.json")
        before = {port: cpu_seconds([pid]) for port, pid in pids.items()}
        calls_before = calls(masters)
        r = subprocess.run([f"{BIN}/ringcast-bench", "raw", "--url",
                            f"ws://127.0.0.1:{port_b}/ws?topic=c", "--admin-socket", sock_a,
                            "--admin-socket", sock_b, "-n", str(args.topics), "--topics",
                            str(args.topics), "--messages", "0", "--rate", str(args.rate),
                            "--batch", str(args.batch), "--duration", str(args.duration),
                            "--timeout", "60", "--json", out], capture_output=True, text=True)
        spent = {port: cpu_seconds([pid]) - before[port] for port, pid in pids.items()}
        ran = calls(masters) - calls_before
        redis_cpu = sum(spent.values())
        master_cpu = sum(spent[p] for p in masters)
        if r.returncode != 0:
            sys.exit(f"ringcast-bench failed: {r.stderr[-2000:]}")
        res = json.load(open(out))
        s, lat = res["sustained"], res["latency_ms"]
        # `rate_achieved` is over the time the publishes really took (the box may not keep up).
        seconds = s["publishes"] / max(1.0, s["rate_achieved"])
        n = max(1, s["publishes"])
        return {
            "redis": kind,
            "publishes": s["publishes"],
            "publish_rate": round(s["rate_achieved"]),
            "delivered": s["delivered"],
            "expected": s["expected"],
            "deliveries_per_s": round(s["delivered"] / seconds),
            "p50_ms": round(lat["p50"], 3), "p99_ms": round(lat["p99"], 3),
            "redis_cpu_s": round(redis_cpu, 2),
            "redis_cpu_us_per_publish": round(redis_cpu * 1e6 / n, 1),
            "masters_cpu_us_per_publish": round(master_cpu * 1e6 / n, 1),
            "master_cpu_share": [round(spent[p] / max(1e-9, master_cpu), 2) for p in masters],
            "commands_per_publish": round(ran / n, 3),
        }
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--topics", type=int, default=2000)
    ap.add_argument("--kinds", default="single,cluster")
    args = ap.parse_args()
    for kind in args.kinds.split(","):
        print(json.dumps(run(kind, args)), flush=True)


if __name__ == "__main__":
    main()
