"""Ingest from a PostgreSQL outbox (issue #34) against Debian's postgresql, started by the test:
rows written by psql in the backend's own transactions reach subscribers, two nodes on one table
publish each row once, rolled-back rows never appear, a row that does not parse moves to
`{table}_dead` with its reason, and a NOTIFY wakes a node whose poll interval is long."""
import asyncio
import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import websockets

from conftest import free_port, until
from test_ingest import publish_json

# What README "PostgreSQL outbox" tells a backend to create.
OUTBOX_SQL = """
CREATE TABLE IF NOT EXISTS ringcast_outbox (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""
NOTIFY_SQL = """
CREATE OR REPLACE FUNCTION ringcast_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('ringcast_outbox', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER ringcast_outbox_notify AFTER INSERT ON ringcast_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ringcast_outbox_notify();
"""


class Postgres:
    """One throw-away cluster on loopback (trust auth, fsync off), owned by `postgres` when the
    tests run as root (the server refuses to run as root)."""

    def __init__(self, workdir, port=None):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins or not shutil.which("psql"):
            pytest.fail("postgresql is missing: run scripts/install-test-deps.sh")
        self.bin = bins[-1]
        # Its own directory under /tmp: pytest's are private to root, and `postgres` must enter.
        self.dir = tempfile.mkdtemp(prefix="ringcast-pg-")
        self.port = port or free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        subprocess.run(self.as_user + [f"{self.bin}/initdb", "-D", self.dir, "-A", "trust",
                                       "-U", "postgres"], check=True, capture_output=True,
                       timeout=120)
        self.log = workdir / "postgres.log"
        self.proc = subprocess.Popen(
            self.as_user + [f"{self.bin}/postgres", "-D", self.dir, "-p", str(self.port),
                            "-k", self.dir, "-c", "listen_addresses=127.0.0.1",
                            "-c", "fsync=off"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if subprocess.run(["psql", self.url, "-c", "select 1"], capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def sql(self, script):
        """Runs `script` with psql, stopping at the first error; returns its unaligned output."""
        r = subprocess.run(["psql", self.url, "-v", "ON_ERROR_STOP=1", "-qAt", "-f", "-"],
                           input=script, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres(tmp_path):
    pg = Postgres(tmp_path)
    yield pg
    pg.stop()


def config(pg, extra=""):
    return f"""
[limits]
send_queue = 20000

[[ingest.postgres]]
url = "{pg.url}"
batch = 100
poll_ms = 200
{extra}
"""


def quote(s):
    return "'" + s.replace("'", "''") + "'"


async def collect_all(sockets, want, timeout):
    """Every body the sockets receive, as lists (a duplicate shows), until `want` in all."""
    got = [[] for _ in sockets]
    deadline = time.monotonic() + timeout

    async def read(i, ws):
        while sum(map(len, got)) < want and time.monotonic() < deadline:
            try:
                got[i].append(await asyncio.wait_for(ws.recv(), 1))
            except asyncio.TimeoutError:
                pass
    await asyncio.gather(*(read(i, ws) for i, ws in enumerate(sockets)))
    return got


def test_two_nodes_share_one_outbox_and_publish_each_row_once(make_server, postgres):
    postgres.sql(OUTBOX_SQL)
    nodes = [make_server("--shards", "2", "--no-auth", config=config(postgres)) for _ in range(2)]
    n, per_tx = 10_000, 100

    # The backend's side: one psql session, 100 transactions of 100 rows each, with a rolled-back
    # transaction after every tenth and one row that no subscriber can take.
    script = []
    for t in range(n // per_tx):
        rows = ",".join(f"({quote(publish_json('o', str(t * per_tx + i)))})" for i in range(per_tx))
        script.append(f"BEGIN; INSERT INTO ringcast_outbox (payload) VALUES {rows}; COMMIT;")
        if t % 10 == 0:
            script.append("BEGIN; INSERT INTO ringcast_outbox (payload) VALUES "
                          f"({quote(publish_json('o', f'rolled-back-{t}'))}); ROLLBACK;")
        if t == 50:
            bad = json.dumps({"project": "default", "destination": "/nowhere", "body": "x"})
            script.append(f"INSERT INTO ringcast_outbox (payload) VALUES ({quote(bad)});")
            # Spread over a moment, so both nodes claim while rows keep coming.
            script.append("SELECT pg_sleep(0.3);")
    script = "\n".join(script)

    async def main():
        sockets = [await websockets.connect(f"{s.url}/ws?topic=o", max_queue=None) for s in nodes]
        writer = threading.Thread(target=postgres.sql, args=(script,))
        writer.start()
        got = await collect_all(sockets, n, 120)
        writer.join(60)
        for ws in sockets:
            await ws.close()
        return got
    got = asyncio.run(asyncio.wait_for(main(), 200))
    every = got[0] + got[1]
    assert len(every) == n and set(every) == {str(i) for i in range(n)}, \
        (len(every), len(set(every)), [s.stats()["ingest"] for s in nodes])

    assert postgres.sql("SELECT count(*) FROM ringcast_outbox") == "0"
    dead = postgres.sql("SELECT payload->>'destination', reason FROM ringcast_outbox_dead")
    assert dead.startswith("/nowhere|") and "destination" in dead.split("|", 1)[1], dead
    srcs = [s.stats()["ingest"]["sources"][0] for s in nodes]
    assert all(s["name"] == "postgres outbox ringcast_outbox" for s in srcs), srcs
    # Published counts add up to the rows: no row went out twice. Both nodes took part.
    assert sum(s["published"] for s in srcs) == n, srcs
    assert sum(s["rejected"] for s in srcs) == 1, srcs
    assert all(s["published"] > 0 for s in srcs), srcs


def test_a_notify_wakes_a_node_that_polls_rarely(make_server, postgres):
    postgres.sql(OUTBOX_SQL + NOTIFY_SQL)
    server = make_server("--no-auth", config=config(
        postgres, 'notify_channel = "ringcast_outbox"').replace("poll_ms = 200", "poll_ms = 600000"))

    async def main():
        ws = await websockets.connect(f"{server.url}/ws?topic=n", max_queue=None)
        for i in range(3):
            postgres.sql(f"INSERT INTO ringcast_outbox (payload) VALUES ({quote(publish_json('n', str(i)))});")
            # With a ten-minute poll, only the trigger's NOTIFY can bring it this soon.
            assert await asyncio.wait_for(ws.recv(), 60) == str(i)
        await ws.close()
    asyncio.run(asyncio.wait_for(main(), 240))
    assert postgres.sql("SELECT count(*) FROM ringcast_outbox") == "0"


def test_an_unreachable_database_is_retried_until_it_answers(make_server, tmp_path):
    """Started before its database: one outage line, then rows flow once it is up."""
    port = free_port()
    pg_url = f"postgres://postgres@127.0.0.1:{port}/postgres"
    server = make_server("--no-auth", config=f"""
[[ingest.postgres]]
url = "{pg_url}"
poll_ms = 200
""")
    until(lambda: server.stats()["ingest"]["errors"] > 0, 30, "the outage to be noticed")
    pg = Postgres(tmp_path, port)
    try:
        async def main():
            ws = await websockets.connect(f"{server.url}/ws?topic=u", max_queue=None)
            # ringcast creates the table on connect: wait for it, then write.
            until(lambda: pg.sql("SELECT to_regclass('ringcast_outbox') IS NOT NULL") == "t",
                     60, "the outbox table")
            pg.sql(f"INSERT INTO ringcast_outbox (payload) VALUES ({quote(publish_json('u', 'up'))});")
            assert await asyncio.wait_for(ws.recv(), 60) == "up"
            await ws.close()
        asyncio.run(asyncio.wait_for(main(), 150))
        assert server.output().count("retrying with back-off") <= 3, server.output()[-3000:]
    finally:
        pg.stop()
