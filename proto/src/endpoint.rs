//! One connection's protocol state, sans-IO: upgrade, routing to a mode, WebSocket messages,
//! and the close handshake. Bytes go in; `Outputs` (actions: bytes to send, destinations to join, when
//! to close the socket) come out. The reactor owns the socket and carries the outputs out, so
//! everything a client can make the server do is testable here without one.

use bytes::Bytes;

use crate::access::Act;
use crate::config::Config;
pub use crate::context::Context;
use crate::dest::Dest;
use crate::outbound::Encoding;
use crate::sockjs;
use crate::stomp;
use crate::stomp::session::Output as StompOutput;
use crate::ws::CloseError;
use crate::ws::deflate;
use crate::ws::frame::{self, Decoded};
use crate::ws::handshake;
use crate::ws::message::Reader;

/// What the shard must do for this connection, in the order given.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue these bytes (a handshake answer or a frame).
    Send(Bytes),
    /// Deliver this destination to the connection from now on.
    Subscribe(Dest),
    /// Replay what a subscription missed (see `history::Recover`).
    Recover(crate::history::Recover),
    /// The session's last subscription to this destination is gone.
    Unsubscribe(Dest),
    /// A client publish (STOMP SEND where the project allows it).
    Publish {
        /// Where it goes.
        dest: Dest,
        /// The body, shared by every recipient.
        body: Bytes,
        /// The publisher's extra STOMP headers (server-owned ones already removed).
        headers: Vec<(String, String)>,
    },
    /// Our close frame is queued and we wait for the peer's: arm the close timeout.
    AwaitClose,
    /// Close the socket once everything queued is written.
    Close,
    /// A request for a SockJS session over HTTP: for the shard that owns the session, which
    /// answers through `exchange_done`.
    Exchange(Box<HttpRequest>),
    /// Ask the project's backend whether this session may act on a topic; the answer comes
    /// back through `Session::on_answer`.
    Ask(Act, String),
    /// Something refused that an operator may want to see in the log (rate-limited there).
    Refused(String),
    /// A raw session's token was refreshed with these grants: its subscriptions to topics
    /// they no longer allow end now (the shard holds a raw session's topics).
    Regranted(Option<Box<crate::access::Grants>>),
}

/// What happened on this connection, for counters and timers (in no particular order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The upgrade succeeded (its 101 is queued).
    Upgraded,
    /// A STOMP session is connected: it is authenticated, and heart-beats may start.
    Connected,
    /// The upgrade was refused (the HTTP answer is queued).
    Rejected,
    /// A data message arrived from the client.
    Received,
    /// The STOMP layer refused something (ERROR sent, session closing).
    StompError,
    /// The connection broke the protocol (the close frame is queued).
    ProtocolError,
    /// A kept-alive HTTP connection is back to waiting for its next request.
    Idle,
    /// The session's token was replaced: its expiry moved.
    Refreshed,
}

/// Everything one call into a connection produced: what to do, and what happened.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// To carry out, in order.
    pub actions: Vec<Action>,
    /// To count and to arm timers for.
    pub events: Vec<Event>,
}

impl Outputs {
    /// Adds an action.
    pub fn act(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// Records an event.
    pub fn note(&mut self, e: Event) {
        self.events.push(e);
    }

    /// Whether the connection is to be closed.
    pub fn closes(&self) -> bool {
        self.actions.contains(&Action::Close)
    }

    /// Nothing to do and nothing happened.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.events.is_empty()
    }

    /// Forgets both lists, keeping their allocations.
    pub fn clear(&mut self) {
        self.actions.clear();
        self.events.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    /// A SockJS HTTP request was handed to its session; its answer is being written.
    Exchange,
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Nothing more will be read.
    Done,
}

#[derive(Debug)]
/// What a connection speaks once upgraded.
pub enum Mode {
    /// Subscribed at upgrade; client messages are counted and ignored. The identity is kept
    /// only for authenticated sessions (so `/disconnect` can find them).
    Raw(Option<Box<Identity>>),
    /// Every message comes back (the Autobahn target).
    Echo,
    /// STOMP 1.x over the WebSocket.
    Stomp(Box<stomp::session::Session>),
}

#[derive(Debug, PartialEq, Eq)]
/// Who an authenticated raw session is.
pub struct Identity {
    /// The project its token was checked in.
    pub project: Box<str>,
    /// The user its token names.
    pub user: Box<str>,
    /// When its token expires (Unix seconds; 0 = never).
    pub exp: u32,
    /// Topics of the upgrade waiting for the project's backend.
    pub asking: Vec<Box<str>>,
}

/// The STOMP subprotocols, in the order the server prefers them.
const STOMP_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// One connection's protocol state, from the first byte of its upgrade to its close.
pub struct Session {
    phase: Phase,
    mode: Mode,
    /// Bytes received but not yet forming a complete request or frame.
    pending: Vec<u8>,
    reader: Reader,
    /// Payload bytes of the incomplete frame in `pending` already checked as UTF-8.
    peeked: u32,
    wrapping: Wrapping,
    /// permessage-deflate's window bits when negotiated (0: not).
    deflate: u8,
    /// A raw session that asked for its messages' positions (`positions=1`).
    positions: bool,
}

pub use crate::outbound::Wrapping;

/// What reading a request head left for `consume`.
enum Head {
    /// Done for now: this many bytes were used.
    Stop(usize),
    /// Upgraded after this many bytes: frames may follow.
    Open(usize),
}

impl Default for Session {
    fn default() -> Self {
        Session {
            phase: Phase::Handshake,
            mode: Mode::Raw(None),
            pending: Vec::new(),
            reader: Reader::default(),
            peeked: 0,
            wrapping: Wrapping::WebSocket,
            deflate: 0,
            positions: false,
        }
    }
}

impl Session {
    /// The upgrade is done and no close has started.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// The upgrade request is still being read.
    pub fn in_handshake(&self) -> bool {
        self.phase == Phase::Handshake
    }

    /// Bytes held for an incomplete request or frame (zero for an idle connection).
    pub fn buffered(&self) -> usize {
        self.pending.capacity()
    }

    /// A SockJS session carried by HTTP requests: it is open from the start and has no
    /// socket; what it sends is SockJS frames for the request receiving for it.
    pub fn over_http(mode: Mode) -> Session {
        Session {
            phase: Phase::Open,
            mode,
            wrapping: Wrapping::SockjsHttp,
            ..Session::default()
        }
    }

    /// permessage-deflate's window bits, when the client negotiated it.
    pub fn deflate(&self) -> Option<u8> {
        (self.deflate > 0).then_some(self.deflate)
    }

    /// A raw session that gets each message in the positions envelope (see
    /// `history::envelope`).
    pub fn positions(&self) -> bool {
        self.positions
    }

    /// Whether messages travel in SockJS frames.
    pub fn is_sockjs(&self) -> bool {
        self.wrapping != Wrapping::WebSocket
    }

    /// How messages reach the client.
    pub fn wrapping(&self) -> Wrapping {
        self.wrapping
    }

    /// How messages are framed for this session (`min_bytes`: `[compression] min_bytes`).
    pub fn encoding(&self, min_bytes: usize) -> Encoding {
        Encoding {
            wrapping: self.wrapping,
            deflate: self.deflate(),
            min_bytes,
        }
    }

    /// An HTTP request of this connection is being answered by a SockJS session.
    pub fn in_exchange(&self) -> bool {
        self.phase == Phase::Exchange
    }

    /// The SockJS session's answer to this connection's request is written: read the next
    /// request (kept alive) or close.
    pub fn exchange_done(&mut self, keep_alive: bool, now: u64, ctx: &Context, out: &mut Outputs) {
        if self.phase != Phase::Exchange {
            return;
        }
        if !keep_alive {
            out.act(Action::Close);
            self.phase = Phase::Done;
            return;
        }
        self.phase = Phase::Handshake;
        out.note(Event::Idle);
        if !self.pending.is_empty() {
            self.on_bytes(&mut [], now, ctx, out);
        }
    }

    /// Messages a SockJS client sent with `xhr_send`, for a session over HTTP.
    pub fn on_sockjs_messages(
        &mut self,
        msgs: &[String],
        now: u64,
        ctx: &Context,
        out: &mut Outputs,
    ) {
        if self.phase != Phase::Open {
            return;
        }
        let mut sink = Framing::new(out, self.wrapping);
        match &mut self.mode {
            Mode::Stomp(s) => {
                for m in msgs {
                    s.on_bytes(m.as_bytes(), now, ctx, &mut sink);
                    if sink.close.is_some() {
                        break;
                    }
                }
            }
            Mode::Echo if !msgs.is_empty() => {
                sink.out.note(Event::Received);
                let f = sockjs::messages(msgs.iter().map(|m| m.as_bytes()));
                sink.out.act(Action::Send(f.into()));
            }
            _ => {}
        }
        let close = sink.close;
        self.stomp_closed(close, out);
    }

    /// What the connection speaks.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The STOMP session, in STOMP mode.
    pub fn stomp(&self) -> Option<&stomp::session::Session> {
        match &self.mode {
            Mode::Stomp(s) => Some(s),
            _ => None,
        }
    }

    /// The STOMP session, in STOMP mode, to change.
    pub fn stomp_mut(&mut self) -> Option<&mut stomp::session::Session> {
        match &mut self.mode {
            Mode::Stomp(s) => Some(s),
            _ => None,
        }
    }

    /// (project, user) of an identified session: STOMP, or raw with a verified token.
    pub fn identity(&self) -> Option<(&str, Option<&str>)> {
        match &self.mode {
            Mode::Raw(Some(id)) => Some((&id.project, Some(&id.user))),
            Mode::Stomp(s) => Some((s.project(), s.user())),
            _ => None,
        }
    }

    /// Feeds bytes received from the client at wheel tick `now`. `data` may be modified
    /// (frames are unmasked in place).
    pub fn on_bytes(&mut self, data: &mut [u8], now: u64, ctx: &Context, out: &mut Outputs) {
        if self.phase == Phase::Done {
            return;
        }
        if self.pending.is_empty() {
            let used = self.consume(data, now, ctx, out);
            if self.phase != Phase::Done && used < data.len() {
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.consume(&mut buf, now, ctx, out);
            if self.phase != Phase::Done && used < buf.len() {
                buf.drain(..used);
                self.pending = buf;
            }
        }
    }

    /// The heart-beat timer of a STOMP session fired at tick `now`; returns when to check
    /// again (in ticks), if at all. `stalled`: the server itself fell behind, so silence is not
    /// held against the client this time.
    pub fn on_heartbeat(
        &mut self,
        now: u64,
        tick_ms: u64,
        stalled: bool,
        out: &mut Outputs,
    ) -> Option<u64> {
        if self.phase != Phase::Open {
            return None;
        }
        let Mode::Stomp(s) = &mut self.mode else {
            return None;
        };
        let mut sink = Framing::new(out, self.wrapping);
        let next = s.on_heartbeat(now, tick_ms, stalled, &mut sink);
        let close = sink.close;
        self.stomp_closed(close, out);
        next
    }

    /// STOMP only: CONNECT did not come in time after the upgrade. Returns whether the session
    /// was still waiting for it (it now gets an ERROR and is closing).
    pub fn connect_timeout(&mut self, timeout_ms: u64, out: &mut Outputs) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        let Mode::Stomp(s) = &mut self.mode else {
            return false;
        };
        let mut sink = Framing::new(out, self.wrapping);
        let fired = s.connect_timeout(timeout_ms, &mut sink);
        let close = sink.close;
        self.stomp_closed(close, out);
        fired
    }

    /// The largest message this connection may send now: small until a STOMP session is
    /// authenticated, so an anonymous client cannot park 64 KB in the server.
    fn message_limit(&self, cfg: &Config) -> usize {
        match &self.mode {
            Mode::Stomp(s) if !s.is_connected() => cfg
                .limits
                .max_message_bytes
                .min(cfg.limits.max_connect_bytes),
            _ => cfg.limits.max_message_bytes,
        }
    }

    /// Turns a close the STOMP layer asked for into our close handshake.
    fn stomp_closed(&mut self, close: Option<(u16, &'static str)>, out: &mut Outputs) {
        if let Some((code, reason)) = close {
            if code != CloseError::NORMAL {
                out.note(Event::StompError);
            }
            self.close(code, reason, out);
        }
    }

    /// Consumes what it can of `buf`; returns how many bytes it used.
    fn consume(&mut self, buf: &mut [u8], now: u64, ctx: &Context, out: &mut Outputs) -> usize {
        let mut pos = 0;
        if self.phase == Phase::Handshake {
            match self.on_head(buf, ctx, out) {
                Head::Stop(n) => return n,
                Head::Open(consumed) => pos = consumed,
            }
        }
        self.on_frames(buf, pos, now, ctx, out)
    }

    /// The request head: an upgrade opens the connection (frames may follow in `buf`), a
    /// plain answer or a SockJS exchange takes the request, a refusal ends it.
    fn on_head(&mut self, buf: &mut [u8], ctx: &Context, out: &mut Outputs) -> Head {
        let cfg = &ctx.cfg;
        match handshake::parse(buf, cfg.limits.max_header_bytes) {
            Ok(handshake::Parse::Partial) => Head::Stop(0),
            Err(r) => {
                self.reject(&r, out);
                Head::Stop(buf.len())
            }
            Ok(handshake::Parse::Done { request, consumed }) => {
                match route(&request, ctx) {
                    Ok(Route::Upgrade(up)) => {
                        self.upgrade(&request, *up, cfg, out);
                        Head::Open(consumed)
                    }
                    Ok(Route::Answer { bytes, keep_alive }) => {
                        // Plain HTTP (SockJS `/info` and friends).
                        out.act(Action::Send(bytes.into()));
                        if keep_alive {
                            out.note(Event::Idle);
                            return Head::Stop(consumed);
                        }
                        out.act(Action::Close);
                        self.phase = Phase::Done;
                        Head::Stop(buf.len())
                    }
                    Ok(Route::Sockjs(mut req)) => {
                        let body = sockjs::http::read_body(
                            &buf[consumed..],
                            request.content_length,
                            request.chunked,
                            cfg.limits.max_message_bytes,
                        );
                        Head::Stop(match body {
                            Ok(None) => 0,
                            Ok(Some((body, len))) => {
                                req.body = body;
                                out.act(Action::Exchange(req));
                                self.phase = Phase::Exchange;
                                consumed + len
                            }
                            Err(r) => {
                                self.reject(&r, out);
                                buf.len()
                            }
                        })
                    }
                    Err(r) => {
                        self.reject(&r, out);
                        Head::Stop(buf.len())
                    }
                }
            }
        }
    }

    /// The 101 with what was negotiated (subprotocol, permessage-deflate), and what the
    /// upgrade asked for (subscriptions, recoveries, SockJS's open frame).
    fn upgrade(
        &mut self,
        request: &handshake::Request,
        up: Upgrade,
        cfg: &Config,
        out: &mut Outputs,
    ) {
        let Upgrade {
            mode,
            protocol,
            subscribe,
            ask,
            sockjs,
            go_away,
            recover,
            positions,
        } = up;
        let accept = request.upgrade.as_deref().unwrap_or_default();
        let deflate = cfg
            .compression
            .enabled
            .then(|| deflate::negotiate(&request.extensions))
            .flatten();
        self.deflate = deflate.map_or(0, |d| d.window_bits);
        let ext = deflate.map(|d| d.header());
        out.act(Action::Send(
            handshake::accept_response_with(accept, protocol, ext.as_deref()).into(),
        ));
        out.note(Event::Upgraded);
        out.actions
            .extend(subscribe.into_iter().map(Action::Subscribe));
        out.actions
            .extend(ask.into_iter().map(|t| Action::Ask(Act::Subscribe, t)));
        out.actions.extend(recover.into_iter().map(Action::Recover));
        self.positions = positions;
        self.mode = mode;
        self.phase = Phase::Open;
        if sockjs {
            self.wrapping = Wrapping::Sockjs;
            out.act(Action::Send(Bytes::from_static(SOCKJS_OPEN)));
        }
        if go_away {
            self.close(3000, "Go away!", out);
        }
    }

    /// The frames after the upgrade, each message handed to its mode; returns how many bytes
    /// were used (the rest is an incomplete frame).
    fn on_frames(
        &mut self,
        buf: &mut [u8],
        mut pos: usize,
        now: u64,
        ctx: &Context,
        out: &mut Outputs,
    ) -> usize {
        let cfg = &ctx.cfg;
        while matches!(self.phase, Phase::Open | Phase::Closing) {
            let max = self.message_limit(cfg);
            let rest = &mut buf[pos..];
            match frame::decode_with(rest, max, self.deflate > 0) {
                Err(e) => {
                    self.fail(e, out);
                    return buf.len();
                }
                Ok(Decoded::Partial {
                    opcode: Some(op),
                    rsv1: false,
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
                    match self
                        .reader
                        .on_frame_with(f.fin, f.rsv1, f.opcode, payload, max)
                    {
                        Err(e) => {
                            self.fail(e, out);
                            return buf.len();
                        }
                        Ok(Some(m)) => {
                            let closing = self.phase == Phase::Closing;
                            let mut sink = Framing::new(out, self.wrapping);
                            sink.deflate = self.deflate;
                            let next = on_message(&mut self.mode, closing, m, now, ctx, &mut sink);
                            let close = sink.close;
                            self.reader.finish();
                            if let Some(p) = next {
                                self.phase = p;
                            }
                            self.stomp_closed(close, out);
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

mod access;
mod closing;
mod handover;
mod messages;
pub mod relay;
mod route;
pub use messages::SOCKJS_BEAT;
use messages::{Framing, SOCKJS_OPEN, on_message};
pub use route::{HttpRequest, Route, Service, Upgrade, check_name, route};

#[cfg(test)]
mod tests;
