#!/usr/bin/env python3
"""Issue #37's two memory attacks against a fresh server each, with the figures printed as JSON
(BENCHMARKS.md, session 7): three 1 MiB NDJSON batches of `1\n` to the admin socket's
`POST /publish`, and 150 recovering SUBSCRIBE + UNSUBSCRIBE pairs from a client that never
reads, on a topic holding 100 × 60 KB. Starts the servers through tests/py/conftest.py.

  python3 bench/security_bounds.py        (after make build)"""
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "py"))
os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import socket, json, time, asyncio
from conftest import Server, admin
def rss(p):
    for l in open(f"/proc/{p}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])*1024
s = Server("--shards", "2", "--no-auth")
b = rss(s.proc.pid)
body = b"1\n" * 524288
for _ in range(3):
    k = socket.socket(socket.AF_UNIX); k.connect(s.sock)
    k.sendall(f"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n".encode()+body)
    out=b""
    while c:=k.recv(65536): out+=c
    k.close()
print(json.dumps({"rss_before": b, "rss_after_3_batches": rss(s.proc.pid), "answer_bytes": len(out), "status": out.split()[1].decode()}))
s.stop()
import websockets
from conftest import frame, parse
CFG = open("tests/py/test_security_wave2.py").read().split('HISTORY = """')[1].split('"""')[0]
def rss(p):
    for l in open(f"/proc/{p}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])*1024
s = Server("--shards", "1", config=CFG)
for _ in range(10):
    admin(s.sock, "POST", "/publish", [{"destination": "/topic/big", "body": "x"*60000}]*10)
async def epoch():
    async with websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"]) as ws:
        await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x"})); await ws.recv()
        await ws.send(frame("SUBSCRIBE", {"id": "0", "destination": "/topic/big", "x-recover-since": "none:0", "receipt": "r"}))
        while True:
            c, h, _ = parse(await ws.recv())
            if c == "RECEIPT": return h["x-epoch"]
ep = asyncio.run(epoch())
b = rss(s.proc.pid)
k = socket.socket(); k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); k.connect(("127.0.0.1", s.port))
k.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n")
def m(p):
    n=len(p); h = bytes([0x81, 0x80|n]) if n<126 else bytes([0x81,0xFE])+n.to_bytes(2,"big"); return h+b"\0\0\0\0"+p
k.sendall(m(frame("CONNECT", {"accept-version": "1.2", "host": "x"})))
for i in range(150):
    k.sendall(m(frame("SUBSCRIBE", {"id": "s", "destination": "/topic/big", "x-recover-since": f"{ep}:0"}))); k.sendall(m(frame("UNSUBSCRIBE", {"id": "s"})))
time.sleep(3)
st = json.loads(s.cli("stats").stdout)
print(json.dumps({"rss_growth": rss(s.proc.pid)-b, "dropped": st["dropped"], "history": st["history"]}))
k.close(); s.stop()
