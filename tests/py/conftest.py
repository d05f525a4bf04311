"""Fixtures that run the real `ringcast` binary on a free port with a private admin socket."""
import os
import socket
import subprocess
import tempfile
import time
import json

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("RINGCAST_BIN", os.path.join(ROOT, "target", "release", "ringcast"))


# STOMP frames as the byte-level tests write and read them.
def frame(command, headers=None, body=b""):
    lines = [command] + [f"{k}:{v}" for k, v in (headers or {}).items()]
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


def parse(data):
    """A received STOMP frame -> (command, headers, body)."""
    if isinstance(data, str):
        data = data.encode()
    head, _, body = data.partition(b"\n\n")
    lines = head.decode().split("\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k, v)
    return lines[0], headers, body.rstrip(b"\0\n")


def admin(sock_path, method, path, body=None):
    """One admin API request over the Unix socket -> (status, parsed JSON body)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    data = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else None


async def stomp_connect(server, project, token):
    """A STOMP session over a WebSocket, CONNECTed with `token` in `project`: the socket and
    the server's first frame (CONNECTED or ERROR)."""
    import asyncio
    import websockets
    ws = await websockets.connect(server.url + "/ws", subprotocols=["v12.stomp"])
    await ws.send(f"CONNECT\naccept-version:1.2\nprojectId:{project}\ntoken:{token}\n\n\0")
    return ws, await asyncio.wait_for(ws.recv(), 10)


def until(cond, timeout=10, what="the condition"):
    """Polls `cond` until it returns something true (returned), or fails after `timeout` s:
    how tests wait, instead of sleeping a guess."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_port(port, timeout=5):
    """Waits until something accepts connections on 127.0.0.1:`port` (or the time runs out)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `ringcast serve`; `wrap` runs it inside another command (`ip netns exec NS`), and
    `host` is the address it listens on there."""

    def __init__(self, *args, config=None, host="127.0.0.1", wrap=()):
        self.dir = tempfile.mkdtemp(prefix="ringcast-test-")
        self.host = host
        self.port = free_port()
        self.sock = os.path.join(self.dir, "admin.sock")
        cmd = [*wrap, BIN, "serve", "--listen", f"{host}:{self.port}", "--admin-socket", self.sock]
        if config is not None:
            path = os.path.join(self.dir, "ringcast.toml")
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        cmd += list(args)
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.sock):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("server did not start:\n" + self.output())

    @property
    def url(self):
        return f"ws://{self.host}:{self.port}"

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def cli(self, *args, check=True, stdin=None):
        r = subprocess.run([BIN, *args, "--admin-socket", self.sock], capture_output=True,
                           text=True, input=stdin, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError(f"ringcast {args} failed: {r.stderr}")
        return r

    def push(self, topic, body, project=None):
        args = ["push", "--json", "--topic", topic]
        if project:
            args += ["--project", project]
        return json.loads(self.cli(*args, body).stdout)["sessions"]

    def stats(self):
        return json.loads(self.cli("stats").stdout)

    def stop(self, sig=15, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def make_server():
    servers = []

    def make(*args, **kw):
        s = Server(*args, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(params=["multishot", "compat"])
def server(request, make_server):
    """A server with 4 shards and the echo endpoint, on both io_uring paths."""
    args = ["--shards", "4", "--echo"]
    if request.param == "compat":
        args.append("--io-compat")
    return make_server(*args)
