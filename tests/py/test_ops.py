"""Operations: `ringcast doctor`, `make tune-check`, and the bench's 20,000-connection raw and
STOMP runs (issue 5's small-N checks)."""
import json
import os
import subprocess

from conftest import BIN, ROOT
from test_scale import BENCH


def test_doctor_reports_a_lowered_fd_limit_and_the_fix():
    r = subprocess.run(["prlimit", "--nofile=256:256", BIN, "doctor", "--connections", "100000",
                        "--local-bench"], capture_output=True, text=True, timeout=30)
    out = r.stdout
    assert "[WARN] nofile per fd table" in out, out
    assert "hard 256" in out and "→" in out


def test_doctor_fails_when_memory_cannot_hold_n():
    r = subprocess.run([BIN, "doctor", "--connections", "100000000"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "[FIX ] memory" in r.stdout, r.stdout
    assert "cannot hold 100000000 connections" in r.stderr


def sysctls():
    keys = ["net.core.somaxconn", "net.ipv4.tcp_mem", "net.ipv4.ip_local_port_range"]
    return {k: open("/proc/sys/" + k.replace(".", "/")).read() for k in keys}


def test_tune_check_changes_nothing():
    before = sysctls()
    r = subprocess.run(["make", "-s", "tune-check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "== sysctl" in r.stdout and "nofile" in r.stdout
    assert sysctls() == before


def test_bench_20000_raw_and_stomp(make_server):
    cfg = ('[auth]\nuser_claim = "sub"\n[projects.bench]\njwt_secret = "bench-secret"\n'
           '[stomp]\nheartbeat_send_ms = 10000\nheartbeat_receive_ms = 10000\n')
    server = make_server("--shards", "2", "--max-connections", "25000", config=cfg)
    cfg_path = os.path.join(server.dir, "ringcast.toml")
    for mode in ("raw", "stomp"):
        out = os.path.join(server.dir, f"{mode}.json")
        url = f"{server.url}/ws?topic=ops&project=bench"
        args = [BENCH, mode, "-n", "20000", "--url", url, "--admin-socket", server.sock,
                "--messages", "2", "--timeout", "60", "--json", out]
        if mode == "raw":
            # Raw mode with auth on needs a token in the URL; this server requires one.
            token = subprocess.run([BIN, "token", "--config", cfg_path, "--project", "bench", "--user", "b"],
                                   capture_output=True, text=True, check=True).stdout.strip()
            args[args.index(url)] = url + f"&token={token}"
        else:
            args += ["--config", cfg_path, "--heartbeat-ms", "10000"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.load(open(out))
        assert res["connected"] == 20000 and res["failed"] == 0, res["errors"]
        assert [m["delivered"] for m in res["messages"]] == [20000, 20000]
