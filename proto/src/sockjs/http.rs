//! SockJS's HTTP transports, sans-IO: how a session's frames are written on each of them.
//!
//! A receiving request (`xhr` and `jsonp` polling, `xhr_streaming`, `eventsource`, `htmlfile`)
//! is attached to its session until the session has something to say: polling answers with
//! one frame and ends; streaming keeps the response open (chunked, or until the connection
//! closes for HTTP/1.0) and ends it once it carried the service's response limit, so the
//! browser releases what it buffered and opens the next one. `xhr_send` and `jsonp_send`
//! carry the client's messages and are answered at once.

use bytes::Bytes;

use super::{answer, head, push_json_string};
use crate::ws::handshake::Reject;

/// Bytes a streaming response carries by default before it is ended (sockjs-node's
/// `response_limit`; `[sockjs] response_limit_bytes`).
pub const RESPONSE_LIMIT: usize = 128 * 1024;

/// The end of a chunked response.
pub const END: &[u8] = b"0\r\n\r\n";

/// What a session request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `xhr_send`: messages from the client.
    Send,
    /// `jsonp_send`: messages from the client, as a form field `d` or a plain body.
    JsonpSend,
    /// A request that receives frames.
    Receive(Transport),
}

impl Exchange {
    /// The exchange a transport name and method make, if SockJS has one (`jsonp`: whether
    /// the JSONP transports are served).
    pub fn parse(transport: &str, method: &str, jsonp: bool) -> Option<Exchange> {
        Some(match (transport, method) {
            ("xhr_send", "POST") => Exchange::Send,
            ("xhr", "POST") => Exchange::Receive(Transport::Xhr),
            ("xhr_streaming", "POST") => Exchange::Receive(Transport::XhrStreaming),
            ("eventsource", "GET") => Exchange::Receive(Transport::EventSource),
            ("htmlfile", "GET") => Exchange::Receive(Transport::HtmlFile),
            ("jsonp", "GET") if jsonp => Exchange::Receive(Transport::Jsonp),
            ("jsonp_send", "POST") if jsonp => Exchange::JsonpSend,
            _ => return None,
        })
    }

    /// Whether the transport needs a `c` callback parameter (`htmlfile`, `jsonp`).
    pub fn needs_callback(self) -> bool {
        matches!(
            self,
            Exchange::Receive(Transport::HtmlFile | Transport::Jsonp)
        )
    }
}

/// The `c` parameter of `htmlfile` and `jsonp`: a JavaScript name the page defined, so only
/// `[a-zA-Z0-9-_.]` (anything else could inject script); 500 with the protocol's words.
pub fn callback(c: Option<&str>) -> Result<String, Reject> {
    match c {
        None | Some("") => Err(Reject::new(500, "\"callback\" parameter required")),
        Some(c)
            if c.len() <= 256
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(c.to_string())
        }
        Some(_) => Err(Reject::new(500, "invalid \"callback\" parameter")),
    }
}

/// How frames reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One frame per response (long polling).
    Xhr,
    /// Long polling, the frame wrapped in a call of the page's callback.
    Jsonp,
    /// Frames on one streaming response, one per line.
    XhrStreaming,
    /// Server-sent events on one streaming response.
    EventSource,
    /// `<script>` elements on one streaming HTML page (old Internet Explorer).
    HtmlFile,
}

/// What a streaming response needs from its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream<'a> {
    /// For CORS.
    pub origin: Option<&'a str>,
    /// `JSESSIONID` to set.
    pub set_cookie: Option<&'a str>,
    /// `htmlfile`'s callback.
    pub callback: &'a str,
    /// An HTTP/1.0 client: no chunking, the end of the response is the end of the connection.
    pub http10: bool,
}

impl Transport {
    /// Whether the response stays open for more than one frame.
    pub fn streams(self) -> bool {
        !matches!(self, Transport::Xhr | Transport::Jsonp)
    }

    /// The head of a streaming response and its prelude: 2 KB of `h` for xhr-streaming and
    /// the padded page for htmlfile (browsers hand nothing to the page before), a blank line
    /// for EventSource (an old Opera bug).
    pub fn open(self, s: Stream<'_>) -> Vec<u8> {
        let content_type = match self {
            Transport::EventSource => "text/event-stream",
            Transport::HtmlFile => "text/html; charset=UTF-8",
            _ => "application/javascript; charset=UTF-8",
        };
        let mut out = head(200, s.origin, s.set_cookie);
        out.push_str(&format!(
            "Content-Type: {content_type}\r\nCache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\n"
        ));
        // HTTP/1.0 has no chunking: the response ends when the connection does.
        out.push_str(if s.http10 {
            "Connection: close\r\n\r\n"
        } else {
            "Transfer-Encoding: chunked\r\n\r\n"
        });
        let mut out = out.into_bytes();
        let prelude = match self {
            Transport::XhrStreaming => {
                let mut p = vec![b'h'; 2048];
                p.push(b'\n');
                p
            }
            Transport::EventSource => b"\r\n".to_vec(),
            Transport::HtmlFile => htmlfile_page(s.callback),
            Transport::Xhr | Transport::Jsonp => Vec::new(),
        };
        body_part(&mut out, &prelude, s.http10);
        out
    }

    /// What one frame adds to a streaming response's body (before any chunk framing).
    fn payload(self, frame: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(frame.len() + 32);
        match self {
            Transport::EventSource => {
                body.extend_from_slice(b"data: ");
                body.extend_from_slice(frame);
                body.extend_from_slice(b"\r\n\r\n");
            }
            Transport::HtmlFile => {
                body.extend_from_slice(b"<script>\np(");
                push_script_string(&mut body, frame);
                body.extend_from_slice(b");\n</script>\r\n");
            }
            _ => {
                body.extend_from_slice(frame);
                body.push(b'\n');
            }
        }
        body
    }

    /// One frame on an open streaming response, appended to `out` as written (a chunk unless
    /// HTTP/1.0); returns the body bytes it added, which count against the response limit.
    pub fn frame_into(self, frame: &[u8], http10: bool, out: &mut Vec<u8>) -> usize {
        let body = self.payload(frame);
        body_part(out, &body, http10);
        body.len()
    }

    /// One frame on an open streaming response, as written.
    pub fn frame(self, frame: &[u8], http10: bool) -> Bytes {
        let mut out = Vec::with_capacity(frame.len() + 32);
        self.frame_into(frame, http10, &mut out);
        out.into()
    }

    /// A streaming response that carries one frame and ends (a refusal, a close frame).
    pub fn whole(self, frame: &[u8], s: Stream<'_>) -> Bytes {
        let mut b = self.open(s);
        self.frame_into(frame, s.http10, &mut b);
        if !s.http10 {
            b.extend_from_slice(END);
        }
        b.into()
    }
}

/// The page htmlfile streams its `<script>`s into, padded past the 1 KB some browsers buffer.
fn htmlfile_page(callback: &str) -> Vec<u8> {
    let page = format!(
        "<!doctype html>\n<html><head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n</head><body><h2>Don't panic!</h2>\n  <script>\n    document.domain = document.domain;\n    var c = parent.{callback};\n    c.start();\n    function p(d) {{c.message(d);}};\n    window.onload = function() {{c.stop();}};\n  </script>"
    );
    let mut out = page.into_bytes();
    let pad = 1024usize.saturating_sub(out.len()) + 14;
    out.extend(std::iter::repeat_n(b' ', pad));
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A frame as a JavaScript string inside HTML: JSON-escaped, and `<`, `>` and `&` escaped too,
/// so no message can end the `<script>` element it travels in.
fn push_script_string(out: &mut Vec<u8>, frame: &[u8]) {
    let mut json = Vec::with_capacity(frame.len() + 8);
    push_json_string(&mut json, frame);
    for &b in &json {
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            b => out.push(b),
        }
    }
}

fn body_part(out: &mut Vec<u8>, data: &[u8], http10: bool) {
    if http10 {
        out.extend_from_slice(data);
    } else {
        chunk(out, data);
    }
}

/// A polling answer: one frame and the end of the response (`jsonp`: the frame wrapped in a
/// call of that callback).
pub fn poll(
    frame: &[u8],
    jsonp: Option<&str>,
    origin: Option<&str>,
    set_cookie: Option<&str>,
    keep_alive: bool,
) -> Bytes {
    let body = match jsonp {
        None => {
            let mut body = frame.to_vec();
            body.push(b'\n');
            body
        }
        Some(callback) => {
            let mut body = format!("/**/{callback}(").into_bytes();
            push_json_string(&mut body, frame);
            body.extend_from_slice(b");\r\n");
            body
        }
    };
    answer(
        200,
        origin,
        set_cookie,
        "application/javascript; charset=UTF-8",
        &body,
        keep_alive,
    )
    .into()
}

/// `xhr_send`'s and `jsonp_send`'s answers: 204 (`xhr_send`) or 200 `ok` (`jsonp_send`: some
/// browsers mishandle a 204 there) when the messages were taken, else the status and the
/// protocol's words for what was wrong.
pub fn sent(
    status: u16,
    reason: &str,
    origin: Option<&str>,
    set_cookie: Option<&str>,
    keep_alive: bool,
) -> Bytes {
    answer(
        status,
        origin,
        set_cookie,
        "text/plain; charset=UTF-8",
        reason.as_bytes(),
        keep_alive,
    )
    .into()
}

/// A `jsonp_send` body's messages: the form field `d` of a form-encoded body, else the body
/// itself, as for `xhr_send`.
pub fn jsonp_messages(body: &[u8], form: bool) -> Result<Vec<String>, super::DecodeError> {
    if !form {
        return super::decode(body);
    }
    let d = form_urlencoded::parse(body)
        .find(|(k, _)| k == "d")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    super::decode(d.as_bytes())
}

/// A request body: `Ok(None)` until all of it is in `buf` (which starts after the head), then
/// the body and the bytes it took. `max` bounds the body; a longer one is a 413.
pub fn read_body(
    buf: &[u8],
    content_length: usize,
    chunked: bool,
    max: usize,
) -> Result<Option<(Bytes, usize)>, Reject> {
    let too_big = || Reject::new(413, format!("request body over {max} bytes"));
    if !chunked {
        if content_length > max {
            return Err(too_big());
        }
        return Ok((buf.len() >= content_length).then(|| {
            (
                Bytes::copy_from_slice(&buf[..content_length]),
                content_length,
            )
        }));
    }
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) if buf.len() - pos > 64 => {
                return Err(Reject::new(400, "malformed chunk size line"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Reject::new(400, "malformed chunk size line")),
        };
        let size = usize::try_from(size).map_err(|_| too_big())?;
        if body.len().saturating_add(size) > max {
            return Err(too_big());
        }
        let data = pos + start;
        if size == 0 {
            // Trailers are not used by any SockJS client: only the final CRLF is accepted.
            return Ok(match &buf[data..] {
                [b'\r', b'\n', ..] => Some((body.into(), data + 2)),
                [] | [b'\r'] => None,
                _ => {
                    return Err(Reject::new(
                        400,
                        "trailers after a chunked body are not accepted",
                    ));
                }
            });
        }
        if buf.len() < data + size + 2 {
            return Ok(None);
        }
        if &buf[data + size..data + size + 2] != b"\r\n" {
            return Err(Reject::new(400, "a chunk does not end with CRLF"));
        }
        body.extend_from_slice(&buf[data..data + size]);
        pos = data + size + 2;
    }
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Frames waiting for a polling request, as one frame: the messages of consecutive `a[...]`
/// frames go in one array; any other frame (`o`, `h`, `c[...]`) goes alone. Returns the frame
/// and how many queued frames it took.
pub fn merge(queue: &[Bytes]) -> (Vec<u8>, usize) {
    let Some(first) = queue.first() else {
        return (Vec::new(), 0);
    };
    if !is_messages(first) {
        return (first.to_vec(), 1);
    }
    let mut out = first[..first.len() - 1].to_vec();
    let mut taken = 1;
    for f in &queue[1..] {
        if !is_messages(f) {
            break;
        }
        if f.len() > 3 {
            if out.len() > 2 {
                out.push(b',');
            }
            out.extend_from_slice(&f[2..f.len() - 1]);
        }
        taken += 1;
    }
    out.push(b']');
    (out, taken)
}

fn is_messages(f: &[u8]) -> bool {
    f.len() >= 3 && f.starts_with(b"a[") && f.ends_with(b"]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockjs::DecodeError;

    #[test]
    fn exchanges_by_transport_and_method() {
        assert_eq!(
            Exchange::parse("xhr_send", "POST", false),
            Some(Exchange::Send)
        );
        assert_eq!(
            Exchange::parse("eventsource", "GET", false),
            Some(Exchange::Receive(Transport::EventSource))
        );
        assert_eq!(Exchange::parse("xhr", "GET", false), None);
        assert_eq!(Exchange::parse("jsonp", "GET", false), None);
        assert_eq!(
            Exchange::parse("jsonp", "GET", true),
            Some(Exchange::Receive(Transport::Jsonp))
        );
        assert_eq!(callback(Some("cb.x-1_")), Ok("cb.x-1_".into()));
        for bad in [Some(""), None, Some("a b"), Some("abc("), Some("*")] {
            assert_eq!(callback(bad).unwrap_err().status, 500);
        }
        assert_eq!(jsonp_messages(b"d=%5B%22x%22%5D", true).unwrap(), ["x"]);
        assert_eq!(
            jsonp_messages(b"p=p", true).unwrap_err(),
            DecodeError::Empty
        );
        assert_eq!(jsonp_messages(br#"["a"]"#, false).unwrap(), ["a"]);
    }

    #[test]
    fn streaming_frames_are_chunks() {
        assert_eq!(
            &Transport::XhrStreaming.frame(b"o", false)[..],
            b"2\r\no\n\r\n"
        );
        assert_eq!(&Transport::XhrStreaming.frame(b"o", true)[..], b"o\n");
        assert_eq!(
            &Transport::EventSource.frame(b"o", false)[..],
            b"b\r\ndata: o\r\n\r\n\r\n"
        );
        assert_eq!(
            Transport::HtmlFile.payload(br#"a["</script>"]"#),
            b"<script>\np(\"a[\\\"\\u003c/script\\u003e\\\"]\");\n</script>\r\n".to_vec()
        );
        let s = Stream {
            origin: None,
            set_cookie: None,
            callback: "cb",
            http10: false,
        };
        let text = String::from_utf8(Transport::XhrStreaming.open(s)).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n\r\n801\r\nhhhh"));
        let old = Transport::XhrStreaming.open(Stream { http10: true, ..s });
        let old = String::from_utf8(old).unwrap();
        assert!(!old.contains("chunked") && old.contains("Connection: close\r\n\r\nhhhh"));
        assert!(Transport::HtmlFile.open(s).len() > 1024 + 100);
    }

    #[test]
    fn request_bodies_by_length_or_in_chunks() {
        assert_eq!(read_body(b"abc", 5, false, 10), Ok(None));
        assert_eq!(
            read_body(b"abcdeX", 5, false, 10),
            Ok(Some((Bytes::from_static(b"abcde"), 5)))
        );
        assert_eq!(read_body(b"", 11, false, 10).unwrap_err().status, 413);
        let c = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
        for cut in 0..c.len() - 4 {
            assert_eq!(read_body(&c[..cut], 0, true, 10), Ok(None), "{cut}");
        }
        assert_eq!(
            read_body(c, 0, true, 10),
            Ok(Some((Bytes::from_static(b"abcde"), c.len() - 4)))
        );
        assert_eq!(read_body(c, 0, true, 4).unwrap_err().status, 413);
        assert_eq!(read_body(b"zz\r\n", 0, true, 4).unwrap_err().status, 400);
        assert_eq!(read_body(b"1\r\nabc", 0, true, 4).unwrap_err().status, 400);
    }

    #[test]
    fn polling_merges_message_frames() {
        let q: Vec<Bytes> = [&b"a[\"x\"]"[..], b"a[\"y\",\"z\"]", b"h", b"a[\"w\"]"]
            .iter()
            .map(|f| Bytes::copy_from_slice(f))
            .collect();
        assert_eq!(merge(&q), (br#"a["x","y","z"]"#.to_vec(), 2));
        assert_eq!(merge(&q[2..]), (b"h".to_vec(), 1));
        assert_eq!(merge(&[]), (Vec::new(), 0));
    }
}
