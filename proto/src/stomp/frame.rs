//! STOMP 1.2 frames (1.1 and 1.0 accepted), sans-IO: parse from bytes, encode to bytes.
//!
//! A frame is `COMMAND EOL *(name:value EOL) EOL body NUL *(EOL)`. Header values are escaped
//! (`\r \n \c \\`) in every frame but CONNECT and CONNECTED; a `content-length` header lets
//! the body hold NUL bytes; lone EOLs between frames are heart-beats. Everything is bounded by
//! `Limits`, and every violation names what was wrong (it becomes the ERROR frame's message).

/// Headers the server writes on every MESSAGE: a publisher (client SEND, admin API, another
/// node) can never set them, or it could forge another subscription's frame.
pub const SERVER_HEADERS: &[&str] = &[
    "destination",
    "message-id",
    "subscription",
    "ack",
    "content-length",
    "x-offset",
    "x-epoch",
    "x-recovered",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A STOMP command: what the client sends, then what the server sends.
pub enum Command {
    /// Opens a session (with the token).
    Connect,
    /// STOMP 1.2's name for CONNECT.
    Stomp,
    /// Publishes to a destination.
    Send,
    /// Starts a subscription.
    Subscribe,
    /// Ends a subscription.
    Unsubscribe,
    /// Acknowledges a message (accepted, ignored: subscriptions are auto-ack).
    Ack,
    /// Refuses a message (accepted, ignored).
    Nack,
    /// Starts a transaction (refused).
    Begin,
    /// Commits a transaction (refused).
    Commit,
    /// Aborts a transaction (refused).
    Abort,
    /// Ends the session.
    Disconnect,
    // Server frames.
    /// The answer to CONNECT.
    Connected,
    /// A delivery.
    Message,
    /// The answer to a `receipt` header.
    Receipt,
    /// A refusal; the session ends.
    Error,
}

impl Command {
    fn parse(s: &[u8]) -> Option<Command> {
        Some(match s {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"CONNECTED" => Command::Connected,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// The command as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// CONNECT and CONNECTED predate escaping and never use it (STOMP 1.2 §"Value Encoding").
    fn escapes(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// One STOMP frame.
pub struct Frame {
    /// What it is.
    pub command: Command,
    /// Headers in order, unescaped; the first of a repeated name wins.
    pub headers: Vec<(String, String)>,
    /// The body, up to its NUL (or `content-length` bytes).
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Frame {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The first value of a header (a repeated header's first occurrence wins, per the spec).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The frame's bytes, headers escaped where the command allows it, NUL-terminated.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.push(b'\n');
        for (k, v) in &self.headers {
            put_escaped(&mut out, k, self.command.escapes());
            out.push(b':');
            put_escaped(&mut out, v, self.command.escapes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

/// Writes a header name or value. Whatever it holds, it stays one header with its own name:
/// line breaks are escaped where the frame allows escaping and replaced (U+FFFD) where it does
/// not (CONNECTED), and a NUL, which no escape covers and which clients take for the end of a
/// frame, is replaced too. Replaced, not dropped: dropping could turn a name into another one
/// (`content-length\0` into `content-length`). Values that reach here are validated already;
/// this is the last line of defence.
fn put_escaped(out: &mut Vec<u8>, s: &str, escape: bool) {
    const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();
    if !s
        .bytes()
        .any(|b| matches!(b, 0 | b'\n' | b'\r' | b'\\' | b':'))
    {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for &b in s.as_bytes() {
        match b {
            0 => out.extend_from_slice(REPLACEMENT),
            b'\n' | b'\r' if !escape => out.extend_from_slice(REPLACEMENT),
            _ if !escape => out.push(b),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            _ => out.push(b),
        }
    }
}

/// Bounds the parser holds every frame to.
pub struct Limits {
    /// Largest frame, headers and body.
    pub max_frame_bytes: usize,
    /// Headers per frame.
    pub max_headers: usize,
    /// Longest header line.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_headers: 32,
            max_header_bytes: 4096,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
/// What the parser found at the front of the buffer.
pub enum Parsed {
    /// A frame, and how many bytes (including trailing EOLs) it used.
    Frame(Frame, usize),
    /// Heart-beat EOLs only; this many bytes.
    HeartBeat(usize),
    /// Not enough bytes yet.
    Partial,
}

/// Why bytes are not a STOMP frame. The text is what the client reads in the ERROR frame's
/// `message` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A CR not followed by LF between frames.
    #[error("bare CR in a heart-beat")]
    BareCr,
    /// A command or header line over the limit.
    #[error("header line over {0} bytes")]
    HeaderLineTooLong(usize),
    /// A frame over the limit.
    #[error("frame over {0} bytes")]
    TooBig(usize),
    /// A NUL before the blank line that ends the headers.
    #[error("NUL byte in a header line")]
    NulInHeader,
    /// More headers than the limit.
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    /// Not a STOMP command (the start of what came, lossily).
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A header line with no `:`.
    #[error("header without a colon")]
    NoColon,
    /// A header that is not UTF-8.
    #[error("header is not UTF-8")]
    NotUtf8,
    /// A backslash escape STOMP 1.2 does not define (the character after it).
    #[error("undefined escape sequence \\{0}")]
    BadEscape(String),
    /// A `content-length` that is not a number.
    #[error("invalid content-length {0:?}")]
    BadContentLength(String),
    /// No NUL where `content-length` says the body ends.
    #[error("body longer than its content-length (no NUL after it)")]
    BodyPastLength,
}

/// Parses the next frame (or heart-beat) from `buf`.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, FrameError> {
    let eols = buf
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    if eols > 0 {
        // A CR must be followed by LF; a lone CR at the end may still get its LF.
        let seq = &buf[..eols];
        if seq.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') {
            return Err(FrameError::BareCr);
        }
        if seq.last() == Some(&b'\r') {
            return if eols > 1 {
                Ok(Parsed::HeartBeat(eols - 1))
            } else {
                Ok(Parsed::Partial)
            };
        }
        return Ok(Parsed::HeartBeat(eols));
    }
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    // Command and header lines, up to the blank line.
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() - pos > limits.max_header_bytes {
                return Err(FrameError::HeaderLineTooLong(limits.max_header_bytes));
            }
            if buf.len() > limits.max_frame_bytes {
                return Err(FrameError::TooBig(limits.max_frame_bytes));
            }
            return Ok(Parsed::Partial);
        };
        let mut line = &buf[pos..pos + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > limits.max_header_bytes {
            return Err(FrameError::HeaderLineTooLong(limits.max_header_bytes));
        }
        pos += nl + 1;
        if line.is_empty() {
            break;
        }
        if line.contains(&0) {
            return Err(FrameError::NulInHeader);
        }
        lines.push(line);
        if lines.len() > limits.max_headers + 1 {
            return Err(FrameError::TooManyHeaders(limits.max_headers));
        }
    }
    let command = Command::parse(lines[0]).ok_or_else(|| {
        FrameError::UnknownCommand(
            String::from_utf8_lossy(&lines[0][..lines[0].len().min(32)]).into_owned(),
        )
    })?;
    let mut headers = Vec::with_capacity(lines.len() - 1);
    for line in &lines[1..] {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(FrameError::NoColon)?;
        let name = unescape(&line[..colon], command.escapes())?;
        let value = unescape(&line[colon + 1..], command.escapes())?;
        headers.push((name, value));
    }
    let frame = Frame {
        command,
        headers,
        body: Vec::new(),
    };
    let body_end = match frame.get("content-length") {
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| FrameError::BadContentLength(v.to_string()))?;
            if pos + n > limits.max_frame_bytes {
                return Err(FrameError::TooBig(limits.max_frame_bytes));
            }
            if buf.len() < pos + n + 1 {
                return Ok(Parsed::Partial);
            }
            if buf[pos + n] != 0 {
                return Err(FrameError::BodyPastLength);
            }
            pos + n
        }
        None => match buf[pos..].iter().position(|&b| b == 0) {
            Some(i) => pos + i,
            None if buf.len() > limits.max_frame_bytes => {
                return Err(FrameError::TooBig(limits.max_frame_bytes));
            }
            None => return Ok(Parsed::Partial),
        },
    };
    if body_end > limits.max_frame_bytes {
        return Err(FrameError::TooBig(limits.max_frame_bytes));
    }
    let mut frame = frame;
    frame.body = buf[pos..body_end].to_vec();
    let mut used = body_end + 1;
    // Trailing EOLs belong to this frame; a lone CR waits for its LF.
    while used < buf.len() {
        match buf[used] {
            b'\n' => used += 1,
            b'\r' if buf.get(used + 1) == Some(&b'\n') => used += 2,
            _ => break,
        }
    }
    Ok(Parsed::Frame(frame, used))
}

fn unescape(raw: &[u8], escapes: bool) -> Result<String, FrameError> {
    let s = std::str::from_utf8(raw).map_err(|_| FrameError::NotUtf8)?;
    if !escapes || !s.contains('\\') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            other => {
                return Err(FrameError::BadEscape(
                    other.map(String::from).unwrap_or_default(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
