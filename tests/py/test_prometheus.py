"""A real `prometheus` (the Debian package) scrapes ringcast's network API with a metrics key,
and a PromQL query through its HTTP API returns ringcast's connection count."""
import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import websockets

from conftest import free_port

KEY = "metrics-key-0123456789"


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_ringcast(make_server, tmp_path):
    api_port, prom_port = free_port(), free_port()
    server = make_server("--shards", "2", "--no-auth", config=f"""
[api]
listen = "127.0.0.1:{api_port}"
[api.keys.prometheus]
key = "{KEY}"
scopes = ["metrics"]
""")
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: ringcast
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {KEY}
    static_configs:
      - targets: ["127.0.0.1:{api_port}"]
""")
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def query(q):
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)["data"]["result"]

    async def main():
        clients = [await websockets.connect(f"{server.url}/ws?topic=p") for _ in range(3)]
        server.push("p", "x")
        found = None
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                found = query("ringcast_open_connections")
                if found and found[0]["value"][1] == "3":
                    break
            except OSError:
                pass
            await asyncio.sleep(0.5)
        assert found and found[0]["value"][1] == "3", found
        # Every shard's series is there, and the publish histogram has its observation.
        assert len(query("ringcast_connections")) == server.stats()["shard_count"]
        assert query("ringcast_publish_seconds_count")[0]["value"][1] == "1"
        # Every panel of the Grafana dashboard we ship is a query Prometheus answers with data
        # (rates need two scrapes: wait for them).
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                               "grafana-dashboard.json")) as f:
            exprs = [t["expr"] for p in json.load(f)["panels"] for t in p["targets"]]
        assert len(exprs) >= 10
        for e in exprs:
            got = None
            deadline = time.time() + 20
            while time.time() < deadline and not got:
                got = query(e)
                if not got:
                    await asyncio.sleep(0.5)
            assert got, f"no data for the dashboard's {e!r}"
        for c in clients:
            await c.close()
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()
