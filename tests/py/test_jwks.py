"""JWKS per project (issue #36): a local identity provider (Python `http.server`) publishes a
Keycloak-shaped key set; tokens signed with its keys (RS256, `kid`, `iss`, `aud`, `sub`) open
STOMP sessions; a rotated-in key works without a restart; made-up kids cost a fetch or two; the
provider going down keeps the last set working."""
import asyncio
import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conftest import free_port, stomp_connect, until

ISSUER = "http://127.0.0.1/realms/acme"
AUDIENCE = "ringcast"


class Idp:
    """Serves `/certs` with the current set, counting requests."""

    def __init__(self):
        self.keys = {}
        self.requests = 0
        self.up = True
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                idp.requests += 1
                if not idp.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [jwk for _, jwk in idp.keys.values()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http.server_address[1]}/certs"

    def add_key(self, kid):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        self.keys[kid] = (private, jwk)

    def token(self, kid, user="alice", aud=AUDIENCE, key_of=None):
        private = self.keys[key_of or kid][0]
        now = int(time.time())
        claims = {"sub": user, "iss": ISSUER, "aud": aud, "iat": now, "exp": now + 300,
                  "azp": "web", "typ": "Bearer"}
        return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})

    def close(self):
        self.http.shutdown()


def config(idp):
    return f"""
[auth]
enabled = true

[projects.acme]
jwks_url = "{idp.url}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
"""


async def connect(server, token):
    """A STOMP CONNECT with `token`; the first frame's command line and the frame."""
    ws, reply = await stomp_connect(server, "acme", token)
    await ws.close()
    return reply.split("\n", 1)[0], reply


def test_tokens_of_a_published_key_set_open_sessions(make_server):
    idp = Idp()
    idp.add_key("k1")
    try:
        s = make_server(config=config(idp))
        cmd, _ = asyncio.run(connect(s, idp.token("k1")))
        assert cmd == "CONNECTED"
        cmd, frame = asyncio.run(connect(s, idp.token("k1", aud="someone-else")))
        assert cmd == "ERROR" and "message:auth_fail" in frame, frame
        assert "issuer or audience" in frame, frame
        # Signed by another key under a kid the set holds: the signature does not verify.
        idp.add_key("other")
        forged = idp.token("k1", key_of="other")
        del idp.keys["other"]
        cmd, frame = asyncio.run(connect(s, forged))
        assert cmd == "ERROR" and "signature" in frame, frame
        cmd, frame = asyncio.run(connect(s, "not-a-token"))
        assert cmd == "ERROR", frame
        assert s.stats()["jwks"]["fetches"] == 1
    finally:
        idp.close()


def test_a_rotated_key_is_taken_without_a_restart_and_made_up_kids_cost_little(make_server):
    idp = Idp()
    idp.add_key("k1")
    try:
        s = make_server(config=config(idp))
        assert asyncio.run(connect(s, idp.token("k1")))[0] == "CONNECTED"
        # The provider rotates: k2 appears. A token under k2 is refused until the set is
        # refetched (asked for by the unknown kid itself, at a bounded rate), then accepted.
        idp.add_key("k2")
        fresh = idp.token("k2", user="bob")
        until(lambda: asyncio.run(connect(s, fresh))[0] == "CONNECTED", timeout=30,
              what="the rotated-in key to be accepted")
        fetched = idp.requests

        # A made-up kid is refused before any signature is checked: forged tokens suffice.
        def b64(d):
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        body = b64({"sub": "mallory", "exp": int(time.time()) + 300})

        async def attempt(kid):
            forged = f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{body}.c2ln"
            uri = f"{s.url}/ws?topic=t&project=acme&token={forged}"
            try:
                async with websockets.connect(uri):
                    raise AssertionError("a made-up kid was let in")
            except websockets.exceptions.InvalidStatus as e:
                assert e.response.status_code == 401

        async def flood(n, at_once=100):
            for i in range(0, n, at_once):
                await asyncio.gather(*(attempt(uuid.uuid4().hex) for _ in range(at_once)))
        asyncio.run(flood(10_000))
        assert s.stats()["jwks"]["unknown_kid"] >= 10_000
        assert idp.requests - fetched <= 4, f"{idp.requests - fetched} fetches for 10,000 kids"

        # The provider goes down: a refetch fails, and the last good set keeps working.
        idp.up = False

        def refetch_failed():
            idp.keys["gone"] = idp.keys["k1"]
            token = idp.token("gone")
            del idp.keys["gone"]
            asyncio.run(connect(s, token))
            return s.stats()["jwks"]["fetch_failed"] >= 1
        until(refetch_failed, timeout=30, what="a fetch while the provider is down")
        assert asyncio.run(connect(s, idp.token("k1")))[0] == "CONNECTED"
        assert asyncio.run(connect(s, fresh))[0] == "CONNECTED"
    finally:
        idp.close()


def test_a_key_set_file_is_read_at_start(make_server, tmp_path):
    idp = Idp()
    idp.add_key("f1")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [idp.keys["f1"][1]]}))
    try:
        s = make_server(config=f"""
[auth]
enabled = true

[projects.acme]
jwks_file = "{path}"
""")
        assert asyncio.run(connect(s, idp.token("f1")))[0] == "CONNECTED"
        assert idp.requests == 0
        cmd, frame = asyncio.run(connect(s, idp.token("f1") + "x"))
        assert cmd == "ERROR", frame
    finally:
        idp.close()


def test_check_config_fetches_the_set_and_counts_its_keys(tmp_path):
    import subprocess
    from conftest import BIN
    idp = Idp()
    idp.add_key("c1")
    idp.add_key("c2")
    path = tmp_path / "ringcast.toml"
    path.write_text(config(idp))
    try:
        r = subprocess.run([BIN, "serve", "--config", str(path), "--check-config"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "projects.acme: key set with 2 keys (c1, c2)" in r.stdout, r.stdout
        r = subprocess.run([BIN, "doctor", "--config", str(path), "--connections", "1000"],
                           capture_output=True, text=True, timeout=30)
        line = [l for l in r.stdout.splitlines() if "key set (JWKS)" in l]
        assert line and "[ OK ]" in line[0] and "2 keys" in line[0], r.stdout
        idp.up = False
        r = subprocess.run([BIN, "doctor", "--config", str(path), "--connections", "1000"],
                           capture_output=True, text=True, timeout=30)
        assert "[WARN] key set (JWKS)" in r.stdout and "could not be fetched" in r.stdout, r.stdout
    finally:
        idp.close()
