//! The admin socket's HTTP/1.1, sans-IO: parse one request (with a bounded body), encode one
//! response. One request per connection, answered with `Connection: close`: the admin API is
//! low-rate, and `curl --unix-socket` and the CLI both expect exactly this.

use serde_json::{Value, json};

use crate::ws::handshake::status_text;

const MAX_HEADERS: usize = 32;
const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
/// One admin request.
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without its query.
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Cookie` header, if any (the web console's session).
    pub cookie: Option<String>,
    /// The `X-CSRF-Token` header, if any (the web console's state-changing requests).
    pub csrf: Option<String>,
    /// The client keeps the connection for another request (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// Bytes of the buffer this request used (a next one may follow).
    pub len: usize,
}

impl Request {
    /// The first value of a query parameter.
    pub fn query_first(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
/// What the parser made of the bytes so far.
// One per request, matched and moved out at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Parse {
    /// The request is not complete yet.
    Partial,
    /// A whole request.
    Done(Request),
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// One admin answer (`Connection: close`).
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// More headers (`Set-Cookie`, `Cache-Control`, the console's security headers).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, v: &Value) -> Response {
        let mut body = serde_json::to_vec(v).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// A JSON `{"error": msg}` answer.
    pub fn error(status: u16, msg: impl AsRef<str>) -> Response {
        Response::json(status, &json!({ "error": msg.as_ref() }))
    }

    /// A text answer of any content type (the Prometheus exposition).
    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The answer's bytes: status line, headers, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with(false)
    }

    /// The answer's bytes, saying whether the connection stays open for another request.
    pub fn to_bytes_with(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            status_text(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        if !self
            .headers
            .iter()
            .any(|(k, _)| *k == "X-Content-Type-Options")
        {
            // Bodies can echo what the client sent (a path, a name): never sniffed as HTML.
            head.push_str("X-Content-Type-Options: nosniff\r\n");
        }
        for (k, v) in &self.headers {
            // Values are ours, never a client's; a line break would still end the header.
            head.push_str(&format!("{k}: {}\r\n", v.replace(['\r', '\n'], " ")));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads one request from the bytes received so far.
pub fn parse(buf: &[u8], max_body: usize) -> Result<Parse, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        // A head over the limit is refused whether or not it arrived whole in one read.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => {
            return Err(Response::error(431, "request head too large"));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Response::error(431, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
        Err(e) => return Err(Response::error(400, format!("malformed HTTP request: {e}"))),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let len = match crate::http::body(req.headers) {
        Ok(crate::http::Body::Length(n)) => n,
        Ok(crate::http::Body::Chunked) => {
            return Err(Response::error(
                411,
                "chunked bodies are not supported: send Content-Length",
            ));
        }
        Err((status, why)) => return Err(Response::error(status, why)),
    };
    if len > max_body {
        return Err(Response::error(
            413,
            format!("body of {len} bytes is over the {max_body}-byte limit"),
        ));
    }
    if buf.len() < head + len {
        return Ok(Parse::Partial);
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let connection = header("connection").map(|c| c.to_ascii_lowercase());
    let keep_alive = match req.version {
        Some(1) => !connection.as_deref().is_some_and(|c| c.contains("close")),
        _ => connection
            .as_deref()
            .is_some_and(|c| c.contains("keep-alive")),
    };
    Ok(Parse::Done(Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        body: buf[head..head + len].to_vec(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        cookie: header("cookie"),
        csrf: header("x-csrf-token"),
        keep_alive,
        len: head + len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_body_and_query() {
        let raw = b"POST /publish?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd";
        assert!(matches!(
            parse(&raw[..raw.len() - 1], 100),
            Ok(Parse::Partial)
        ));
        let Ok(Parse::Done(r)) = parse(raw, 100) else {
            panic!()
        };
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/publish");
        assert_eq!(r.query_first("x"), Some("1"));
        assert_eq!(r.body, b"abcd");
        assert!(r.keep_alive && r.len == raw.len());
        let close =
            b"GET /stats HTTP/1.1\r\nConnection: close\r\nAuthorization: Bearer k\r\n\r\nGET";
        let Ok(Parse::Done(r)) = parse(close, 100) else {
            panic!()
        };
        assert!(!r.keep_alive && r.authorization.as_deref() == Some("Bearer k"));
        assert_eq!(r.len, close.len() - 3);
    }

    #[test]
    fn refusals() {
        let big = b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
        assert_eq!(parse(big, 100).unwrap_err().status, 413);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(20_000));
        assert_eq!(parse(huge.as_bytes(), 100).unwrap_err().status, 431);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(chunked, 100).unwrap_err().status, 411);
        assert_eq!(parse(b"\x00\x01\r\n\r\n", 100).unwrap_err().status, 400);
        for bad in [
            "Content-Length: +4",
            "Content-Length: -4",
            "Content-Length: 4 4",
            "Content-Length: 0x4",
            "Content-Length: 4\r\nContent-Length: 5",
        ] {
            let raw = format!("POST / HTTP/1.1\r\n{bad}\r\n\r\nabcde");
            let e = parse(raw.as_bytes(), 100).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
        let same = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert!(matches!(parse(same, 100), Ok(Parse::Done(r)) if r.body == b"ab"));
        let r = Response::error(404, "no such route").to_bytes();
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.ends_with("{\"error\":\"no such route\"}\n"));
    }
}
