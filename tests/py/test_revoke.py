"""`POST /revoke` (issue #36) with real clients on one node: the user's live sessions end (STOMP
`ERROR message:revoked`, close 4001; raw close 4001), tokens issued up to that moment are refused
(`auth_fail`, "token revoked"), one issued afterwards is accepted; a single token by its `jti`."""
import asyncio
import time

import jwt
import websockets

from conftest import admin, stomp_connect

SECRET = "revoke-secret-0123456789abcdef012"
CONFIG = f"""
[auth]
enabled = true

[projects.p]
jwt_secret = "{SECRET}"
"""


def token(user, iat, jti=None):
    claims = {"sub": user, "iat": iat, "exp": int(time.time()) + 300}
    if jti:
        claims["jti"] = jti
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def stomp(server, tok):
    return await stomp_connect(server, "p", tok)


def test_revoking_a_user_ends_its_sessions_and_refuses_its_older_tokens(make_server):
    s = make_server(config=CONFIG)
    issued = int(time.time()) - 10
    old = token("alice", issued)

    async def run():
        ws, reply = await stomp(s, old)
        assert reply.startswith("CONNECTED"), reply
        raw = await websockets.connect(f"{s.url}/ws?topic=t&project=p&token={old}")
        bob, reply = await stomp(s, token("bob", issued))
        assert reply.startswith("CONNECTED")

        status, body = await asyncio.to_thread(
            admin, s.sock, "POST", "/revoke", {"project": "p", "user": "alice"})
        assert status == 200 and body["sessions"] == 2, body
        err = await asyncio.wait_for(ws.recv(), 10)
        assert err.startswith("ERROR\nmessage:revoked\n"), err
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 4001
        await asyncio.wait_for(raw.wait_closed(), 10)
        assert raw.close_code == 4001
        assert bob.close_code is None, "another user is untouched"

        _, reply = await stomp(s, old)
        assert reply.startswith("ERROR\nmessage:auth_fail\n") and "token revoked" in reply, reply
        _, reply = await stomp(s, token("alice", body["revoked"]["before"] + 1))
        assert reply.startswith("CONNECTED"), "a token issued afterwards is accepted"

        # One token by its id: that token is refused, the user's others are not.
        marked = token("bob", issued, jti="t-1")
        status, _ = await asyncio.to_thread(
            admin, s.sock, "POST", "/revoke", {"project": "p", "jti": "t-1"})
        assert status == 200
        _, reply = await stomp(s, marked)
        assert "token revoked" in reply, reply
        _, reply = await stomp(s, token("bob", issued, jti="t-2"))
        assert reply.startswith("CONNECTED"), reply
        await bob.close()
    asyncio.run(run())


def test_a_revoke_without_user_or_jti_is_a_400(make_server):
    s = make_server(config=CONFIG)
    status, body = admin(s.sock, "POST", "/revoke", {"project": "p"})
    assert status == 400 and "user" in body["error"]


def test_a_revocation_reaches_every_node_and_a_restarted_one_reads_it_back(make_server, tmp_path):
    from test_cluster import Redis
    redis = Redis(str(tmp_path))
    cfg = CONFIG + f"""
[cluster]
redis = "{redis.url}"
presence_ttl_ms = 3000
"""
    try:
        nodes = [make_server("--shards", "2", config=cfg) for _ in range(3)]
        issued = int(time.time()) - 10
        old = token("alice", issued)

        async def run():
            sessions = []
            for n in nodes:
                ws, reply = await stomp(n, old)
                assert reply.startswith("CONNECTED"), reply
                sessions.append(ws)
            status, body = await asyncio.to_thread(
                admin, nodes[0].sock, "POST", "/revoke", {"project": "p", "user": "alice"})
            assert status == 200 and body["cluster"]["ok"], body
            for ws in sessions:
                err = await asyncio.wait_for(ws.recv(), 10)
                assert err.startswith("ERROR\nmessage:revoked\n"), err
                await asyncio.wait_for(ws.wait_closed(), 10)
                assert ws.close_code == 4001
            for n in nodes:
                _, reply = await stomp(n, old)
                assert "token revoked" in reply, reply
            _, reply = await stomp(nodes[2], token("alice", body["revoked"]["before"] + 1))
            assert reply.startswith("CONNECTED"), reply
        asyncio.run(run())

        # A node that starts after the revocation reads it from Redis.
        nodes[1].stop()
        late = make_server("--shards", "2", config=cfg)

        async def refused():
            _, reply = await stomp(late, old)
            return "token revoked" in reply
        deadline = time.time() + 15
        while not asyncio.run(refused()):
            assert time.time() < deadline, "the new node did not read the revocation back"
            time.sleep(0.1)
    finally:
        redis.stop()
