"""Operator experience (issue #22): a second server on a served address is refused, logs carry
no colour codes off a terminal, --check-config fails early with the reason (key files relative
to the config file), a push to an unconfigured project says so, and `make install` / `make deb`
lay out the files `make tune` uses, with a unit systemd accepts."""
import glob
import socket
import os
import shutil
import subprocess
import tempfile

from conftest import BIN, ROOT, free_port


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kw)


def test_a_second_server_on_the_same_address_is_refused(make_server):
    first = make_server("--no-auth")
    d = tempfile.mkdtemp()
    r = run(BIN, "serve", "--no-auth", "--listen", f"127.0.0.1:{first.port}",
            "--admin-socket", os.path.join(d, "admin.sock"))
    assert r.returncode != 0
    assert f"127.0.0.1:{first.port} is already in use by another process" in r.stderr
    # One line says it, not one per shard.
    assert r.stderr.count("already in use") == 1, r.stderr
    assert first.proc.poll() is None


def test_no_colour_codes_when_the_log_is_not_a_terminal(make_server):
    s = make_server("--no-auth")
    out = s.output()
    assert "listening on ws://" in out and "auth OFF" in out
    assert "\x1b[" not in out
    assert "remove --no-auth" not in out


def test_json_logs(make_server):
    s = make_server("--no-auth", "--log-format", "json")
    import json
    lines = [json.loads(line) for line in s.output().splitlines() if line.strip()]
    assert any("listening on ws://" in l["fields"]["message"] for l in lines), lines


def test_check_config_fails_early_and_key_files_are_relative_to_it():
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "ringcast.toml")
    with open(cfg, "w") as f:
        f.write('[projects.p]\njwt_alg = "RS256"\njwt_public_key = "keys/p.pub.pem"\n')
    r = run(BIN, "serve", "--config", cfg, "--check-config", cwd="/")
    assert r.returncode != 0 and os.path.join(d, "keys/p.pub.pem") in r.stderr, r.stderr
    with open(cfg, "w") as f:
        f.write('[projects.p]\njwt_alg = "HS512"\njwt_secret = "x"\n')
    r = run(BIN, "serve", "--config", cfg, "--check-config")
    assert r.returncode != 0 and "use HS256, RS256 or ES256" in r.stderr, r.stderr
    with open(cfg, "w") as f:
        f.write('[projects.p]\njwt_secret = "a-good-long-secret-0123456789"\n')
    r = run(BIN, "serve", "--config", cfg, "--check-config")
    assert r.returncode == 0 and "configuration OK: 1 project(s), auth on" in r.stdout
    r = run(BIN, "serve", "--config", cfg, "--print-config")
    assert "a-good-long-secret" not in r.stdout


def test_guessable_secrets_are_warned_about_and_errors_point_the_right_way(make_server):
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "ringcast.toml")
    for secret, words in [("x", "has 1 bytes"), ("CHANGE-ME: later", "still the placeholder")]:
        with open(cfg, "w") as f:
            f.write(f'[projects.p]\njwt_secret = "{secret}"\n')
        r = run(BIN, "serve", "--config", cfg, "--check-config")
        assert r.returncode == 0 and words in r.stderr, r.stderr
    with open(cfg, "w") as f:
        f.write('[projects.p]\njwt_secret = "a-good-long-secret-0123456789-abcdef"\n'
                '[projects.q]\njwt_secret = "another-good-long-secret-0123456789"\n')
    r = run(BIN, "serve", "--config", cfg, "--check-config")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    # `ringcast token` without --project names the projects there are.
    r = run(BIN, "token", "--config", cfg, "--user", "alice")
    assert r.returncode != 0 and "configured: p, q" in r.stderr and "--project" in r.stderr, r.stderr
    # A CONNECT without projectId is told how to name one.
    s = make_server(config=open(cfg).read())
    import asyncio
    import websockets
    from conftest import frame, parse

    async def connect():
        async with websockets.connect(f"{s.url}/ws", subprotocols=["v12.stomp"]) as ws:
            await ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "x", "token": "a.b.c"}))
            return parse(await asyncio.wait_for(ws.recv(), 5))

    cmd, _, body = asyncio.run(connect())
    assert cmd == "ERROR" and b"projectId" in body, body


def test_topic_names_are_checked_everywhere_a_topic_is_named(make_server):
    s = make_server("--no-auth")
    r = s.cli("push", "--topic", "/topic/news", "x", check=False)
    assert r.returncode != 0 and 'give the name alone, "news"' in r.stderr, r.stderr
    r = s.cli("push", "--topic", "a b", "x", check=False)
    assert r.returncode != 0 and "no white space" in r.stderr, r.stderr
    import json as _json
    import socket as _socket
    body = b'{"destination": "/topic/ok", "body": "1"}\n{"destination": "/topic/a b", "body": "2"}\n'
    k = _socket.socket(_socket.AF_UNIX)
    k.connect(s.sock)
    k.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    out = b""
    while chunk := k.recv(65536):
        out += chunk
    results = _json.loads(out.partition(b"\r\n\r\n")[2])["results"]
    assert results[0] == {"sessions": 0} and results[1]["status"] == 400, results
    assert "no white space" in results[1]["error"]


def test_pushing_to_an_unconfigured_project_says_so(make_server):
    s = make_server(config='[projects.p]\njwt_secret = "a-good-long-secret-0123456789"\n')
    r = s.cli("push", "--project", "nope", "--topic", "t", "x", check=False)
    assert r.returncode != 0
    assert 'project "nope" is not configured here' in r.stderr
    assert s.cli("push", "--project", "p", "--topic", "t", "x").returncode == 0


def test_make_install_into_a_destdir_gives_a_unit_systemd_accepts():
    dest = tempfile.mkdtemp()
    r = run("make", "-s", "install", f"DESTDIR={dest}", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for f in ["usr/local/bin/ringcast", "etc/ringcast/ringcast.toml",
              "etc/systemd/system/ringcast.service", "etc/sysctl.d/99-ringcast.conf",
              "etc/security/limits.d/ringcast.conf"]:
        assert os.path.isfile(os.path.join(dest, f)), f
    # Installed stripped, its debug info apart (and linked).
    installed = os.path.join(dest, "usr/local/bin/ringcast")
    debug = os.path.join(dest, "usr/lib/debug/usr/local/bin/ringcast.debug")
    assert os.path.isfile(debug)
    assert os.path.getsize(installed) < os.path.getsize(BIN) / 2, (os.path.getsize(installed), os.path.getsize(BIN))
    sections = run("objdump", "-h", installed).stdout
    assert ".debug_info" not in sections and ".gnu_debuglink" in sections
    assert run(installed, "--version").returncode == 0
    # The example configuration starts as it is, with a warning about its placeholder secret.
    r = run(BIN, "serve", "--config", os.path.join(dest, "etc/ringcast/ringcast.toml"), "--check-config")
    assert r.returncode == 0, r.stderr
    assert "jwt_secret is still the placeholder" in r.stderr, r.stderr
    # systemd-analyze checks the unit, its binary included (pointed at the staged one).
    unit_dir = tempfile.mkdtemp()
    with open(os.path.join(dest, "etc/systemd/system/ringcast.service")) as f:
        unit = f.read().replace("/usr/local/bin/ringcast", os.path.join(dest, "usr/local/bin/ringcast"))
    with open(os.path.join(unit_dir, "ringcast.service"), "w") as f:
        f.write(unit)
    r = run("systemd-analyze", "verify", os.path.join(unit_dir, "ringcast.service"))
    assert r.returncode == 0, r.stderr
    r = run("make", "-s", "uninstall", f"DESTDIR={dest}", cwd=ROOT)
    assert r.returncode == 0 and not os.path.exists(os.path.join(dest, "usr/local/bin/ringcast"))
    assert os.path.isfile(os.path.join(dest, "etc/ringcast/ringcast.toml"))  # kept without PURGE


def test_cargo_deb_packages_what_make_tune_installs():
    for old in glob.glob(os.path.join(ROOT, "target/debian/*.deb")):
        os.remove(old)
    r = run("make", "-s", "deb", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    [deb] = glob.glob(os.path.join(ROOT, "target/debian/ringcast_*.deb"))
    listing = run("dpkg", "-c", deb).stdout
    for f in ["./usr/bin/ringcast", "./lib/systemd/system/ringcast.service",
              "./etc/sysctl.d/99-ringcast.conf", "./etc/security/limits.d/ringcast.conf",
              "./etc/ringcast/ringcast.toml"]:
        assert f in listing, listing
    work = tempfile.mkdtemp()
    run("dpkg-deb", "-x", deb, work)
    for f in ["etc/sysctl.d/99-ringcast.conf", "etc/security/limits.d/ringcast.conf"]:
        with open(os.path.join(work, f)) as a, open(os.path.join(ROOT, "tuning", f.split("/")[-1]
                                                        if "sysctl" in f else "limits.d/ringcast.conf")) as b:
            assert a.read() == b.read(), f
    with open(os.path.join(work, "lib/systemd/system/ringcast.service")) as f:
        assert "ExecStart=/usr/bin/ringcast serve" in f.read()
    assert run("dpkg-deb", "-I", deb).stdout.count("postinst") >= 1
    shutil.rmtree(work)


def keys_by_table(text):
    keys, table = set(), ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            parts = line.strip("[]").split(".")
            table = parts[0]
            if line.startswith("[[") and len(parts) > 1:
                keys.add((table, parts[1]))  # an array of tables: `redis_stream = []` when empty
        elif "=" in line and not line.startswith("#"):
            keys.add((table, line.split("=")[0].strip()))
    return keys


def test_the_configuration_reference_has_every_key():
    with open(os.path.join(ROOT, "docs", "ringcast.toml")) as f:
        documented = keys_by_table(f.read())
    printed = keys_by_table(run(BIN, "serve", "--print-config").stdout)
    assert printed - documented == set(), printed - documented
    # And the example tables (projects, API keys, ingest) are what the server prints for them.
    r = run(BIN, "serve", "--config", os.path.join(ROOT, "docs", "ringcast.toml"), "--print-config")
    assert r.returncode == 0, r.stderr
    assert keys_by_table(r.stdout) == documented


def test_stats_count_a_publish_once(make_server):
    s = make_server("--no-auth", "--shards", "4")
    s.push("t", "x")
    st = s.stats()
    assert st["publishes"] == 1
    assert all("fanouts" in sh for sh in st["shards"])


def test_cli_polish(make_server):
    # Boolean environment variables take 1/0; a bare port gets a suggestion.
    r = run(BIN, "serve", "--print-config", env={**os.environ, "RINGCAST_NO_AUTH": "1"})
    assert r.returncode == 0 and "enabled = false" in r.stdout.split("[auth]")[1].split("[")[0]
    r = run(BIN, "serve", "--listen", "8081", "--print-config")
    assert r.returncode != 0 and "use 127.0.0.1:8081" in r.stderr
    r = run(BIN, "doctor", "--connections", "1M", "--json")
    import json
    assert json.loads(r.stdout)["connections"] == 1_000_000
    # A raw URL with a misspelt parameter is a 400, not a session that hears nothing.
    s = make_server("--no-auth")
    c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    c.sendall(b"GET /ws?topci=news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    answer = c.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400") and 'unknown query parameter "topci"' in answer, answer


def test_sessions_list_a_raw_sessions_topics(make_server):
    import asyncio
    import jwt
    import time
    import websockets
    secret = "raw-topics-secret-0123456789abcdef"
    s = make_server(config=f'[projects.p]\njwt_secret = "{secret}"\n')
    tok = jwt.encode({"sub": "rita", "exp": int(time.time()) + 300}, secret, algorithm="HS256")

    async def main():
        async with websockets.connect(f"{s.url}/ws?project=p&topic=a&topic=b&token={tok}"):
            await asyncio.sleep(0.2)
            from conftest import admin
            status, body = admin(s.sock, "GET", "/sessions?project=p")
            assert status == 200
            [sess] = body["sessions"]
            assert sess["protocol"] == "raw" and sess["user"] == "rita"
            assert sorted(x["destination"] for x in sess["subscriptions"]) == ["/topic/a", "/topic/b"]

    asyncio.run(asyncio.wait_for(main(), 20))
