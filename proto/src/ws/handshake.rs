//! The HTTP/1.1 upgrade that opens a WebSocket (RFC 6455 §4.2), sans-IO.
//!
//! `parse` reads the request bytes a connection has received so far and either asks for more,
//! accepts the upgrade, or returns the HTTP status and reason the client should get. Routing
//! (which path, which subprotocol) is decided by the caller; this module only knows the RFC.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

/// The GUID every WebSocket server appends to the client's key (RFC 6455 §1.3).
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// More headers than any browser sends; beyond this the request is refused rather than parsed.
const MAX_HEADERS: usize = 40;

/// A complete HTTP request head, reduced to what the WebSocket and SockJS endpoints need from
/// it; `upgrade` says whether it is a valid WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `OPTIONS`, ...
    pub method: String,
    /// The request path without its query.
    pub path: String,
    /// Decoded query pairs, in order (`?topic=a&topic=b` gives two pairs).
    pub query: Vec<(String, String)>,
    /// The `Sec-WebSocket-Accept` value to answer with, or why this request is no valid
    /// upgrade (a SockJS endpoint may still serve it as plain HTTP).
    pub upgrade: Result<String, Reject>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in the client's order of preference.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` headers as sent (offers, in order).
    pub extensions: Vec<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Cookie` header.
    pub cookie: Option<String>,
    /// `Access-Control-Request-Headers`, for a CORS preflight.
    pub cors_headers: Option<String>,
    /// The body's length (`Content-Length`; 0 without one).
    pub content_length: usize,
    /// The body comes in chunks (`Transfer-Encoding: chunked`: Node's `http` sends bodies so).
    pub chunked: bool,
    /// HTTP/1.1 with no `Connection: close` (HTTP/1.0: only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// An HTTP/1.0 request (its streaming answers cannot be chunked).
    pub http10: bool,
    /// `If-None-Match`, for what is served with an `ETag`.
    pub if_none_match: Option<String>,
    /// The body is `application/x-www-form-urlencoded` (`jsonp_send`).
    pub form: bool,
}

impl Request {
    /// All values of one query parameter.
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query_first(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why an upgrade is refused: the HTTP status and a reason the body carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The HTTP status.
    pub status: u16,
    /// Why, in words (the body of the answer).
    pub reason: String,
    /// A 405's `Allow`: then the answer has no body, as SockJS wants it.
    pub allow: Option<&'static str>,
    /// Seconds for a `Retry-After` (a server too busy to take the connection now).
    pub retry_after: Option<u64>,
}

impl Reject {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Reject {
            status,
            reason: reason.into(),
            allow: None,
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: the server sheds load and says when to come back.
    pub fn busy(retry_after_s: u64) -> Self {
        Reject {
            retry_after: Some(retry_after_s),
            ..Reject::new(503, format!("server busy: retry in {retry_after_s} s"))
        }
    }

    /// 405, only `allow` being allowed; an empty answer.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Reject {
            status: 405,
            reason: String::new(),
            allow: Some(allow),
            retry_after: None,
        }
    }
}

/// The outcome of reading the bytes received so far.
#[derive(Debug)]
pub enum Parse {
    /// The header block is not complete yet.
    Partial,
    /// A complete request head; `consumed` bytes belong to it (anything after is its body, or
    /// WebSocket data after an upgrade).
    Done {
        /// The request (boxed: it is large, and most reads end `Partial`).
        request: Box<Request>,
        /// Bytes of the buffer it used.
        consumed: usize,
    },
}

/// Reads a request head from `buf`; `max_bytes` bounds the header block (slowloris and
/// oversized cookies get 431 instead of an ever-growing buffer). Only a head that is not HTTP
/// at all is an error here; whether it is a valid upgrade is in [`Request::upgrade`].
pub fn parse(buf: &[u8], max_bytes: usize) -> Result<Parse, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_bytes {
                Err(Reject::new(431, "request header block too large"))
            } else {
                Ok(Parse::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(431, "too many request headers"));
        }
        Err(e) => return Err(Reject::new(400, format!("malformed HTTP request: {e}"))),
    };
    if consumed > max_bytes {
        return Err(Reject::new(431, "request header block too large"));
    }
    let header = |name: &str| -> Option<&str> {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if header("host").is_none() && req.version == Some(1) {
        return Err(Reject::new(400, "missing Host header"));
    }
    let (content_length, chunked) = match crate::http::body(req.headers) {
        Ok(crate::http::Body::Length(n)) => (n, false),
        Ok(crate::http::Body::Chunked) => (0, true),
        Err((status, why)) => return Err(Reject::new(status, why)),
    };
    let connection = header("connection").unwrap_or("");
    let keep_alive = if req.version == Some(1) {
        !has_token(connection, "close")
    } else {
        has_token(connection, "keep-alive")
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let protocols = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    Ok(Parse::Done {
        request: Box::new(Request {
            method: req.method.unwrap_or("").to_string(),
            path: path.to_string(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            upgrade: upgrade(&req, &header),
            protocols,
            extensions: req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                .filter_map(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string)
                .collect(),
            origin: header("origin").map(str::to_string),
            authorization: header("authorization").map(str::to_string),
            cookie: header("cookie").map(str::to_string),
            cors_headers: header("access-control-request-headers").map(str::to_string),
            content_length,
            chunked,
            keep_alive,
            http10: req.version == Some(0),
            if_none_match: header("if-none-match").map(str::to_string),
            form: header("content-type").is_some_and(|c| {
                c.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            }),
        }),
        consumed,
    })
}

/// Checks a request against RFC 6455 §4.2.1; the accept key, or the refusal a client that
/// meant to upgrade should get.
fn upgrade<'a>(
    req: &httparse::Request<'_, '_>,
    header: &impl Fn(&str) -> Option<&'a str>,
) -> Result<String, Reject> {
    let method = req.method.unwrap_or("");
    if method != "GET" {
        return Err(Reject::new(
            405,
            format!("method {method} not allowed: a WebSocket upgrade is a GET"),
        ));
    }
    if req.version != Some(1) {
        return Err(Reject::new(
            505,
            "HTTP/1.1 is required for a WebSocket upgrade",
        ));
    }
    if !header("upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return Err(Reject::new(
            426,
            "this endpoint speaks WebSocket only: send Upgrade: websocket",
        ));
    }
    if !header("connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(Reject::new(400, "missing Connection: Upgrade"));
    }
    match header("sec-websocket-version") {
        Some(v) if v.trim() == "13" => {}
        Some(v) => {
            return Err(Reject::new(
                426,
                format!("unsupported Sec-WebSocket-Version {v}: only 13 is supported"),
            ));
        }
        None => return Err(Reject::new(426, "missing Sec-WebSocket-Version: 13")),
    }
    let key = header("sec-websocket-key")
        .map(str::trim)
        .ok_or_else(|| Reject::new(400, "missing Sec-WebSocket-Key"))?;
    if B64.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(Reject::new(
            400,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    Ok(accept_key(key.as_bytes()))
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key ‖ GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID);
    B64.encode(h.finalize())
}

/// The 101 answer for the accept key `accept`, with the chosen subprotocol if any.
pub fn accept_response(accept: &str, protocol: Option<&str>) -> Vec<u8> {
    accept_response_with(accept, protocol, None)
}

/// The 101 answer, with the chosen subprotocol and extensions if any.
pub fn accept_response_with(
    accept: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(e) = extensions {
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(e);
        out.push_str("\r\n");
    }
    if let Some(p) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A refusal with the reason as a plain-text body; the connection closes after it.
pub fn reject_response(r: &Reject) -> Vec<u8> {
    if let Some(allow) = r.allow {
        return format!(
            "HTTP/1.1 {} {}\r\nAllow: {allow}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            r.status,
            status_text(r.status)
        )
        .into_bytes();
    }
    let extra = match r.retry_after {
        _ if r.status == 426 => "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n".into(),
        Some(s) => format!("Retry-After: {s}\r\n"),
        None => String::new(),
    };
    format!(
        "HTTP/1.1 {} {}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
        r.status,
        status_text(r.status),
        r.reason.len() + 1,
        r.reason
    )
    .into_bytes()
}

/// The reason phrase of an HTTP status.
pub fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Case-insensitive search of a comma-separated header value for one token.
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /ws?topic=a&topic=b%20c&project=P HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp, v11.stomp\r\n\r\n";

    fn done(s: &str) -> (Request, usize) {
        match parse(s.as_bytes(), 8192).unwrap() {
            Parse::Done { request, consumed } => (*request, consumed),
            Parse::Partial => panic!("partial"),
        }
    }

    #[test]
    fn rfc_sample_key() {
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_query_and_protocols() {
        let (r, n) = done(GOOD);
        assert_eq!(n, GOOD.len());
        assert_eq!(r.path, "/ws");
        assert_eq!(r.query_all("topic").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(r.query_first("project"), Some("P"));
        assert_eq!(r.protocols, ["v12.stomp", "v11.stomp"]);
        assert_eq!(r.method, "GET");
        assert!(r.keep_alive);
        let resp = String::from_utf8(accept_response(
            r.upgrade.as_ref().unwrap(),
            Some("v12.stomp"),
        ))
        .unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: v12.stomp\r\n"));
    }

    #[test]
    fn partial_until_blank_line_and_bounded() {
        assert!(matches!(
            parse(&GOOD.as_bytes()[..40], 8192),
            Ok(Parse::Partial)
        ));
        let err = parse(&GOOD.as_bytes()[..40], 40).unwrap_err();
        assert_eq!(err.status, 431);
    }

    #[test]
    fn refusals_carry_status_and_reason() {
        let cases = [
            (GOOD.replace("GET", "POST"), 405),
            (GOOD.replace("Version: 13", "Version: 8"), 426),
            (GOOD.replace("Upgrade: websocket\r\n", ""), 426),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
            (GOOD.replace("Host: x\r\n", ""), 400),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 505),
            ("GARBAGE\0\r\n\r\n".to_string(), 400),
        ];
        for (req, status) in cases {
            let err = match parse(req.as_bytes(), 8192) {
                Err(e) => e,
                Ok(Parse::Done { request, .. }) => request.upgrade.unwrap_err(),
                Ok(Parse::Partial) => panic!("partial"),
            };
            assert_eq!(err.status, status, "{req:?}: {err:?}");
            let resp = String::from_utf8(reject_response(&err)).unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")));
            assert!(resp.ends_with(&format!("{}\n", err.reason)));
        }
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut req = GOOD.trim_end().to_string();
        for i in 0..60 {
            req.push_str(&format!("\r\nX-{i}: y"));
        }
        req.push_str("\r\n\r\n");
        assert_eq!(parse(req.as_bytes(), 1 << 20).unwrap_err().status, 431);
    }
}
