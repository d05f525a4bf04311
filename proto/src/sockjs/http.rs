//! SockJS's HTTP transports, sans-IO: how a session's frames are written on each of them.
//!
//! A receiving request (`xhr` polling, `xhr_streaming`, `eventsource`) is attached to its
//! session until the session has something to say: polling answers with one frame and ends;
//! streaming keeps the response open (chunked) and ends it after `RESPONSE_LIMIT` bytes, so
//! the browser releases what it buffered and opens the next one. `xhr_send` carries the
//! client's messages and is answered at once.

use bytes::Bytes;

use super::{answer, head};
use crate::config::Sockjs as Config;
use crate::ws::handshake::Reject;

/// Bytes a streaming response carries before it is ended (sockjs-node's `response_limit`).
pub const RESPONSE_LIMIT: usize = 128 * 1024;

/// The end of a chunked response.
pub const END: &[u8] = b"0\r\n\r\n";

/// What a session request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `xhr_send`: messages from the client.
    Send,
    /// A request that receives frames.
    Receive(Transport),
}

impl Exchange {
    /// The exchange a transport name and method make, if SockJS has one.
    pub fn parse(transport: &str, method: &str) -> Option<Exchange> {
        Some(match (transport, method) {
            ("xhr_send", "POST") => Exchange::Send,
            ("xhr", "POST") => Exchange::Receive(Transport::Xhr),
            ("xhr_streaming", "POST") => Exchange::Receive(Transport::XhrStreaming),
            ("eventsource", "GET") => Exchange::Receive(Transport::EventSource),
            _ => return None,
        })
    }
}

/// How frames reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One frame per response (long polling).
    Xhr,
    /// Frames on one chunked response, one per line.
    XhrStreaming,
    /// Server-sent events on one chunked response.
    EventSource,
}

impl Transport {
    /// Whether the response stays open for more than one frame.
    pub fn streams(self) -> bool {
        self != Transport::Xhr
    }

    /// The head of a streaming response and its prelude (2 KB of `h` for xhr-streaming, which
    /// some browsers need before they hand anything to the page).
    pub fn open(self, origin: Option<&str>, cookie: Option<&str>, cfg: &Config) -> Vec<u8> {
        let content_type = match self {
            Transport::EventSource => "text/event-stream; charset=UTF-8",
            _ => "application/javascript; charset=UTF-8",
        };
        let mut out = head(200, origin, cookie, cfg);
        out.push_str(&format!(
            "Content-Type: {content_type}\r\nCache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        let mut out = out.into_bytes();
        match self {
            Transport::XhrStreaming => {
                let mut prelude = vec![b'h'; 2048];
                prelude.push(b'\n');
                chunk(&mut out, &prelude);
            }
            Transport::EventSource => chunk(&mut out, b"\r\n"),
            Transport::Xhr => {}
        }
        out
    }

    /// One frame on an open streaming response.
    pub fn frame(self, frame: &[u8]) -> Bytes {
        let mut body = Vec::with_capacity(frame.len() + 8);
        if self == Transport::EventSource {
            body.extend_from_slice(b"data: ");
            body.extend_from_slice(frame);
            body.extend_from_slice(b"\r\n\r\n");
        } else {
            body.extend_from_slice(frame);
            body.push(b'\n');
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        chunk(&mut out, &body);
        out.into()
    }
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

/// A polling answer: one frame and the end of the response.
pub fn poll(
    frame: &[u8],
    origin: Option<&str>,
    cookie: Option<&str>,
    cfg: &Config,
    keep_alive: bool,
) -> Bytes {
    let mut body = frame.to_vec();
    body.push(b'\n');
    answer(
        200,
        origin,
        cookie,
        cfg,
        "application/javascript; charset=UTF-8",
        &body,
        keep_alive,
    )
    .into()
}

/// `xhr_send`'s answers: 204 when the messages were taken, else the status and the protocol's
/// words for what was wrong.
pub fn sent(
    status: u16,
    reason: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
    cfg: &Config,
    keep_alive: bool,
) -> Bytes {
    answer(
        status,
        origin,
        cookie,
        cfg,
        "text/plain; charset=UTF-8",
        reason.as_bytes(),
        keep_alive,
    )
    .into()
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

    #[test]
    fn exchanges_by_transport_and_method() {
        assert_eq!(Exchange::parse("xhr_send", "POST"), Some(Exchange::Send));
        assert_eq!(
            Exchange::parse("eventsource", "GET"),
            Some(Exchange::Receive(Transport::EventSource))
        );
        assert_eq!(Exchange::parse("xhr", "GET"), None);
        assert_eq!(Exchange::parse("jsonp", "GET"), None);
    }

    #[test]
    fn streaming_frames_are_chunks() {
        assert_eq!(&Transport::XhrStreaming.frame(b"o")[..], b"2\r\no\n\r\n");
        assert_eq!(
            &Transport::EventSource.frame(b"o")[..],
            b"b\r\ndata: o\r\n\r\n\r\n"
        );
        let open = Transport::XhrStreaming.open(None, None, &Config::default());
        let text = String::from_utf8(open).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n\r\n801\r\nhhhh"));
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
