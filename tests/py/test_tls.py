"""`wss://` with real clients (issue #16): Python `websockets` (deflate on), `openssl s_client`
on TLS 1.2 and 1.3, a bad-input suite for the TLS listener (garbage, a ClientHello byte by byte,
a handshake never finished, renegotiation, plain `ws://` on the `wss` port), certificate reload
on SIGHUP, and start-up errors naming a bad file. Every hostile case runs beside a session that
must keep receiving pushes."""
import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets

from conftest import BIN, ROOT, free_port, wait_port

TLS = os.path.join(ROOT, "tests", "tls")
CA = os.path.join(TLS, "ca.pem")

CONFIG = """
[server]
echo = true

[limits]
handshake_timeout_ms = 1500
max_message_bytes = 1048576

[compression]
enabled = true
min_bytes = 64
"""


def tls_args(cert="server.pem", key="server.key"):
    return ["--no-auth", "--tls-cert", os.path.join(TLS, cert), "--tls-key", os.path.join(TLS, key)]


def client_ctx():
    return ssl.create_default_context(cafile=CA)


def wss(s):
    return f"wss://127.0.0.1:{s.port}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(params=["multishot", "compat"])
def tls_server(request, make_server):
    extra = ["--io-compat"] if request.param == "compat" else []
    return make_server(*tls_args(), *extra, config=CONFIG)


def test_pushes_and_echoes_over_wss_with_deflate(tls_server):
    s = tls_server

    async def main():
        async with websockets.connect(f"{wss(s)}/ws?topic=news", ssl=client_ctx()) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert ext.startswith("permessage-deflate"), ext
            await asyncio.sleep(0.2)
            body = '{"price": 1}' * 200
            assert s.push("news", body) == 1
            assert await asyncio.wait_for(ws.recv(), 5) == body
            small = "x"
            assert s.push("news", small) == 1
            assert await asyncio.wait_for(ws.recv(), 5) == small
        async with websockets.connect(f"{wss(s)}/echo", ssl=client_ctx(), max_size=None) as ws:
            big = "é" * 200_000  # many TLS records each way
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 10) == big
        st = s.stats()
        assert st["tls_handshakes"] >= 2 and st["tls_failures"] == 0, st

    run(main())


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_negotiates_tls12_and_tls13_with_alpn(make_server, version):
    s = make_server(*tls_args(), config=CONFIG)
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-CAfile", CA, "-alpn",
         "http/1.1", "-servername", "localhost", "-ign_eof", version],
        input=b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n", capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out
    assert "ALPN protocol: http/1.1" in out, out
    assert ("TLSv1.2" if version == "-tls1_2" else "TLSv1.3") in out, out
    # The request went through TLS to the HTTP layer: a plain GET is not an upgrade.
    assert "426 Upgrade Required" in out, out


def raw_tls(s, data, wait=2.0):
    """Sends `data` on a plain TCP connection to the TLS port and returns what came back
    before the server closed (b'' if nothing)."""
    c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    c.sendall(data)
    got = b""
    deadline = time.time() + wait
    c.settimeout(0.5)
    while time.time() < deadline:
        try:
            chunk = c.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    c.close()
    return got


def client_hello():
    """A real ClientHello from Python's ssl, without a socket."""
    ctx = client_ctx()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return obj, inc, out


def test_hostile_tls_input_is_closed_and_counted_while_others_keep_receiving(tls_server):
    s = tls_server

    async def main():
        async with websockets.connect(f"{wss(s)}/ws?topic=calm", ssl=client_ctx()) as calm:
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()

            # Garbage instead of a ClientHello: a fatal alert (record type 21), then close.
            got = await loop.run_in_executor(None, raw_tls, s, b"\x80" + os.urandom(511))
            assert got == b"" or got[0] == 21, got[:16]
            got = await loop.run_in_executor(None, raw_tls, s, b"\x16\x03\x01\x00\x05\x01\x02\x03\x04\x05")
            assert got[:1] == b"\x15", got

            # A ws:// client on the wss port: a readable 400, then close.
            got = await loop.run_in_executor(
                None, raw_tls, s, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 400 Bad Request"), got
            assert b"wss://" in got

            # A handshake never finished: half a ClientHello, then silence → closed by the
            # handshake timeout (1.5 s here).
            _, _, out = client_hello()
            hello = out.read()
            t0 = time.time()
            got = await loop.run_in_executor(None, raw_tls, s, hello[: len(hello) // 2], 6.0)
            assert got == b"" and time.time() - t0 < 5.5

            # A ClientHello split byte by byte still completes.
            def byte_by_byte():
                obj, inc, out = client_hello()
                c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
                for b in out.read():
                    c.sendall(bytes([b]))
                c.settimeout(5)
                for _ in range(20):
                    try:
                        obj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        c.sendall(out.read())
                        inc.write(c.recv(65536))
                c.sendall(out.read())
                c.close()
                return obj.version()

            assert await loop.run_in_executor(None, byte_by_byte) == "TLSv1.3"

            assert s.push("calm", "still here") == 1
            assert await asyncio.wait_for(calm.recv(), 5) == "still here"
        st = s.stats()
        assert st["tls_failures"] >= 3, st
        assert st["handshake_timeouts"] >= 1, st

    run(main())


def test_renegotiation_is_refused_without_harm(make_server):
    s = make_server(*tls_args(), config=CONFIG)
    # s_client's "R" command asks for a TLS 1.2 renegotiation; rustls never renegotiates.
    p = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-CAfile", CA, "-tls1_2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1)
    p.stdin.write(b"R\n")
    p.stdin.flush()
    time.sleep(1)
    try:
        out = p.communicate(timeout=10)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        out = p.communicate()[0].decode(errors="replace")
    assert "RENEGOTIATING" in out, out
    assert s.stats()["tls_failures"] >= 1 or "no_renegotiation" in out or "alert" in out, out

    async def main():
        async with websockets.connect(f"{wss(s)}/ws?topic=t", ssl=client_ctx()) as ws:
            await asyncio.sleep(0.2)
            assert s.push("t", "fine") == 1
            assert await asyncio.wait_for(ws.recv(), 5) == "fine"

    run(main())


def peer_cn(port):
    ctx = client_ctx()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        with ctx.wrap_socket(c, server_hostname="localhost") as t:
            return dict(x[0] for x in t.getpeercert()["subject"])["commonName"]


def test_sighup_reloads_the_certificate_without_dropping_sessions(make_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(os.path.join(TLS, "server.pem"), cert)
    shutil.copy(os.path.join(TLS, "server.key"), key)
    s = make_server("--no-auth", config=CONFIG + f'\n[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    assert peer_cn(s.port) == "localhost (server)"

    async def main():
        async with websockets.connect(f"{wss(s)}/ws?topic=t", ssl=client_ctx()) as ws:
            await asyncio.sleep(0.2)
            # A broken file first: the running pair stays.
            cert.write_text("not a certificate")
            s.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert "TLS reload failed" in s.output()
            assert peer_cn(s.port) == "localhost (server)"
            shutil.copy(os.path.join(TLS, "other.pem"), cert)
            shutil.copy(os.path.join(TLS, "other.key"), key)
            s.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert peer_cn(s.port) == "localhost (other)"
            assert s.push("t", "after reload") == 1
            assert await asyncio.wait_for(ws.recv(), 5) == "after reload"

    run(main())


@pytest.mark.parametrize("cert,key,named", [
    ("missing.pem", "server.key", "missing.pem"),
    ("server.pem", "missing.key", "missing.key"),
    ("server.pem", "other.key", "does not fit"),
    ("gen.sh", "server.key", "gen.sh"),
])
def test_a_bad_certificate_or_key_is_a_clear_startup_error(cert, key, named):
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--check-config",
                        *tls_args(cert, key)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert named in r.stderr, r.stderr
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--no-auth", "--tls-cert",
                        os.path.join(TLS, "server.pem")], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "tls-key" in r.stderr, r.stderr


def test_the_network_api_over_https(make_server):
    api = free_port()
    cfg = CONFIG + f"""
[api]
listen = "127.0.0.1:{api}"
tls = true

[api.keys.backend]
key = "https-backend-key-0123"
scopes = ["publish"]
"""
    s = make_server(*tls_args(), config=cfg)
    assert wait_port(api)
    assert "network API on https://" in s.output()

    async def main():
        async with websockets.connect(f"{wss(s)}/ws?topic=news", ssl=client_ctx()) as ws:
            await asyncio.sleep(0.2)
            r = subprocess.run(
                ["curl", "-s", "--cacert", CA, "-H", "Authorization: Bearer https-backend-key-0123",
                 "-d", '{"destination": "/topic/news", "body": "over https"}',
                 f"https://127.0.0.1:{api}/publish"], capture_output=True, text=True, timeout=10)
            assert '"sessions":1' in r.stdout.replace(" ", ""), r.stdout + r.stderr
            assert await asyncio.wait_for(ws.recv(), 5) == "over https"
        # Plain HTTP on the https port: refused, the listener still serves.
        r = subprocess.run(["curl", "-s", "-m", "5", f"http://127.0.0.1:{api}/healthz"],
                           capture_output=True, text=True, timeout=10)
        assert "ok" not in r.stdout.lower()
        r = subprocess.run(["curl", "-s", "--cacert", CA, f"https://127.0.0.1:{api}/healthz"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout, r

    run(main())
    r = subprocess.run([BIN, "serve", "--check-config", "--config", "/dev/stdin"], input="[api]\ntls = true\n",
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "api.tls needs [tls]" in r.stderr, r.stderr
