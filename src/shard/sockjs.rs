//! SockJS sessions over HTTP (`xhr`, `xhr_streaming`, `eventsource`, `xhr_send`), in the shard
//! core. The hard part is that a session outlives the requests that carry it, and with
//! `SO_REUSEPORT` its requests land on any shard: the `xhr_send` of a session is often accepted
//! by another shard than the one holding its streaming request.
//!
//! Every session therefore has one owner, the shard its id hashes to, computed the same way
//! everywhere: no table, no lock. A shard that reads a session request hands it to the owner
//! (a `Message` through the owner's channel, or directly when it is the owner) and keeps the
//! connection waiting; the owner answers with `Reply`s that the connection's shard writes, and
//! hears `Gone` when a receiving connection closes. The session itself is a socketless entry
//! in the owner's slab: subscriptions, fan-out, heart-beats, CONNECT deadlines and
//! `/disconnect` treat it like any session; its frames queue in its entry until a receiving
//! request takes them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::conn::Conn;
use super::timer::Kind;
use super::{Core, Op, ticks};
pub use crate::endpoint::relay::{Message, Peer};
use crate::endpoint::{HttpRequest, Mode, Service, Session};
use crate::sockjs;
use crate::sockjs::http::{self, END, Exchange, Stream, Transport};

/// The request receiving for a session, and how to write to it.
#[derive(Debug, Clone)]
struct Receiver {
    peer: Peer,
    transport: Transport,
    keep_alive: bool,
    origin: Option<Box<str>>,
    set_cookie: Option<Box<str>>,
    callback: Option<Box<str>>,
    http10: bool,
    /// Body bytes written on this response so far; a streaming one ends at `limit`.
    streamed: usize,
    limit: usize,
}

impl Receiver {
    fn stream(&self) -> Stream<'_> {
        Stream {
            origin: self.origin.as_deref(),
            set_cookie: self.set_cookie.as_deref(),
            callback: self.callback.as_deref().unwrap_or(""),
            http10: self.http10,
        }
    }
}

/// A session's HTTP side, next to its slab entry.
struct State {
    id: Box<str>,
    receiver: Option<Receiver>,
    /// When the last receiver left (wheel tick); the session expires `disconnect_delay_ms`
    /// after it unless another arrives.
    detached_at: u64,
    /// Set once the session is closed: its `c[...]` frame, repeated to whoever asks.
    closed: Option<Bytes>,
}

/// The owner's sessions and this shard's receiving connections.
#[derive(Default)]
pub struct Polling {
    by_id: HashMap<Box<str>, u32>,
    state: HashMap<u32, State>,
    /// Connections of this shard receiving for a session: (owner, session), to tell the owner
    /// when one closes.
    receiving: HashMap<u32, (usize, Box<str>)>,
    /// Receiving requests that found another one attached, answered a tick later: a client
    /// that aborted its request and sent the next one at once must find the session
    /// interrupted (the shard that read the first one may not have seen it close yet), not
    /// "another connection still open".
    contested: Vec<(u64, Peer, Box<HttpRequest>, Option<std::net::IpAddr>)>,
}

/// Contested requests held at once; beyond, they are answered at once.
const MAX_CONTESTED: usize = 1024;

/// The shard that owns session `id`, among `shards`.
pub fn owner(id: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // SipHash with fixed keys: every shard computes the same owner.
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

impl Core {
    /// Connection `key` read a session request: hand it to the session's owner.
    pub(super) fn exchange(&mut self, key: u32, req: Box<HttpRequest>) {
        // The carrying connection stops counting as unauthenticated: the session it asks for
        // is counted instead, by its owner, against the same address.
        let ip = self.peers.get(&key).copied();
        self.authenticated(key);
        let from = Peer {
            shard: self.id,
            key,
            epoch: self.conns[key as usize].epoch,
        };
        let to = owner(&req.session, self.shards);
        if matches!(req.exchange, Exchange::Receive(_)) {
            let id: Box<str> = req.session.as_str().into();
            self.polling.receiving.insert(key, (to, id));
        }
        self.tell_shard(to, Message::Request { from, req, ip });
    }

    fn tell_shard(&mut self, shard: usize, m: Message) {
        if shard == self.id {
            self.sockjs_message(m);
        } else {
            self.ops.push(Op::ToShard(shard, m));
        }
    }

    /// A message from a shard (this one included).
    pub(super) fn sockjs_message(&mut self, m: Message) {
        match m {
            Message::Request { from, req, ip } => self.sockjs_request(from, *req, ip, false),
            Message::Reply {
                key,
                epoch,
                bytes,
                end,
                keep_alive,
            } => self.sockjs_reply(key, epoch, bytes, end, keep_alive),
            Message::Gone { session, from } => {
                if let Some(&v) = self.polling.by_id.get(&session)
                    && self.polling.state[&v]
                        .receiver
                        .as_ref()
                        .is_some_and(|r| r.peer == from)
                {
                    // The receiving request was cut off, not ended by us: what it was sent
                    // may be lost, so the session ends, as the protocol's servers do; the
                    // client's next request hears why.
                    self.detach(v);
                    if self.polling.state[&v].closed.is_none() {
                        self.close_session(v, 1002, "Connection interrupted");
                    }
                }
            }
        }
    }

    /// The owner's side: a request for one of its sessions.
    fn sockjs_request(
        &mut self,
        from: Peer,
        req: HttpRequest,
        ip: Option<std::net::IpAddr>,
        held: bool,
    ) {
        let (origin, set_cookie) = (req.origin.as_deref(), req.set_cookie.as_deref());
        let ka = req.keep_alive;
        let existing = self.polling.by_id.get(req.session.as_str()).copied();
        let transport = match req.exchange {
            Exchange::Send | Exchange::JsonpSend => {
                let jsonp = req.exchange == Exchange::JsonpSend;
                let msgs = if jsonp {
                    http::jsonp_messages(&req.body, req.form)
                } else {
                    sockjs::decode(&req.body)
                };
                let answer = match (existing, msgs) {
                    (None, _) => http::sent(404, "Session not found.", origin, set_cookie, ka),
                    (Some(_), Err(e)) => http::sent(500, e.reason(), origin, set_cookie, ka),
                    (Some(v), Ok(msgs)) => {
                        self.sockjs_received(v, &msgs);
                        let (status, body) = if jsonp { (200, "ok") } else { (204, "") };
                        http::sent(status, body, origin, set_cookie, ka)
                    }
                };
                return self.reply(from, answer, true, ka);
            }
            Exchange::Receive(t) => t,
        };
        let v = match existing {
            Some(v) => v,
            None => match self.open_session(&req, ip) {
                Ok(v) => v,
                Err((status, why)) => {
                    self.st().rejected.fetch_add(1, Relaxed);
                    let answer = http::sent(status, why, origin, set_cookie, ka);
                    return self.reply(from, answer, true, ka);
                }
            },
        };
        let receiver = Receiver {
            peer: from,
            transport,
            keep_alive: ka && !(req.http10 && transport.streams()),
            origin: req.origin.as_deref().map(Into::into),
            set_cookie: req.set_cookie.as_deref().map(Into::into),
            callback: req.callback.as_deref().map(Into::into),
            http10: req.http10,
            streamed: 0,
            limit: req.response_limit,
        };
        let state = &self.polling.state[&v];
        let unread = !self.conns[v as usize].queue.is_empty();
        let refusal = match (&state.closed, &state.receiver) {
            // A closed session still hands out what it queued (its close frame last).
            (Some(_), None) if unread => None,
            (Some(c), _) => Some(c.clone()),
            (None, Some(_)) if !held && self.polling.contested.len() < MAX_CONTESTED => {
                let due = self.wheel.now() + 1;
                self.polling.contested.push((due, from, Box::new(req), ip));
                return;
            }
            (None, Some(_)) => Some(Bytes::from(sockjs::close(
                2010,
                "Another connection still open",
            ))),
            (None, None) => None,
        };
        if let Some(frame) = refusal {
            let answer = if transport.streams() {
                transport.whole(&frame, receiver.stream())
            } else {
                let jsonp = receiver.callback.as_deref();
                http::poll(&frame, jsonp, origin, set_cookie, ka)
            };
            return self.reply(from, answer, true, receiver.keep_alive);
        }
        if transport.streams() {
            let head = Bytes::from(transport.open(receiver.stream()));
            self.reply(from, head, false, receiver.keep_alive);
        }
        let state = self.polling.state.get_mut(&v).expect("session state");
        state.receiver = Some(receiver);
        self.flush_session(v);
        if req.service == Service::Close && self.polling.state[&v].closed.is_none() {
            self.close_session(v, 3000, "Go away!");
        }
    }

    /// Creates session `req.session` (its `o` frame queued); returns its slab key, or the
    /// status and reason of a refusal. A session counts as a connection, as a WebSocket does:
    /// against `max_connections` and its address's limits (unauthenticated until CONNECTED).
    fn open_session(
        &mut self,
        req: &HttpRequest,
        ip: Option<std::net::IpAddr>,
    ) -> Result<u32, (u16, &'static str)> {
        let ctx = self.ctx.clone();
        let mode = match req.service {
            Service::Stomp => Mode::Stomp(Box::new(crate::stomp::session::Session::new(
                ctx.project(req.project.as_deref().unwrap_or("default")),
                req.token.as_deref(),
                ctx.cfg.stomp.legacy_destinations,
            ))),
            Service::Echo | Service::Close => Mode::Echo,
        };
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let epoch = self.next_epoch;
        let wall = self.st().last_turn_ms.load(Relaxed) / 1000;
        let mut c = Conn::new(epoch, wall as u32);
        c.session = Session::over_http(mode);
        c.queue.push_back(Bytes::from_static(sockjs::OPEN));
        let stomp = c.session.stomp().is_some();
        let open = self.stats.open.fetch_add(1, Relaxed) + 1;
        if open > ctx.cfg.server.max_connections as u64 || self.conns.len() >= self.capacity {
            self.stats.open.fetch_sub(1, Relaxed);
            return Err((503, "server is at its connection limit"));
        }
        let v = self.conns.insert(c) as u32;
        // Only a STOMP session has a CONNECT to wait for; an echo session is served at once.
        if let Err(why) = self.admit_peer(v, ip, stomp) {
            self.conns.remove(v as usize);
            self.stats.open.fetch_sub(1, Relaxed);
            return Err((429, why));
        }
        self.polling.by_id.insert(req.session.as_str().into(), v);
        self.polling.state.insert(
            v,
            State {
                id: req.session.as_str().into(),
                receiver: None,
                detached_at: self.wheel.now(),
                closed: None,
            },
        );
        self.st().sockjs_sessions.fetch_add(1, Relaxed);
        let limits = &ctx.cfg.limits;
        if stomp && limits.connect_timeout_ms > 0 {
            self.wheel
                .schedule(v, epoch, Kind::Connect, ticks(limits.connect_timeout_ms));
        }
        if ctx.cfg.sockjs.heartbeat_ms > 0 {
            let t = ticks(ctx.cfg.sockjs.heartbeat_ms);
            self.wheel.schedule(v, epoch, Kind::SockjsBeat, t);
        }
        Ok(v)
    }

    /// `xhr_send`'s messages for session `v`.
    fn sockjs_received(&mut self, v: u32, msgs: &[String]) {
        let mut out = std::mem::take(&mut self.out);
        let now = self.wheel.now();
        let ctx = self.ctx.clone();
        self.conns[v as usize]
            .session
            .on_sockjs_messages(msgs, now, &ctx, &mut out);
        self.apply(v, &mut out);
        self.out = out;
    }

    /// A frame for session `v` (from `send`): queued, then written if a request is receiving.
    /// The queue is bounded for every frame, not only publishes: with nobody receiving, even
    /// an echo must not grow it without end.
    pub(super) fn sockjs_push(&mut self, v: u32, frame: Bytes) -> bool {
        let limit = self.ctx.cfg.limits.send_queue;
        if frame.starts_with(b"c[")
            && let Some(s) = self.polling.state.get_mut(&v)
        {
            s.closed = Some(frame.clone());
        }
        let queue = &mut self.conns[v as usize].queue;
        if queue.len() >= limit {
            // Nobody has polled for a while: the oldest frames go, as for a slow socket.
            queue.pop_front();
            self.stats.shards[self.id].dropped.fetch_add(1, Relaxed);
        }
        queue.push_back(frame);
        self.flush_session(v);
        true
    }

    /// Writes what session `v` has queued to its receiving request, if it has one.
    fn flush_session(&mut self, v: u32) {
        let Some(r) = self.polling.state.get(&v).and_then(|s| s.receiver.clone()) else {
            return;
        };
        let c = &mut self.conns[v as usize];
        if c.queue.is_empty() {
            return;
        }
        if !r.transport.streams() {
            let (frame, n) = http::merge(c.queue.make_contiguous());
            c.queue.drain(..n);
            let (origin, cookie) = (r.origin.as_deref(), r.set_cookie.as_deref());
            let answer = http::poll(&frame, r.callback.as_deref(), origin, cookie, r.keep_alive);
            self.reply(r.peer, answer, true, r.keep_alive);
            self.detach(v);
            return;
        }
        let mut out = Vec::new();
        let mut streamed = r.streamed;
        for f in c.queue.drain(..) {
            streamed += r.transport.frame_into(&f, r.http10, &mut out);
        }
        let closed = self.polling.state[&v].closed.is_some();
        let end = streamed >= r.limit || closed;
        if end && !r.http10 {
            out.extend_from_slice(END);
        }
        self.reply(r.peer, out.into(), end, r.keep_alive);
        if end {
            self.detach(v);
        } else if let Some(s) = self.polling.state.get_mut(&v)
            && let Some(rr) = s.receiver.as_mut()
        {
            rr.streamed = streamed;
        }
    }

    /// The tick: contested requests held since the last one are decided now.
    pub(super) fn sockjs_contested(&mut self) {
        if self.polling.contested.is_empty() {
            return;
        }
        let now = self.wheel.now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.polling.contested)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.polling.contested = keep;
        for (_, from, req, ip) in due {
            self.sockjs_request(from, *req, ip, true);
        }
    }

    /// Session `v` has no receiving request any more: it expires unless one comes soon.
    fn detach(&mut self, v: u32) {
        let now = self.wheel.now();
        let Some(s) = self.polling.state.get_mut(&v) else {
            return;
        };
        s.receiver = None;
        s.detached_at = now;
        let epoch = self.conns[v as usize].epoch;
        let t = ticks(self.ctx.cfg.sockjs.disconnect_delay_ms);
        self.wheel.schedule(v, epoch, Kind::SockjsExpire, t);
    }

    /// Session `v`'s expiry came due: gone, unless a receiver came back in the meantime.
    pub(super) fn sockjs_expire(&mut self, v: u32) {
        let delay = ticks(self.ctx.cfg.sockjs.disconnect_delay_ms);
        let Some(s) = self.polling.state.get(&v) else {
            return;
        };
        if s.receiver.is_none() && self.wheel.now() >= s.detached_at + delay {
            self.st().sockjs_expired.fetch_add(1, Relaxed);
            self.drop_session(v);
        }
    }

    /// A SockJS `h` frame is due for session `v`: only a receiving request needs one.
    pub(super) fn sockjs_beat(&mut self, v: u32) {
        if self
            .polling
            .state
            .get(&v)
            .is_some_and(|s| s.receiver.is_some())
        {
            self.sockjs_push(v, Bytes::from_static(sockjs::HEARTBEAT));
        }
    }

    /// Session `v` closed (its `c[...]` frame is queued or written): it leaves its
    /// destinations now and expires once nobody asks for the close frame any more.
    pub(super) fn sockjs_closed(&mut self, v: u32) {
        for id in std::mem::take(&mut self.conns[v as usize].subs) {
            self.subs.unsubscribe(id, v);
        }
        let no_receiver = self
            .polling
            .state
            .get(&v)
            .is_some_and(|s| s.receiver.is_none());
        // Stopping at once: nobody will come for the close frame. Draining: it waits for the
        // session's next request, as any close frame does.
        if self.shutdown_at.is_some() && !self.draining() {
            self.drop_session(v);
        } else if no_receiver {
            self.detach(v);
        }
    }

    fn drop_session(&mut self, v: u32) {
        let Some(s) = self.polling.state.remove(&v) else {
            return;
        };
        self.polling.by_id.remove(&s.id);
        let mut c = self.conns.remove(v as usize);
        for id in std::mem::take(&mut c.subs) {
            self.subs.unsubscribe(id, v);
        }
        self.st().sockjs_sessions.fetch_sub(1, Relaxed);
        self.stats.open.fetch_sub(1, Relaxed);
        self.release_peer(v, c.take_pending());
    }

    /// Sends part of an answer to the connection that asked.
    fn reply(&mut self, to: Peer, bytes: Bytes, end: bool, keep_alive: bool) {
        let m = Message::Reply {
            key: to.key,
            epoch: to.epoch,
            bytes,
            end,
            keep_alive,
        };
        self.tell_shard(to.shard, m);
    }

    /// The connection's side: bytes of an answer from a session's owner.
    fn sockjs_reply(&mut self, key: u32, epoch: u32, bytes: Bytes, end: bool, keep_alive: bool) {
        let Some(c) = self.conns.get(key as usize) else {
            return;
        };
        if c.epoch != epoch || !c.session.in_exchange() {
            return;
        }
        self.send(key, bytes, true);
        if end {
            self.polling.receiving.remove(&key);
            let mut out = std::mem::take(&mut self.out);
            let now = self.wheel.now();
            let ctx = self.ctx.clone();
            if let Some(c) = self.conns.get_mut(key as usize) {
                c.session.exchange_done(keep_alive, now, &ctx, &mut out);
            }
            self.apply(key, &mut out);
            self.out = out;
        }
    }

    /// Connection `key` is going away: if it was receiving for a session, tell the owner.
    pub(super) fn receiver_gone(&mut self, key: u32, epoch: u32) {
        if let Some((owner, session)) = self.polling.receiving.remove(&key) {
            let from = Peer {
                shard: self.id,
                key,
                epoch,
            };
            self.tell_shard(owner, Message::Gone { session, from });
        }
    }
}
