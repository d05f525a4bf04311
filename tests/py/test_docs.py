"""Every `curl` example in docs/api.md runs against a real server (admin socket and network
API) and gets the status its `# →` line promises."""
import os
import re
import subprocess

from conftest import ROOT, free_port, wait_port

KEY = "docs-example-key-0123456789"


def examples():
    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        m = re.match(r"# → (\d{3})", block)
        if m:
            yield int(m.group(1)), block


def test_every_documented_curl_example_runs(make_server):
    port = free_port()
    s = make_server(config=f"""
[auth]
enabled = true

[projects.demo]
jwt_secret = "docs-demo-secret-0123456789"

[api]
listen = "127.0.0.1:{port}"
msgcenter_compat = true

[api.keys.docs]
key = "{KEY}"
scopes = ["publish", "admin", "metrics"]
""")
    wait_port(port)
    found = list(examples())
    assert len(found) >= 12, found
    env = {**os.environ, "SOCK": s.sock, "API": f"http://127.0.0.1:{port}", "KEY": KEY}
    # Each example's curl also prints the status on a line of its own.
    wrapper = "curl() { command curl -w '\\n%{http_code}' \"$@\"; }\n"
    for status, block in found:
        r = subprocess.run(["bash", "-c", wrapper + block], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, (block, r.stderr)
        got = r.stdout.strip().splitlines()[-1]
        assert got == str(status), (block, r.stdout)
