"""STOMP over WebSocket with a hand-written byte-level client (Python `websockets`), and JWT
auth with RS256, ES256 and HS256 keys the test generates (tokens minted by PyJWT, not by
ringcast)."""
import asyncio
import json
import subprocess
import time

import jwt
import pytest
import websockets

from conftest import frame, parse
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import ConnectionClosed


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def pem_pair(key):
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, key in [("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                      ("ec", ec.generate_private_key(ec.SECP256R1())),
                      ("rsa_other", rsa.generate_private_key(public_exponent=65537, key_size=2048))]:
        private, public = pem_pair(key)
        (d / f"{name}.pem").write_bytes(private)
        (d / f"{name}.pub.pem").write_bytes(public)
        out[name] = (private, str(d / f"{name}.pub.pem"))
    return out


@pytest.fixture
def auth_server(make_server, keys):
    cfg = f"""
[auth]
enabled = true
user_claim = "userName"

[projects.rs]
jwt_alg = "RS256"
jwt_public_key = "{keys['rsa'][1]}"

[projects.es]
jwt_alg = "ES256"
jwt_public_key = "{keys['ec'][1]}"

[projects.hs]
jwt_alg = "HS256"
jwt_secret = "hs-secret"
client_publish = true
"""
    return make_server("--shards", "2", config=cfg)


def mint(alg, key, user="alice", exp_in=300, **extra):
    claims = {"userName": user, "iat": int(time.time()), "exp": int(time.time()) + exp_in, **extra}
    return jwt.encode(claims, key, algorithm=alg)


async def stomp(url, connect_headers, protocol="v12.stomp"):
    ws = await websockets.connect(f"{url}/ws", subprotocols=[protocol], open_timeout=10)
    await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x", **connect_headers}))
    return ws, parse(await asyncio.wait_for(ws.recv(), 5))


@pytest.mark.parametrize("project,alg,keyname", [("rs", "RS256", "rsa"), ("es", "ES256", "ec"),
                                                  ("hs", "HS256", None)])
def test_each_algorithm_authenticates(auth_server, keys, project, alg, keyname):
    key = keys[keyname][0] if keyname else "hs-secret"

    async def main():
        ws, (cmd, h, _) = await stomp(auth_server.url, {"token": mint(alg, key), "projectId": project})
        assert cmd == "CONNECTED", h
        assert h["user-name"] == "alice"
        await ws.close()
    run(main())


def test_bad_tokens_get_auth_fail(auth_server, keys):
    rsa_key = keys["rsa"][0]
    unsigned = jwt.encode({"userName": "eve", "exp": int(time.time()) + 300}, None, algorithm="none")
    cases = [
        ("forged", "rs", mint("RS256", rsa_key)[:-4] + "AAAA"),
        ("expired", "rs", mint("RS256", rsa_key, exp_in=-600)),
        ("wrong key", "rs", mint("RS256", keys["rsa_other"][0])),
        ("alg none", "rs", unsigned),
        ("alg mismatch (HS256 with the public key as secret)", "rs",
         jwt.encode({"userName": "eve", "exp": int(time.time()) + 300}, "x", algorithm="HS256")),
        ("wrong project", "es", mint("RS256", rsa_key)),
        ("not yet valid", "rs", mint("RS256", rsa_key, nbf=int(time.time()) + 600)),
        ("no user claim", "hs", jwt.encode({"exp": int(time.time()) + 300}, "hs-secret", algorithm="HS256")),
    ]

    async def main():
        for name, project, token in cases:
            ws, (cmd, h, body) = await stomp(auth_server.url, {"token": token, "projectId": project})
            assert cmd == "ERROR", name
            assert h["message"] == "auth_fail", name
            assert body, f"{name}: the body says why"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008, name
    run(main())


def test_malformed_frames_each_get_an_error(auth_server):
    token = mint("HS256", "hs-secret")
    cases = [
        (b"SUBSCRIBE\nid:1\ndestination:/topic/a\n\n", "no NUL"),
        (frame("SUBSCRIBE", {"id": "1", "destination": "/topic/a", "bad": "x\\qy"}), "undefined escape"),
        (frame("SEND", {"destination": "/topic/a", "huge": "x" * 5000}), "header line over"),
        (frame("FROBNICATE"), "unknown command"),
        (frame("SUBSCRIBE", {"destination": "/topic/a"}), "needs an id"),
        (frame("SUBSCRIBE", {"id": "1", "destination": "/elsewhere"}), "unknown destination"),
    ]

    async def main():
        for raw, expect in cases:
            ws, (cmd, _, _) = await stomp(auth_server.url, {"token": token, "projectId": "hs"})
            assert cmd == "CONNECTED"
            await ws.send(raw)
            if expect == "no NUL":
                # A frame may span WebSocket messages, so an unterminated one is incomplete, not
                # wrong, until it outgrows the frame limit: then it gets an ERROR.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)
                await ws.send(b"x" * 40000)   # each message is under the WebSocket limit,
                await ws.send(b"x" * 40000)   # together they outgrow the STOMP frame limit
                cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 5))
                assert cmd == "ERROR" and "frame over" in h["message"], h
                await ws.close()
                continue
            cmd, h, _ = parse(await asyncio.wait_for(ws.recv(), 5))
            assert cmd == "ERROR" and expect in h["message"], (expect, h)
            await ws.close()
    run(main())


def test_send_only_where_the_project_allows_it(make_server):
    cfg = ('[auth]\nuser_claim = "userName"\n[projects.ro]\njwt_secret = "a"\n'
           '[projects.rw]\njwt_secret = "b"\nclient_publish = true\n')
    server = make_server("--shards", "2", config=cfg)

    async def main():
        ro, _ = await stomp(server.url, {"token": mint("HS256", "a"), "projectId": "ro"})
        await ro.send(frame("SEND", {"destination": "/topic/chat"}, b"hi"))
        cmd, h, _ = parse(await asyncio.wait_for(ro.recv(), 5))
        assert cmd == "ERROR" and "not allowed" in h["message"]

        listener, _ = await stomp(server.url, {"token": mint("HS256", "b", user="l"), "projectId": "rw"})
        await listener.send(frame("SUBSCRIBE", {"id": "s", "destination": "/topic/chat", "receipt": "r"}))
        assert parse(await listener.recv())[0] == "RECEIPT"
        talker, _ = await stomp(server.url, {"token": mint("HS256", "b", user="t"), "projectId": "rw"})
        await talker.send(frame("SEND", {"destination": "/topic/chat", "content-type": "text/plain"}, b"hello"))
        cmd, h, body = parse(await asyncio.wait_for(listener.recv(), 5))
        assert (cmd, h["destination"], h["subscription"], body) == ("MESSAGE", "/topic/chat", "s", b"hello")
        await talker.send(frame("DISCONNECT", {"receipt": "bye"}))
        cmd, h, _ = parse(await asyncio.wait_for(talker.recv(), 5))
        assert (cmd, h["receipt-id"]) == ("RECEIPT", "bye")
        for ws in (ro, listener, talker):
            await ws.close()
    run(main())


def test_stomp_and_raw_share_a_topic_with_body_nul(make_server):
    server = make_server("--shards", "2", "--no-auth")

    async def main():
        raw = await websockets.connect(f"{server.url}/ws?topic=mix")
        st, (cmd, _, _) = await stomp(server.url, {"login": "u1"})
        assert cmd == "CONNECTED"
        await st.send(frame("SUBSCRIBE", {"id": "sub-0", "destination": "/topic/mix", "receipt": "r"}))
        assert parse(await st.recv())[0] == "RECEIPT"
        r = server.cli("push", "--topic", "mix", "-", stdin="x\u0000y")
        assert "reached 2 sessions" in r.stdout
        assert await raw.recv() == "x\u0000y"
        msg = await st.recv()
        data = msg.encode() if isinstance(msg, str) else msg
        head, _, body = data.partition(b"\n\n")
        assert b"content-length:3" in head
        assert body == b"x\0y\0"
        await raw.close()
        await st.close()
    run(main())


def test_frames_split_and_batched_across_websocket_messages(make_server):
    server = make_server("--shards", "1", "--no-auth")

    async def main():
        ws = await websockets.connect(f"{server.url}/ws", subprotocols=["v12.stomp"])
        data = frame("CONNECT", {"accept-version": "1.2", "host": "x"}) + b"\n" + \
            frame("SUBSCRIBE", {"id": "a", "destination": "/topic/t"}) + \
            frame("SUBSCRIBE", {"id": "b", "destination": "/topic/t", "receipt": "both"})
        for i in range(0, len(data), 7):
            await ws.send(data[i:i + 7])
        assert parse(await ws.recv())[0] == "CONNECTED"
        assert parse(await ws.recv())[1]["receipt-id"] == "both"
        assert server.push("t", "m") == 1
        subs = sorted([parse(await ws.recv())[1]["subscription"],
                       parse(await ws.recv())[1]["subscription"]])
        assert subs == ["a", "b"]
        await ws.close()
    run(main())
