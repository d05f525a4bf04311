"""`[limits] max_sessions_per_user` (issue #36) with real clients: the third session of a user
is refused (STOMP `ERROR message:too many sessions`, raw 429), another user is not, and a
closed session gives its place back."""
import asyncio
import time

import jwt
import websockets

from conftest import stomp_connect


SECRET = "per-user-secret-0123456789abcdef"
CONFIG = f"""
[auth]
enabled = true

[limits]
max_sessions_per_user = 2

[projects.p]
jwt_secret = "{SECRET}"
"""


def token(user):
    return jwt.encode({"sub": user, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")


async def stomp(server, user):
    return await stomp_connect(server, "p", token(user))


def test_the_third_session_of_a_user_is_refused(make_server):
    s = make_server(config=CONFIG)

    async def run():
        a, ra = await stomp(s, "alice")
        b, rb = await stomp(s, "alice")
        c, rc = await stomp(s, "alice")
        assert ra.startswith("CONNECTED") and rb.startswith("CONNECTED")
        assert rc.startswith("ERROR\nmessage:too many sessions\n"), rc
        await asyncio.wait_for(c.wait_closed(), 10)
        assert c.close_code == 1008
        d, rd = await stomp(s, "bob")
        assert rd.startswith("CONNECTED"), rd
        # Raw sessions of the same user count too: refused before the upgrade.
        uri = f"{s.url}/ws?topic=t&project=p&token={token('alice')}"
        try:
            async with websockets.connect(uri):
                raise AssertionError("a third alice session was let in")
        except websockets.exceptions.InvalidStatus as e:
            assert e.response.status_code == 429
        await a.close()

        async def fourth_fits():
            e, re = await stomp(s, "alice")
            await e.close()
            return re.startswith("CONNECTED")
        deadline = time.time() + 10
        while not await fourth_fits():
            assert time.time() < deadline, "alice's closed session did not give its place back"
            await asyncio.sleep(0.05)
        for ws in (b, d):
            await ws.close()
    asyncio.run(run())


def test_a_session_subscribing_too_fast_is_closed(make_server):
    s = make_server(config="""
[auth]
enabled = false

[limits]
max_subscribes_per_s = 3
""")

    async def run():
        ws = await websockets.connect(s.url + "/ws", subprotocols=["v12.stomp"])
        await ws.send("CONNECT\naccept-version:1.2\n\n\0")
        assert (await asyncio.wait_for(ws.recv(), 10)).startswith("CONNECTED")
        for i in range(10):
            await ws.send(f"SUBSCRIBE\nid:{i}\ndestination:/topic/t{i}\n\n\0")
        err = await asyncio.wait_for(ws.recv(), 10)
        assert err.startswith("ERROR\nmessage:too many subscribes"), err
        await asyncio.wait_for(ws.wait_closed(), 10)
    asyncio.run(run())


def test_the_limit_counts_the_users_sessions_on_every_node(make_server, tmp_path):
    from test_cluster import Redis
    redis = Redis(str(tmp_path))
    cfg = CONFIG + f"""
[cluster]
redis = "{redis.url}"
presence_ttl_ms = 1500
"""
    try:
        a, b = make_server(config=cfg), make_server(config=cfg)

        async def run():
            held = [(await stomp(a, "alice"))[0] for _ in range(2)]
            # Once b has seen a's presence, alice's third session is refused there too.
            deadline = time.time() + 15
            while True:
                ws, reply = await stomp(b, "alice")
                if reply.startswith("ERROR\nmessage:too many sessions"):
                    break
                await ws.close()
                assert time.time() < deadline, "b never counted alice's sessions on a"
                await asyncio.sleep(0.2)
            _, reply = await stomp(b, "bob")
            assert reply.startswith("CONNECTED"), reply
            for ws in held:
                await ws.close()
        asyncio.run(run())
    finally:
        redis.stop()
