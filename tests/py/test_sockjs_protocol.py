"""The SockJS protocol's rules (issue #30), each checked with raw HTTP requests and Python
`websockets` against `ringcast serve --echo` and its four services (`/echo`, `/close`,
`/disabled_websocket_echo`, `/cookie_needed_echo`), on both io paths with 4 shards, so one
session's requests land on several shards. The protocol's own suite is run by hand (see
BENCHMARKS.md); these are ringcast's tests of the same rules."""
import asyncio
import json
import re
import socket
import time
import uuid

import pytest
import websockets


@pytest.fixture(params=["multishot", "compat"])
def suite(request, make_server):
    args = ["--shards", "4", "--echo", "--no-auth"]
    if request.param == "compat":
        args.append("--io-compat")
    return make_server(*args)


class Conn:
    """One keep-alive HTTP connection, its answers read by their framing."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, method, path, body=b"", headers=None, version="1.1"):
        h = {"Host": "x", **(headers or {})}
        if method == "POST" or body:
            h["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        self.s.sendall(head.encode() + b"\r\n" + body)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(": ")
            headers[k.lower()] = v
        return int(lines[0].split()[1]), headers

    def body(self, headers):
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def request(self, method, path, body=b"", headers=None, version="1.1"):
        self.send(method, path, body, headers, version)
        status, h = self.head()
        return status, h, self.body(h) if status != 304 else b""

    def chunk(self):
        """One chunk of a chunked answer (b"" at its end)."""
        while b"\r\n" not in self.buf:
            self._fill()
        size, _, self.buf = self.buf.partition(b"\r\n")
        n = int(size, 16)
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def closed(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                self._fill()
        except EOFError:
            return True

    def close(self):
        self.s.close()


def sid():
    return str(uuid.uuid4())


def req(port, *args, **kw):
    c = Conn(port)
    try:
        return c.request(*args, **kw)
    finally:
        c.close()


NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"


def test_iframe_page_is_served_cacheable_with_an_etag(suite):
    for path in ["/echo/iframe.html", "/echo/iframe-1.6.1.html", "/echo/iframe-x.html?t=1"]:
        status, h, body = req(suite.port, "GET", path)
        assert status == 200 and h["content-type"] == "text/html; charset=UTF-8"
        assert "public" in h["cache-control"] and re.search(r"max-age=\d{7,}", h["cache-control"])
        assert h["expires"] and h["etag"] and "last-modified" not in h and "set-cookie" not in h
        assert re.search(rb'<script src="(/|http)[^"]*"></script>', body)
        assert b"SockJS.bootstrap_iframe();" in body
    status, h, body = req(suite.port, "GET", "/echo/iframe.html", headers={"If-None-Match": h["etag"]})
    assert status == 304 and "content-type" not in h and body == b""
    for bad in ["/echo/iframe.htm", "/echo/IFRAME.HTML", "/echo/iframe-/.html", "/echo/iframe"]:
        assert req(suite.port, "GET", bad)[0] == 404, bad


def test_info_and_preflights(suite):
    status, h, body = req(suite.port, "GET", "/echo/info", headers={"Origin": "http://a"})
    assert status == 200 and h["content-type"] == "application/json; charset=UTF-8"
    assert h["cache-control"] == NO_CACHE and "set-cookie" not in h
    assert h["access-control-allow-origin"] == "http://a"
    assert h["access-control-allow-credentials"] == "true"
    info = json.loads(body)
    assert info["websocket"] is True and info["cookie_needed"] is False
    assert json.loads(req(suite.port, "GET", "/echo/info")[2])["entropy"] != info["entropy"]
    assert json.loads(req(suite.port, "GET", "/disabled_websocket_echo/info")[2])["websocket"] is False
    status, h, body = req(suite.port, "GET", "/cookie_needed_echo/info")
    assert json.loads(body)["cookie_needed"] is True and "set-cookie" not in h
    # Preflights: cacheable for a year, the page's origin ("null" from a file) echoed.
    for path, methods in [("/echo/info", "OPTIONS, GET"), ("/echo/abc/abc/xhr", "OPTIONS, POST"),
                          ("/echo/abc/abc/xhr_streaming", "OPTIONS, POST")]:
        for origin in ["http://a", "null"]:
            status, h, body = req(suite.port, "OPTIONS", path,
                                  headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "a, b"})
            assert status == 204 and body == b""
            assert h["access-control-allow-origin"] == origin
            assert "public" in h["cache-control"] and int(h["access-control-max-age"]) > 1_000_000
            assert h["expires"] and h["access-control-allow-methods"] == methods
            assert h["access-control-allow-headers"] == "a, b"
    # Without an Origin: any origin, no credentials.
    status, h, _ = req(suite.port, "GET", "/echo/info")
    assert h["access-control-allow-origin"] == "*" and "access-control-allow-credentials" not in h


def test_websocket_urls_refuse_what_is_no_upgrade(suite):
    status, _, body = req(suite.port, "GET", "/echo/0/0/websocket")
    assert status == 400 and b'Can "Upgrade" only to "WebSocket".' in body
    status, _, _ = req(suite.port, "GET", "/echo/0/0/websocket",
                       headers={"Upgrade": "WebSocket", "Connection": "close"})
    assert status == 400
    for h in [{"Upgrade": "WebSocket", "Connection": "Upgrade"}, {}]:
        status, headers, body = req(suite.port, "POST", "/echo/0/0/websocket", headers=h)
        assert status == 405 and headers["allow"] == "GET" and "content-type" not in headers
        assert body == b""

    async def broken_json():
        async with websockets.connect(f"{suite.url}/echo/000/{sid()}/websocket") as ws:
            assert await ws.recv() == "o"
            await ws.send('["a')
            # Dropped at once: no c[...] frame before the close.
            with pytest.raises(websockets.ConnectionClosed):
                msg = await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError(f"got {msg!r}")

    asyncio.run(broken_json())


def test_streaming_ends_at_the_response_limit_and_the_session_goes_on(suite):
    url = f"/echo/000/{sid()}"
    stream = Conn(suite.port)
    stream.send("POST", url + "/xhr_streaming")
    status, h = stream.head()
    assert status == 200 and h["transfer-encoding"] == "chunked"
    assert h["content-type"] == "application/javascript; charset=UTF-8"
    assert h["cache-control"] == NO_CACHE
    assert stream.chunk() == b"h" * 2048 + b"\n" and stream.chunk() == b"o\n"
    msg = '"' + "x" * 128 + '"'
    sent = 0
    while True:
        assert req(suite.port, "POST", url + "/xhr_send", f"[{msg}]".encode())[0] == 204
        sent += 1
        got = stream.chunk()
        assert got == f"a[{msg}]\n".encode()
        # 4,096 bytes of frames for the suite's services: the 31st frame passes it.
        if sent == 31:
            break
    assert stream.chunk() == b"", "the response ends after the limit"
    stream.close()
    # Nothing lost: what is sent meanwhile waits for the client's next request.
    assert req(suite.port, "POST", url + "/xhr_send", b'["after"]')[0] == 204
    assert req(suite.port, "POST", url + "/xhr")[2] == b'a["after"]\n'


def test_eventsource_and_htmlfile(suite):
    url = f"/echo/000/{sid()}"
    es = Conn(suite.port)
    es.send("GET", url + "/eventsource")
    status, h = es.head()
    assert status == 200 and h["content-type"] == "text/event-stream"
    assert h["cache-control"] == NO_CACHE
    assert es.chunk() == b"\r\n" and es.chunk() == b"data: o\r\n\r\n"
    req(suite.port, "POST", url + "/xhr_send", rb'["  \u0000\n\r "]')
    assert es.chunk() == b'data: a["  \\u0000\\n\\r "]\r\n\r\n'
    es.close()

    url = f"/echo/000/{sid()}"
    hf = Conn(suite.port)
    hf.send("GET", url + "/htmlfile?c=%63allback")
    status, h = hf.head()
    assert status == 200 and h["content-type"] == "text/html; charset=UTF-8"
    page = hf.chunk()
    assert len(page) > 1024 and b"var c = parent.callback;" in page
    assert hf.chunk() == b'<script>\np("o");\n</script>\r\n'
    req(suite.port, "POST", url + "/xhr_send", b'["</script><b>"]')
    # No message can end the script element it travels in.
    assert hf.chunk() == b'<script>\np("a[\\"\\u003c/script\\u003e\\u003cb\\u003e\\"]");\n</script>\r\n'
    hf.close()
    for query, words in [("", b'"callback" parameter required'), ("?c=abc(", b'invalid "callback"'),
                         ("?c=%20", b'invalid "callback"')]:
        status, _, body = req(suite.port, "GET", f"/echo/a/a/htmlfile{query}")
        assert status == 500 and words in body


def test_jsonp_polling_and_sending(suite):
    url = f"/echo/000/{sid()}"
    status, h, body = req(suite.port, "GET", url + "/jsonp?c=cb")
    assert status == 200 and body == b'/**/cb("o");\r\n'
    assert h["content-type"] == "application/javascript; charset=UTF-8" and h["cache-control"] == NO_CACHE
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, h, body = req(suite.port, "POST", url + "/jsonp_send", b"d=%5B%22x%22%5D", headers=form)
    assert (status, body) == (200, b"ok") and h["content-type"] == "text/plain; charset=UTF-8"
    assert req(suite.port, "POST", url + "/jsonp_send", b'["y"]', headers={"Content-Type": "text/plain"})[2] == b"ok"
    for bad, words in [(b"d=%5B%22x", b"Broken JSON encoding."), (b"", b"Payload expected."),
                       (b"d=", b"Payload expected."), (b"p=p", b"Payload expected.")]:
        status, _, body = req(suite.port, "POST", url + "/jsonp_send", bad, headers=form)
        assert status == 500 and words in body, bad
    assert req(suite.port, "GET", url + "/jsonp?c=cb")[2] == b'/**/cb("a[\\"x\\",\\"y\\"]");\r\n'
    # The close service, by JSONP: its close frame, again and again.
    url = f"/close/000/{sid()}"
    assert req(suite.port, "GET", url + "/jsonp?c=x")[2] == b'/**/x("o");\r\n'
    for _ in range(2):
        assert req(suite.port, "GET", url + "/jsonp?c=x")[2] == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'


def test_jsonp_is_off_on_stomp_endpoints_unless_configured(make_server):
    s = make_server("--shards", "2", "--no-auth")
    status, _, body = req(s.port, "GET", f"/ws/000/{sid()}/jsonp?c=x")
    assert status == 404 and b"jsonp is off" in body
    s2 = make_server("--shards", "2", "--no-auth", config="[sockjs]\njsonp = true\n")
    assert req(s2.port, "GET", f"/ws/000/{sid()}/jsonp?c=x")[2] == b'/**/x("o");\r\n'


def test_jsessionid_only_where_the_service_asks_for_it(suite):
    status, h, _ = req(suite.port, "POST", f"/echo/000/{sid()}/xhr")
    assert status == 200 and "set-cookie" not in h
    status, h, _ = req(suite.port, "POST", f"/cookie_needed_echo/000/{sid()}/xhr")
    assert h["set-cookie"].split(";")[0] == "JSESSIONID=dummy"
    status, h, _ = req(suite.port, "POST", f"/cookie_needed_echo/000/{sid()}/xhr",
                       headers={"Cookie": "JSESSIONID=abcdef"})
    assert h["set-cookie"].split(";")[0] == "JSESSIONID=abcdef" and "path=/" in h["set-cookie"].lower()
    url = f"/cookie_needed_echo/000/{sid()}"
    status, h, _ = req(suite.port, "GET", url + "/jsonp?c=cb")
    assert h["set-cookie"].startswith("JSESSIONID=dummy")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, h, _ = req(suite.port, "POST", url + "/jsonp_send", b"d=%5B%5D", headers=form)
    assert h["set-cookie"].startswith("JSESSIONID=dummy")


def test_http10_streaming_is_not_chunked_and_ends_with_the_connection(suite):
    c = Conn(suite.port)
    c.send("POST", f"/close/000/{sid()}/xhr_streaming", headers={"Connection": "Keep-Alive"},
           version="1.0")
    status, h = c.head()
    assert status == 200 and "transfer-encoding" not in h and "content-length" not in h
    while len(c.buf) < 2049 + 2 + 19:
        c._fill()
    assert c.buf == b"h" * 2048 + b"\n" + b"o\n" + b'c[3000,"Go away!"]\n'
    assert c.closed()


def test_a_cut_off_request_interrupts_its_session(suite):
    url = f"/echo/000/{sid()}"
    first = Conn(suite.port)
    first.send("POST", url + "/xhr_streaming")
    first.head()
    assert first.chunk().startswith(b"h") and first.chunk() == b"o\n"
    # A second receiver while the first is there: refused.
    second = Conn(suite.port)
    second.send("POST", url + "/xhr_streaming")
    second.head()
    second.chunk()
    assert second.chunk() == b'c[2010,"Another connection still open"]\n'
    second.close()
    first.close()
    # The next request, sent at once, hears that the session was interrupted.
    third = Conn(suite.port)
    third.send("POST", url + "/xhr_streaming")
    third.head()
    third.chunk()
    assert third.chunk() == b'c[1002,"Connection interrupted"]\n'
    third.close()

