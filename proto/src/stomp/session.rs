//! One STOMP session's state machine, sans-IO: CONNECT (with JWT auth) → CONNECTED, SUBSCRIBE /
//! UNSUBSCRIBE by id, SEND when the project allows it, receipts, DISCONNECT, heart-beats.
//! STOMP bytes go in (the payloads of WebSocket messages, which need not align with frames);
//! `Output`s come out. Every violation gets an ERROR frame with a `message` header, then close.

use std::sync::Arc;

use bytes::Bytes;

mod access;
mod connect;
mod handover;
mod subscribe;

use super::frame::{self, Command, Frame, Parsed};
use crate::access::{Act, Grants};
use crate::context::Context;
use crate::dest::{Dest, Written};
use crate::names::check as check_name;
use crate::ws::CloseError;

/// What a STOMP session asks of the connection it runs on. It knows nothing of WebSocket
/// framing: the endpoint wraps frames into messages and turns `Close` into its close handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// An encoded STOMP frame for the client.
    Frame(Vec<u8>),
    /// A server heart-beat (one EOL).
    HeartBeat,
    /// Deliver this destination to the session from now on.
    Subscribe(Dest),
    /// A subscription (already delivered live) wants what it missed: the shard replays it and
    /// answers the SUBSCRIBE's receipt.
    Recover(crate::history::Recover),
    /// The session's last subscription to this destination is gone.
    Unsubscribe(Dest),
    /// A client publish (SEND, where the project allows it).
    Publish {
        /// Where it goes (in the session's project).
        dest: Dest,
        /// The body.
        body: Bytes,
        /// The client's headers, server-owned ones removed.
        headers: Vec<(String, String)>,
    },
    /// CONNECT succeeded: the session is authenticated and heart-beats may start.
    Connected,
    /// The project's backend must say whether this session may `act` on `topic`; the
    /// answer comes back through `Session::on_answer`.
    Ask(Act, String),
    /// The session's token was replaced (`/app/refresh`): its expiry moved.
    Refreshed,
    /// A refusal worth an operator's eye (an authentication failure), in words.
    Refused(String),
    /// The session is over: close the connection with this code (after what came before).
    Close(u16, &'static str),
}

/// Where a session puts its outputs: the endpoint's adapter, or a `Vec` in tests.
pub trait Sink {
    /// Takes one output.
    fn put(&mut self, o: Output);
}

impl Sink for Vec<Output> {
    fn put(&mut self, o: Output) {
        self.push(o);
    }
}

/// `message` header of an authentication failure: what the seed's clients look for.
pub const AUTH_FAIL: &str = "auth_fail";
pub use access::{FORBIDDEN, TOKEN_EXPIRED};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitConnect,
    Connected,
    Closed,
}

/// One SUBSCRIBE as `id` followed by the destination as written, split at a stored length:
/// one allocation per subscription, since a million sessions each hold one, and no byte of
/// either part can move the split (a separator character could). What it resolves to is
/// recomputed (cheaply, without allocating) when matching a publish.
#[derive(Debug)]
struct Sub {
    text: Box<str>,
    id_len: u16,
}

impl Sub {
    /// `id` is a valid name (`names::MAX` bytes at most), so its length fits.
    fn new(id: &str, written: &str) -> Sub {
        Sub {
            text: format!("{id}{written}").into(),
            id_len: id.len() as u16,
        }
    }

    fn id(&self) -> &str {
        &self.text[..usize::from(self.id_len)]
    }

    fn written(&self) -> &str {
        &self.text[usize::from(self.id_len)..]
    }
}

#[derive(Debug)]
/// One STOMP session: state, identity, subscriptions and heart-beat clocks.
pub struct Session {
    state: State,
    /// Negotiated version ("1.0", "1.1" or "1.2").
    version: &'static str,
    /// Legacy `/topic/{projectId}/…` forms accepted (from the config, fixed per session).
    legacy: bool,
    project: Arc<str>,
    user: Option<Box<str>>,
    /// A token presented at the WebSocket upgrade (`?token=` or `Authorization: Bearer`).
    upgrade_token: Option<Box<str>>,
    subs: Vec<Sub>,
    pending: Vec<u8>,
    /// Negotiated heart-beat periods in ms: we send every `out`, expect something every `in_`.
    hb_out: u32,
    hb_in: u32,
    /// Wheel ticks of the last byte received and sent.
    last_in: u32,
    last_out: u32,
    /// When the token expires (Unix seconds; 0 = never, or no token).
    exp: u32,
    /// SUBSCRIBEs in the current second (`limits.max_subscribes_per_s`): the second's number
    /// (wrapping) in the high half, the count in the low.
    sub_rate: u32,
    /// The topics the token grants, for projects whose policy is `claim`.
    grants: Option<Box<Grants>>,
    /// SUBSCRIBEs and SENDs waiting for the project's backend. Boxed: one pointer in every
    /// session instead of a `Vec`'s three words, since almost none ever waits.
    #[allow(clippy::box_collection)]
    asked: Option<Box<Vec<access::Asked>>>,
}

impl Session {
    /// A session waiting for CONNECT, in `project` unless CONNECT names another; `upgrade_token` is a token presented at the upgrade, used if CONNECT has none.
    pub fn new(project: Arc<str>, upgrade_token: Option<&str>, legacy: bool) -> Session {
        Session {
            state: State::AwaitConnect,
            version: "1.2",
            legacy,
            project,
            user: None,
            upgrade_token: upgrade_token.map(Into::into),
            subs: Vec::new(),
            pending: Vec::new(),
            hb_out: 0,
            hb_in: 0,
            last_in: 0,
            last_out: 0,
            exp: 0,
            sub_rate: 0,
            grants: None,
            asked: None,
        }
    }

    /// The session's project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The authenticated user, once CONNECTED (without auth: the `login` header, if any).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// CONNECT went through and the session is not closed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Heart-beat periods (send, expect) in ms, once connected.
    pub fn heartbeat(&self) -> (u32, u32) {
        (self.hb_out, self.hb_in)
    }

    /// The subscriptions (id, destination as written) that `dest` should be delivered to.
    pub fn matching<'a>(&'a self, dest: &'a Dest) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.subs
            .iter()
            .filter(move |s| self.resolves_to(s.written(), dest))
            .map(|s| (s.id(), s.written()))
    }

    /// Every subscription as (id, destination as written).
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.subs.iter().map(|s| (s.id(), s.written()))
    }

    /// Something was sent to the client at tick `now` (a beat is then not needed).
    pub fn sent(&mut self, now: u64) {
        self.last_out = now as u32;
    }

    /// Whether a destination as written resolves to `dest`, without allocating.
    fn resolves_to(&self, written: &str, dest: &Dest) -> bool {
        match dest {
            Dest::Topic { project, topic } => {
                **project == *self.project
                    && written
                        .strip_prefix("/topic/")
                        .is_some_and(|rest| self.strip_legacy(rest) == topic)
            }
            Dest::User {
                project,
                user,
                queue,
            } => {
                **project == *self.project
                    && self.user.as_deref() == Some(user.as_str())
                    && written
                        .strip_prefix("/user/queue/")
                        .is_some_and(|rest| self.strip_legacy(rest) == queue)
            }
        }
    }

    /// In legacy mode `{projectId}/name` means `name` when the segment is this session's own
    /// project, so a client can never reach another project this way.
    fn strip_legacy<'a>(&self, rest: &'a str) -> &'a str {
        match rest.split_once('/') {
            Some((p, name)) if self.legacy && p == &*self.project => name,
            _ => rest,
        }
    }

    /// Bytes of STOMP from the client (one WebSocket message's payload).
    pub fn on_bytes(&mut self, data: &[u8], now: u64, ctx: &Context, out: &mut impl Sink) {
        self.last_in = now as u32;
        if self.state == State::Closed {
            return;
        }
        // The common case (a heart-beat, or whole frames) parses straight from the message;
        // only a frame split across messages is copied into `pending`.
        if self.pending.is_empty() {
            let used = self.consume(data, ctx, out);
            if self.state != State::Closed && used < data.len() {
                self.pending.extend_from_slice(&data[used..]);
            }
            return;
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let used = self.consume(&buf, ctx, out);
        if self.state != State::Closed && used < buf.len() {
            buf.drain(..used);
            self.pending = buf;
        }
    }

    /// Parses and acts on every complete frame at the front of `buf`; returns bytes used.
    fn consume(&mut self, buf: &[u8], ctx: &Context, out: &mut impl Sink) -> usize {
        let stomp = &ctx.cfg.stomp;
        let mut limits = frame::Limits {
            max_frame_bytes: stomp.max_frame_bytes,
            max_headers: stomp.max_headers,
            max_header_bytes: stomp.max_header_bytes,
        };
        if self.state == State::AwaitConnect {
            // Before CONNECT nobody is authenticated: what one may make us hold is small.
            limits.max_frame_bytes = limits.max_frame_bytes.min(ctx.cfg.limits.max_connect_bytes);
        }
        let mut pos = 0;
        while self.state != State::Closed && pos < buf.len() {
            match frame::parse(&buf[pos..], &limits) {
                Ok(Parsed::Partial) => break,
                Ok(Parsed::HeartBeat(n)) => pos += n,
                Ok(Parsed::Frame(f, n)) => {
                    pos += n;
                    self.on_frame(f, ctx, out);
                }
                Err(e) => {
                    self.error(&e.to_string(), None, CloseError::PROTOCOL, out);
                    return buf.len();
                }
            }
        }
        pos
    }

    /// The heart-beat timer fired at tick `now` (`tick_ms` per tick). Sends a beat if nothing
    /// went out for a period; closes a client silent for two of its periods. Returns when
    /// (in ticks) to check again, or None if heart-beats are off or the session ended.
    pub fn on_heartbeat(
        &mut self,
        now: u64,
        tick_ms: u64,
        stalled: bool,
        out: &mut impl Sink,
    ) -> Option<u64> {
        if self.state != State::Connected {
            return None;
        }
        let ticks = |ms: u32| (u64::from(ms) / tick_ms).max(1);
        let since = |t: u32| now.saturating_sub(u64::from(t));
        if !stalled && self.hb_in > 0 && since(self.last_in) >= 2 * ticks(self.hb_in) {
            self.error(
                "heart-beat timeout: nothing received for two heart-beat periods",
                None,
                CloseError::POLICY,
                out,
            );
            return None;
        }
        if self.hb_out > 0 && since(self.last_out) >= ticks(self.hb_out) {
            // One static frame for every beat: a million sessions beat without allocating.
            out.put(Output::HeartBeat);
            self.last_out = now as u32;
        }
        self.next_check(tick_ms)
    }

    /// How many ticks (`tick_ms` each) until the heart-beat timer should look at this session
    /// again; None when heart-beats are off both ways.
    pub fn next_check(&self, tick_ms: u64) -> Option<u64> {
        let period = match (self.hb_out, self.hb_in) {
            (0, 0) => return None,
            (0, i) => i,
            (o, 0) => o,
            (o, i) => o.min(i),
        };
        // A quarter period: beats go out 10–12.5 s apart for a 10 s period, never near 1.5×.
        Some((u64::from(period) / tick_ms / 4).max(1))
    }

    /// CONNECT did not arrive within `limits.connect_timeout_ms` of the upgrade. Returns
    /// whether the session was still waiting for it (and is now closing).
    pub fn connect_timeout(&mut self, timeout_ms: u64, out: &mut impl Sink) -> bool {
        if self.state != State::AwaitConnect {
            return false;
        }
        self.error(
            &format!("no CONNECT within {timeout_ms} ms of the upgrade"),
            None,
            CloseError::POLICY,
            out,
        );
        true
    }

    /// Sends an ERROR frame whose message is its body, and closes the WebSocket with `code`.
    fn error(&mut self, message: &str, receipt: Option<&str>, code: u16, out: &mut impl Sink) {
        self.error_with(message, message, receipt, code, message_reason(code), out);
    }

    /// Sends an ERROR frame (`message` header, `body`, the `receipt-id` when the refused frame
    /// asked for a receipt) and closes the WebSocket with `code` and `reason`.
    fn error_with(
        &mut self,
        message: &str,
        body: &str,
        receipt: Option<&str>,
        code: u16,
        reason: &'static str,
        out: &mut impl Sink,
    ) {
        let mut f = Frame::new(Command::Error)
            .header("message", message)
            .header("content-type", "text/plain");
        if let Some(r) = receipt {
            f = f.header("receipt-id", r);
        }
        f.body = body.as_bytes().to_vec();
        out.put(Output::Frame(f.encode()));
        out.put(Output::Close(code, reason));
        self.state = State::Closed;
    }

    fn on_frame(&mut self, f: Frame, ctx: &Context, out: &mut impl Sink) {
        let receipt = f.get("receipt").map(str::to_string);
        match (self.state, f.command) {
            (State::AwaitConnect, Command::Connect | Command::Stomp) => self.connect(&f, ctx, out),
            (State::AwaitConnect, c) => {
                return self.error(
                    &format!("expected CONNECT or STOMP, got {}", c.as_str()),
                    receipt.as_deref(),
                    CloseError::PROTOCOL,
                    out,
                );
            }
            (_, Command::Connect | Command::Stomp) => {
                return self.error("already connected", None, CloseError::PROTOCOL, out);
            }
            (_, Command::Subscribe) => match self.subscribe(&f, ctx, out) {
                Ok(true) => {}
                // Waiting for the backend, or recovering: the receipt comes later.
                Ok(false) => return,
                Err(e) => return self.refuse(e, receipt.as_deref(), out),
            },
            (_, Command::Unsubscribe) => {
                let Some(id) = f.get("id") else {
                    return self.error(
                        "UNSUBSCRIBE needs an id header",
                        receipt.as_deref(),
                        CloseError::PROTOCOL,
                        out,
                    );
                };
                if let Some(i) = self.subs.iter().position(|s| s.id() == id) {
                    let s = self.subs.remove(i);
                    if let Ok(dest) = self.resolve(s.written(), true)
                        && !self
                            .subs
                            .iter()
                            .any(|o| self.resolves_to(o.written(), &dest))
                    {
                        out.put(Output::Unsubscribe(dest));
                    }
                }
            }
            (_, Command::Send) if f.get("destination") == Some(access::REFRESH) => {
                if let Err(e) = self.refresh(&f, ctx, out) {
                    return self.auth_fail(&e, out);
                }
            }
            (_, Command::Send) => match self.send(f, ctx, out) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.refuse(e, receipt.as_deref(), out),
            },
            (_, Command::Ack | Command::Nack) => {
                // Subscriptions are auto-ack; acknowledgements are accepted and ignored.
            }
            (_, Command::Begin | Command::Commit | Command::Abort) => {
                return self.error(
                    "transactions are not supported",
                    receipt.as_deref(),
                    CloseError::PROTOCOL,
                    out,
                );
            }
            (_, Command::Disconnect) => {
                if let Some(r) = &receipt {
                    out.put(Output::Frame(
                        Frame::new(Command::Receipt)
                            .header("receipt-id", r.as_str())
                            .encode(),
                    ));
                }
                out.put(Output::Close(CloseError::NORMAL, "disconnected"));
                self.state = State::Closed;
                return;
            }
            (_, c) => {
                return self.error(
                    &format!("{} is a server frame; clients may not send it", c.as_str()),
                    receipt.as_deref(),
                    CloseError::PROTOCOL,
                    out,
                );
            }
        }
        if let Some(r) = receipt
            && self.state != State::Closed
        {
            out.put(Output::Frame(
                Frame::new(Command::Receipt)
                    .header("receipt-id", r)
                    .encode(),
            ));
        }
    }

    /// SEND: `Ok(true)` when done, `Ok(false)` when the backend was asked first.
    fn send(
        &mut self,
        f: Frame,
        ctx: &Context,
        out: &mut impl Sink,
    ) -> Result<bool, access::Refusal> {
        let publish = ctx
            .cfg
            .projects
            .get(&*self.project)
            .map(|p| p.publish_policy());
        if matches!(publish, None | Some(crate::access::Policy::None)) {
            return Err(format!(
                "SEND is not allowed in project {}: clients may not publish (publish = \"none\")",
                self.project
            )
            .into());
        }
        let written = f
            .get("destination")
            .ok_or("SEND needs a destination header")?;
        let dest = self.resolve(written, false)?;
        let receipt = f.get("receipt").map(str::to_string);
        // What the server writes itself (and what belongs to this SEND alone) is not passed on:
        // a publisher must not be able to set another session's `subscription` or `message-id`.
        let headers = f
            .headers
            .iter()
            .filter(|(k, _)| {
                !frame::SERVER_HEADERS.contains(&k.as_str())
                    && !matches!(k.as_str(), "receipt" | "transaction")
            })
            .cloned()
            .collect();
        let body = Bytes::from(f.body);
        if !self.permitted(Act::Publish, &dest, ctx)? {
            self.ask_publish(dest, body, headers, receipt, out);
            return Ok(false);
        }
        out.put(Output::Publish {
            dest,
            body,
            headers,
        });
        Ok(true)
    }

    /// Maps a destination string to a hub destination in this session's project.
    fn resolve(&self, written: &str, subscribing: bool) -> Result<Dest, String> {
        match Written::parse(written, false) {
            Some(Written::Topic(rest)) => Dest::topic(&self.project, self.strip_legacy(rest)),
            Some(Written::UserQueue(rest)) => {
                let queue = self.strip_legacy(rest);
                check_name("queue", queue)?;
                let user = self.user.as_deref().ok_or_else(|| {
                    format!("{written} is a user queue: it needs an authenticated user")
                })?;
                if !subscribing {
                    return Err("clients may only SEND to /topic/ destinations".into());
                }
                Dest::user_queue(&self.project, user, queue)
            }
            None => Err(format!(
                "unknown destination {written:?}: use /topic/NAME or /user/queue/NAME"
            )),
        }
    }
}

fn message_reason(code: u16) -> &'static str {
    match code {
        CloseError::POLICY => "policy violation (see the STOMP ERROR frame)",
        _ => "STOMP protocol error (see the ERROR frame)",
    }
}

#[cfg(test)]
mod tests;
