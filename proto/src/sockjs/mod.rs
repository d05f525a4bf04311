//! The SockJS protocol (the `sockjs-protocol` 0.3.3 suite; what `sockjs-client` 1.x and
//! Spring's `.withSockJS()` speak), sans-IO: which SockJS URL a path names, the frames a
//! session sends (`o`, `h`, `a[...]`, `c[code,"reason"]`), the client's JSON messages, and the
//! plain-HTTP answers around them (`/info`, the greeting, CORS preflights, `iframe.html`).
//!
//! SockJS carries strings only. Frames are written with every non-ASCII character escaped as
//! `\uXXXX`: valid JSON for every transport, and it covers the characters the protocol says
//! some browsers mangle (U+2028, combining marks, ...) without a table of them.

mod answer;
pub mod http;

pub use answer::{
    FAR_EXPIRES, Iframe, answer, greeting, head, iframe, info, jsessionid, preflight,
};

/// The open frame, sent first on every session.
pub const OPEN: &[u8] = b"o";
/// The heart-beat frame, sent on a quiet session to keep proxies from closing it.
pub const HEARTBEAT: &[u8] = b"h";

/// What a path under a SockJS prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    /// `{prefix}` or `{prefix}/`: "Welcome to SockJS!".
    Greeting,
    /// `{prefix}/info`: what the server supports.
    Info,
    /// `{prefix}/iframe.html` (or `iframe-VERSION.html`): the page iframe transports load.
    Iframe,
    /// `{prefix}/websocket`: a plain WebSocket, no SockJS framing.
    RawWebSocket,
    /// `{prefix}/{server}/{session}/{transport}`.
    Session {
        /// The client's routing hint for load balancers (ignored).
        server: &'a str,
        /// The session id the client chose.
        session: &'a str,
        /// `websocket`, `xhr`, `xhr_send`, `xhr_streaming`, `eventsource`, ...
        transport: &'a str,
    },
}

/// What `path` is under `prefix`, if it is under it at all. `None` for a path outside the
/// prefix; `Some(Err(()))` for a path under it that names nothing (a 404).
pub fn match_path<'a>(prefix: &str, path: &'a str) -> Option<Result<Path<'a>, ()>> {
    let rest = path.strip_prefix(prefix)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(match rest {
        "" | "/" => Ok(Path::Greeting),
        "/info" => Ok(Path::Info),
        "/websocket" => Ok(Path::RawWebSocket),
        // `iframe.html`, or a versioned `iframe-VERSION.html` (no further path).
        "/iframe.html" => Ok(Path::Iframe),
        r if r.starts_with("/iframe-") && r.ends_with(".html") && !r[1..].contains('/') => {
            Ok(Path::Iframe)
        }
        r => {
            let mut parts = r[1..].split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(server), Some(session), Some(transport), None)
                    if segment_ok(server) && segment_ok(session) && !transport.is_empty() =>
                {
                    Ok(Path::Session {
                        server,
                        session,
                        transport,
                    })
                }
                _ => Err(()),
            }
        }
    })
}

/// Server and session ids: non-empty, no dots (the protocol's rule), and bounded.
fn segment_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.contains('.') && crate::names::valid(s)
}

/// Appends `bytes` as a JSON string; bytes that are not UTF-8 become U+FFFD (SockJS carries
/// text only).
pub fn push_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// `a["…","…"]`: messages for the client.
pub fn messages<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"a[");
    for (i, p) in payloads.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(&mut out, p);
    }
    out.push(b']');
    out
}

/// `c[code,"reason"]`: the session is over.
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut out = format!("c[{code},").into_bytes();
    push_json_string(&mut out, reason.as_bytes());
    out.push(b']');
    out
}

/// Why a client's message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// An empty `xhr_send` body.
    Empty,
    /// Not a JSON string or array of strings.
    Broken,
}

impl DecodeError {
    /// The protocol's wording for it (what `xhr_send` answers with its 500).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "Payload expected.",
            DecodeError::Broken => "Broken JSON encoding.",
        }
    }
}

/// A client's message: a JSON array of strings (`["a","b"]`) or a single string. Each string
/// is one message for the session.
pub fn decode(payload: &[u8]) -> Result<Vec<String>, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    if let Ok(v) = serde_json::from_slice::<Vec<String>>(payload) {
        return Ok(v);
    }
    serde_json::from_slice::<String>(payload)
        .map(|s| vec![s])
        .map_err(|_| DecodeError::Broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_prefix() {
        let p = "/msg-center/dfocus";
        assert_eq!(
            match_path(p, "/msg-center/dfocus"),
            Some(Ok(Path::Greeting))
        );
        assert_eq!(
            match_path(p, "/msg-center/dfocus/"),
            Some(Ok(Path::Greeting))
        );
        assert_eq!(
            match_path(p, "/msg-center/dfocus/info"),
            Some(Ok(Path::Info))
        );
        assert_eq!(
            match_path(p, "/msg-center/dfocus/websocket"),
            Some(Ok(Path::RawWebSocket))
        );
        assert_eq!(
            match_path(p, "/msg-center/dfocus/iframe-1.6.1.html"),
            Some(Ok(Path::Iframe))
        );
        assert_eq!(
            match_path(p, "/msg-center/dfocus/123/abc/xhr_send"),
            Some(Ok(Path::Session {
                server: "123",
                session: "abc",
                transport: "xhr_send"
            }))
        );
        assert_eq!(match_path(p, "/msg-center/dfocusX"), None);
        assert_eq!(match_path(p, "/other"), None);
        for bad in [
            "/a.b/abc/websocket",
            "/123/a.b/xhr",
            "//abc/xhr",
            "/1/2/3/4",
        ] {
            assert_eq!(match_path(p, &format!("{p}{bad}")), Some(Err(())), "{bad}");
        }
    }

    #[test]
    fn frames_escape_everything_but_printable_ascii() {
        assert_eq!(
            messages([&b"MESSAGE\nk:v\n\nh\xc3\xa9\"\\\x00"[..], b"x"]),
            br#"a["MESSAGE\nk:v\n\nh\u00e9\"\\\u0000","x"]"#
        );
        assert_eq!(
            messages(["\u{2028}😀".as_bytes()]),
            br#"a["\u2028\ud83d\ude00"]"#
        );
        assert_eq!(messages([&b"\xff"[..]]), br#"a["\ufffd"]"#);
        assert_eq!(close(3000, "Go away!"), br#"c[3000,"Go away!"]"#);
        // What we write, a client's JSON parser reads back.
        let s = "CONNECT\nlogin:é\n\n\u{0}\u{2028}";
        let f = messages([s.as_bytes()]);
        let back: Vec<String> = serde_json::from_slice(&f[1..]).unwrap();
        assert_eq!(back, [s]);
    }

    #[test]
    fn client_messages() {
        assert_eq!(decode(br#"["a","b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(decode(br#""a""#).unwrap(), ["a"]);
        assert_eq!(decode(b"[]").unwrap(), Vec::<String>::new());
        assert_eq!(decode(b"").unwrap_err(), DecodeError::Empty);
        assert_eq!(decode(b"[\"x").unwrap_err(), DecodeError::Broken);
        assert_eq!(decode(b"[1]").unwrap_err(), DecodeError::Broken);
    }
}
