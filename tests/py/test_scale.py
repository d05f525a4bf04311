"""More connections than one fd table holds (20,000 here), through ringcast-bench."""
import json
import os
import subprocess

from conftest import ROOT

BENCH = os.environ.get("RINGCAST_BENCH", os.path.join(ROOT, "target", "release", "ringcast-bench"))


def test_30000_raw_connections_all_receive_a_publish(make_server):
    server = make_server("--shards", "4", "--max-connections", "40000")
    out = os.path.join(server.dir, "bench.json")
    r = subprocess.run([BENCH, "raw", "-n", "30000", "--url", f"{server.url}/ws?topic=scale",
                        "--admin-socket", server.sock, "--messages", "2", "--timeout", "60",
                        "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(out))
    assert res["connected"] == 30000 and res["failed"] == 0
    assert [m["delivered"] for m in res["messages"]] == [30000, 30000]
    # 4 shards were asked for; 30,000 connections need 2 fd tables of 20,000, and the
    # connections must have spread over more than one shard's table.
    stats = server.stats()
    assert stats["shard_count"] >= 4
    assert stats["upgraded"] == 30000
