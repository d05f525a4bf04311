#!/usr/bin/env python3
"""Server memory per idle SockJS xhr-streaming session carrying STOMP.

Opens N sessions against a running ringcast (auth off): each holds one xhr_streaming response
open and, through `xhr_send` on a few shared kept-alive connections, CONNECTs and SUBSCRIBEs to
/topic/bench. Reads the server's RSS (`ringcast stats`) before and after, then checks one
broadcast reaches every session. Source addresses 127.0.0.2.. spread the connections.

  bench/sockjs_streaming.py --url http://127.0.0.1:18092/ws --admin-socket /tmp/s.sock -n 10000
"""
import argparse
import asyncio
import json
import resource
import subprocess
import time
import urllib.parse

CONNECT = '["CONNECT\\naccept-version:1.2\\nheart-beat:0,0\\n\\n\\u0000",' \
          '"SUBSCRIBE\\nid:0\\ndestination:/topic/bench\\nreceipt:r\\n\\n\\u0000"]'


def stats(binary, sock):
    out = subprocess.run([binary, "stats", "--admin-socket", sock], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def read_until(reader, needle, timeout):
    data = b""
    while needle not in data:
        data += await asyncio.wait_for(reader.read(65536), timeout)
    return data


async def open_stream(host, port, path, sid, source):
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(f"POST {path}/0/{sid}/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    await read_until(reader, b"o\n", 30)
    return reader, writer


async def sender(host, port, path, sids):
    reader, writer = await asyncio.open_connection(host, port)
    body = CONNECT.encode()
    for sid in sids:
        writer.write(f"POST {path}/0/{sid}/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await read_until(reader, b"\r\n\r\n", 30)
    writer.close()


async def main(args):
    u = urllib.parse.urlparse(args.url)
    host, port, path = u.hostname, u.port, u.path.rstrip("/")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = stats(args.binary, args.admin_socket)["rss_bytes"]
    t0 = time.time()
    streams = []
    for start in range(0, args.n, 500):
        batch = range(start, min(args.n, start + 500))
        streams += await asyncio.gather(*(open_stream(host, port, path, f"s{i}", f"127.0.0.{2 + i % 40}")
                                          for i in batch))
    opened = time.time() - t0
    sids = [f"s{i}" for i in range(args.n)]
    await asyncio.gather(*(sender(host, port, path, sids[k::8]) for k in range(8)))
    # Every session's CONNECTED and RECEIPT arrive on its stream.
    await asyncio.gather(*(read_until(r, b"RECEIPT", 60) for r, _ in streams))
    time.sleep(1)
    s = stats(args.binary, args.admin_socket)
    after = s["rss_bytes"]
    push = subprocess.run([args.binary, "push", "--json", "--admin-socket", args.admin_socket,
                           "--topic", "bench", "hello"], capture_output=True, text=True, check=True)
    reached = json.loads(push.stdout)["sessions"]
    t1 = time.time()
    await asyncio.gather(*(read_until(r, b"hello", 60) for r, _ in streams))
    delivered = time.time() - t1
    print(json.dumps({
        "sessions": args.n, "opened_s": round(opened, 2),
        "rss_before": before, "rss_after": after,
        "bytes_per_session": round((after - before) / args.n),
        "sockjs_sessions": s["sockjs_sessions"], "connections": s["connections"],
        "broadcast_reached": reached, "last_delivery_s": round(delivered, 3),
    }))
    for _, w in streams:
        w.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080/ws")
    p.add_argument("--admin-socket", required=True)
    p.add_argument("--binary", default="target/release/ringcast")
    p.add_argument("-n", type=int, default=10000)
    asyncio.run(main(p.parse_args()))
