#!/usr/bin/env python3
"""Issue #17's memory goal (a kept message costs at most its body + 64 bytes): publishes N
messages of SIZE bytes over 100 topics with history (`mem-*`) through a running server's admin
socket and prints the server's RSS growth per kept message, as JSON.

Usage: ringcast serve --config CFG (with [projects.default.history] size = 10000,
ttl_ms = 3600000, topics = ["mem-*"], auth off) --admin-socket SOCK, then
bench/history_memory.py SOCK N SIZE (BENCHMARKS.md has the run)."""
import json
import os
import socket
import subprocess
import sys
import time

sock, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def post(items):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    data = json.dumps(items).encode()
    s.sendall(f"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    out = b""
    while c := s.recv(65536): out += c
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
def stats():
    return json.loads(subprocess.run([os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "ringcast"), "stats", "--admin-socket", sock], capture_output=True, text=True).stdout)
before = stats()["rss_bytes"]
body = "x" * size
B = 1000 if size < 512 else 100
for i in range(0, n, B):
    post([{"destination": f"/topic/mem-{(i + j) % 100}", "body": body} for j in range(B)])
time.sleep(1)
st = stats()
after = st["rss_bytes"]
print(json.dumps({"messages_kept": st["history"]["messages"], "body_bytes": size, "rss_before": before, "rss_after": after, "rss_per_message": (after - before) / st["history"]["messages"]}))
