//! One connection's protocol state, sans-IO: upgrade, routing to a mode, WebSocket messages,
//! and the close handshake. Bytes go in; `Output`s (bytes to send, destinations to join, when
//! to close the socket) come out. The reactor owns the socket and carries the outputs out, so
//! everything a client can make the server do is testable here without one.

use bytes::Bytes;

use crate::config::Config;
use crate::hub::Dest;
use crate::ws::CloseError;
use crate::ws::frame::{self, Decoded, Opcode};
use crate::ws::handshake::{self, Reject, Request};
use crate::ws::message::{Message, Reader};

/// What the reactor must do for this connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Queue these bytes (a handshake answer or a frame).
    Send(Bytes),
    Subscribe(Dest),
    Upgraded,
    /// The upgrade was refused (the HTTP answer is queued).
    Rejected,
    /// A data message arrived from the client.
    Received,
    /// The connection broke the protocol (the close frame is queued).
    ProtocolError,
    /// Our close frame is queued and we wait for the peer's: arm the close timeout.
    AwaitClose,
    /// Close the socket once everything queued is written.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Nothing more will be read.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Subscribed at upgrade; client messages are counted and ignored.
    Raw,
    /// Every message comes back (the Autobahn target).
    Echo,
}

/// The STOMP subprotocols, in the order the server prefers them.
const STOMP_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Longest project, topic or user name accepted.
const MAX_NAME: usize = 256;

pub struct Session {
    phase: Phase,
    mode: Mode,
    /// Bytes received but not yet forming a complete request or frame.
    pending: Vec<u8>,
    reader: Reader,
    /// Payload bytes of the incomplete frame in `pending` already checked as UTF-8.
    peeked: u32,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            phase: Phase::Handshake,
            mode: Mode::Raw,
            pending: Vec::new(),
            reader: Reader::default(),
            peeked: 0,
        }
    }
}

impl Session {
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn in_handshake(&self) -> bool {
        self.phase == Phase::Handshake
    }

    /// Bytes held for an incomplete request or frame (zero for an idle connection).
    pub fn buffered(&self) -> usize {
        self.pending.capacity()
    }

    /// Feeds bytes received from the client. `data` may be modified (frames are unmasked in
    /// place).
    pub fn on_bytes(&mut self, data: &mut [u8], cfg: &Config, out: &mut Vec<Output>) {
        if self.phase == Phase::Done {
            return;
        }
        if self.pending.is_empty() {
            let used = self.consume(data, cfg, out);
            if self.phase != Phase::Done && used < data.len() {
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.consume(&mut buf, cfg, out);
            if self.phase != Phase::Done && used < buf.len() {
                buf.drain(..used);
                self.pending = buf;
            }
        }
    }

    /// A server-initiated close (shutdown, disconnect, slow consumer).
    pub fn close(&mut self, code: u16, reason: &str, out: &mut Vec<Output>) {
        match self.phase {
            Phase::Open => {
                out.push(Output::Send(frame::encode_close(code, reason)));
                out.push(Output::AwaitClose);
                self.phase = Phase::Closing;
            }
            Phase::Handshake => {
                let status = if code == CloseError::GOING_AWAY {
                    503
                } else {
                    408
                };
                self.reject(&Reject::new(status, reason), out);
            }
            Phase::Closing | Phase::Done => {}
        }
        self.pending = Vec::new();
    }

    fn reject(&mut self, r: &Reject, out: &mut Vec<Output>) {
        out.push(Output::Send(handshake::reject_response(r).into()));
        out.push(Output::Rejected);
        out.push(Output::Close);
        self.phase = Phase::Done;
    }

    fn fail(&mut self, e: CloseError, out: &mut Vec<Output>) {
        out.push(Output::Send(frame::encode_close(e.code, e.reason)));
        out.push(Output::ProtocolError);
        out.push(Output::Close);
        self.phase = Phase::Done;
    }

    /// Consumes what it can of `buf`; returns how many bytes it used.
    fn consume(&mut self, buf: &mut [u8], cfg: &Config, out: &mut Vec<Output>) -> usize {
        let mut pos = 0;
        if self.phase == Phase::Handshake {
            match handshake::parse(buf, cfg.limits.max_header_bytes) {
                Ok(handshake::Parse::Partial) => return 0,
                Err(r) => {
                    self.reject(&r, out);
                    return buf.len();
                }
                Ok(handshake::Parse::Done { request, consumed }) => {
                    match route(&request, cfg) {
                        Ok(route) => {
                            out.push(Output::Send(
                                handshake::accept_response(&request, route.protocol).into(),
                            ));
                            out.push(Output::Upgraded);
                            out.extend(route.subscribe.into_iter().map(Output::Subscribe));
                            self.mode = route.mode;
                            self.phase = Phase::Open;
                        }
                        Err(r) => {
                            self.reject(&r, out);
                            return buf.len();
                        }
                    }
                    pos = consumed;
                }
            }
        }
        let max = cfg.limits.max_message_bytes;
        while matches!(self.phase, Phase::Open | Phase::Closing) {
            let rest = &mut buf[pos..];
            match frame::decode(rest, max) {
                Err(e) => {
                    self.fail(e, out);
                    return buf.len();
                }
                Ok(Decoded::Partial {
                    opcode: Some(op),
                    payload_start,
                    payload_seen,
                }) if payload_seen > self.peeked as usize => {
                    let from = self.peeked as usize;
                    let mut fresh = Vec::new();
                    frame::peek_unmasked(rest, payload_start, from, payload_seen, &mut fresh);
                    match self.reader.check_partial(op, &fresh, from == 0) {
                        Ok(valid) => self.peeked += valid as u32,
                        Err(e) => {
                            self.fail(e, out);
                            return buf.len();
                        }
                    }
                    break;
                }
                Ok(Decoded::Partial { .. }) => break,
                Ok(Decoded::Frame(f)) => {
                    self.peeked = 0;
                    let payload = &rest[f.payload.clone()];
                    match self.reader.on_frame(f.fin, f.opcode, payload, max) {
                        Err(e) => {
                            self.fail(e, out);
                            return buf.len();
                        }
                        Ok(Some(m)) => {
                            let closing = self.phase == Phase::Closing;
                            let next = on_message(self.mode, closing, m, out);
                            self.reader.finish();
                            if let Some(p) = next {
                                self.phase = p;
                            }
                        }
                        Ok(None) => {}
                    }
                    pos += f.len;
                }
            }
        }
        pos
    }
}

/// Acts on one message; returns the phase to move to, if it changes.
fn on_message(mode: Mode, closing: bool, m: Message<'_>, out: &mut Vec<Output>) -> Option<Phase> {
    match m {
        Message::Close(code, _) => {
            if !closing {
                // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets an empty one.
                let reply = match code {
                    Some(c) => frame::encode_close(c, ""),
                    None => frame::encode(Opcode::Close, b""),
                };
                out.push(Output::Send(reply));
            }
            out.push(Output::Close);
            Some(Phase::Done)
        }
        // Once we have sent our close, only the peer's close matters.
        _ if closing => None,
        Message::Ping(p) => {
            out.push(Output::Send(frame::encode(Opcode::Pong, p)));
            None
        }
        Message::Pong(_) => None,
        Message::Text(t) => {
            out.push(Output::Received);
            if mode == Mode::Echo {
                out.push(Output::Send(frame::encode(Opcode::Text, t)));
            }
            None
        }
        Message::Binary(b) => {
            out.push(Output::Received);
            if mode == Mode::Echo {
                out.push(Output::Send(frame::encode(Opcode::Binary, b)));
            }
            None
        }
    }
}

/// Where an accepted upgrade goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub mode: Mode,
    pub protocol: Option<&'static str>,
    pub subscribe: Vec<Dest>,
}

/// Decides what an upgrade request gets: a mode and its subscriptions, or a refusal.
pub fn route(req: &Request, cfg: &Config) -> Result<Route, Reject> {
    if !cfg.server.allowed_origins.is_empty()
        && !req
            .origin
            .as_ref()
            .is_some_and(|o| cfg.server.allowed_origins.iter().any(|a| a == o))
    {
        return Err(Reject::new(403, "origin not allowed"));
    }
    if cfg.server.echo && req.path == cfg.server.echo_path {
        return Ok(Route {
            mode: Mode::Echo,
            protocol: None,
            subscribe: Vec::new(),
        });
    }
    if req.path != cfg.server.path {
        return Err(Reject::new(
            404,
            format!("no WebSocket endpoint at {}", req.path),
        ));
    }
    if req
        .protocols
        .iter()
        .any(|p| STOMP_PROTOCOLS.contains(&p.as_str()))
    {
        return Err(Reject::new(
            501,
            "STOMP over WebSocket is not available in this build yet",
        ));
    }
    if cfg.auth.enabled {
        return Err(Reject::new(
            401,
            "authentication is on: JWT verification for raw mode is not available in this build yet; run with --no-auth",
        ));
    }
    let project = req.query_first("project").unwrap_or("default");
    check_name("project", project)?;
    let mut subscribe = Vec::new();
    for topic in req.query_all("topic") {
        check_name("topic", topic)?;
        let d = Dest::Topic {
            project: project.to_string(),
            topic: topic.to_string(),
        };
        if !subscribe.contains(&d) {
            subscribe.push(d);
        }
    }
    if subscribe.len() > cfg.limits.max_topics_per_session {
        return Err(Reject::new(
            400,
            format!(
                "too many topics: at most {} per connection",
                cfg.limits.max_topics_per_session
            ),
        ));
    }
    Ok(Route {
        mode: Mode::Raw,
        protocol: None,
        subscribe,
    })
}

/// Names are bounded and free of control characters (which also keeps hub keys unambiguous).
pub fn check_name(what: &str, name: &str) -> Result<(), Reject> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Reject::new(
            400,
            format!("invalid {what} name: 1–{MAX_NAME} bytes, no control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
