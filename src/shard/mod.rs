//! The shard core, sans-IO: one shard's connections and every decision about them. The slab of
//! connections, the subscription index, the timer wheel, send queues and the slow-consumer
//! policy, limits at accept, liveness (pings, heart-beats, the stall grace), fan-out, session
//! listing and shutdown all live here; sockets, the ring and the clock do not.
//!
//! The driver (`reactor`) feeds it events with a time (`accepted`, `received`, `sent`,
//! `tick`, `command`, ...) and carries out the operations it queues (`Op`: arm a recv, send
//! bytes, shut a socket down, free it, ...). Everything a connection can make a shard do is
//! therefore testable on virtual time, without a socket (see `tests.rs`).

pub mod conn;
pub mod counts;
pub mod inbox;
pub mod index;
pub mod timer;

pub mod sockjs;

mod accept;
mod access;
pub mod admission;
mod commands;
mod drain;
pub mod handover;
mod liveness;
mod recovery;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use slab::Slab;

use crate::config::SlowPolicy;
use crate::dest::Dest;
use crate::endpoint::{Action, Context, Event, Outputs, Session, Wrapping};
use crate::relay::Relay;
use crate::stats::{ShardStats, Stats};
use crate::ws::CloseError;
use conn::Conn;
use counts::{PerIp, PerUser};
use index::Subscriptions;
use ringcast_proto::publish::Publish;
use timer::{Kind, Wheel};

/// The wheel's resolution: deadlines (handshake, close, heart-beats) are this precise.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks a shard may fall behind its clock before it counts as stalled.
const STALL_TICKS: u64 = 10;

/// What the driver must do for the core. Keys are the core's connection keys; the driver files
/// each socket under the key `accepted` returned.
#[derive(Debug)]
pub enum Op {
    /// Arm a receive on this connection.
    Recv(u32),
    /// Write `buf[offset..]`; complete with `Core::sent`. At most one per connection at a time.
    Send { key: u32, buf: Bytes, offset: usize },
    /// Shut the socket down for writing (our side is done; the peer's FIN is still awaited).
    ShutdownWrite(u32),
    /// Shut the socket down both ways, which also ends a pending recv.
    Shutdown(u32),
    /// No operation references the connection any more: close its socket.
    Free(u32),
    /// Arm accepting (again).
    Accept,
    /// Stop listening for good (shutdown).
    CloseListener,
    /// A client's publish, for the hub.
    Publish(Publish),
    /// For another shard of this node (SockJS sessions live on the shard their id names).
    ToShard(usize, sockjs::Message),
    /// For the project's backend: may this session act on this topic? The answer comes back
    /// as `Command::Answer`.
    Ask(Question),
}

/// What a shard asks a project's backend, and where the answer goes.
#[derive(Debug, Clone)]
pub struct Question {
    pub shard: usize,
    pub key: u32,
    pub epoch: u32,
    pub project: String,
    pub user: String,
    pub topic: String,
    pub act: crate::access::Act,
}

/// A shard's clock reading: monotonic milliseconds since the shard started, and the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub ms: u64,
    pub unix_ms: u64,
}

/// Everything a core starts from.
pub struct Config {
    pub id: usize,
    /// Shards of this node (a SockJS session's owner is picked among them).
    pub shards: usize,
    pub ctx: Arc<Context>,
    pub stats: Arc<Stats>,
    /// Open connections per source address (`limits.max_connections_per_ip`).
    pub per_ip: Arc<PerIp>,
    /// Unauthenticated connections per source address (`limits.max_pending_per_ip`).
    pub pending_per_ip: Arc<PerIp>,
    /// Identified sessions per user (`limits.max_sessions_per_user`).
    pub per_user: Arc<PerUser>,
    /// The node's handshake rate (`limits.max_handshakes_per_s`), shared by its shards.
    pub rate: Arc<admission::Rate>,
    /// Connections this shard's fd table holds; beyond it (or beyond the server-wide
    /// `max_connections`) new connections get 503.
    pub capacity: usize,
    /// In a cluster: told of a destination's first and last local subscriber.
    pub watch: Option<Arc<dyn Relay>>,
    /// The node's table of which shards have an audience for what (told of the same edges).
    pub audience: Option<Arc<crate::audience::Audience>>,
    /// The node's history store (recovering subscriptions read it).
    pub history: Option<Arc<crate::history::History>>,
}

pub struct Core {
    id: usize,
    shards: usize,
    /// SockJS sessions over HTTP that this shard owns, and its connections receiving for one.
    polling: sockjs::Polling,
    /// Sessions whose token expires, soonest first: (Unix seconds, key, epoch). Kept off the
    /// timer wheel, so a token valid for days costs one heap entry and no wheel turns.
    expiries: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u32, u32)>>,
    /// Refusals are logged at most once a second per shard; the rest are counted here and
    /// reported with the next line.
    refusals_quiet_until: u64,
    refusals_suppressed: u64,
    ctx: Arc<Context>,
    stats: Arc<Stats>,
    per_ip: Arc<PerIp>,
    pending_per_ip: Arc<PerIp>,
    per_user: Arc<PerUser>,
    rate: Arc<admission::Rate>,
    /// Handshakes accepted and not finished (the automatic shedding rule).
    backlog: admission::Backlog,
    /// Source address of each connection, kept only while a per-address limit needs it.
    peers: std::collections::HashMap<u32, IpAddr>,
    conns: Slab<Conn>,
    subs: Subscriptions,
    wheel: Wheel,
    capacity: usize,
    next_epoch: u32,
    listening: bool,
    /// Accepting stopped after an error such as a full fd table; retried on the next tick.
    accept_paused: bool,
    accept_error_logged: bool,
    /// Set on shutdown: the wheel tick after which the shard exits regardless.
    shutdown_at: Option<u64>,
    /// Connections whose recv ended for lack of buffers, re-armed after the batch.
    rearm: Vec<u32>,
    ops: Vec<Op>,
    /// Reused scratch: subscriber keys of one publish, outputs of one read, frames of one send.
    keys: Vec<u32>,
    out: Outputs,
    frames: Vec<Bytes>,
    history: Option<Arc<crate::history::History>>,
    /// Subscriptions between their replay and their first live message.
    recovering: recovery::Recovering,
    /// A paced shutdown under way (`server.drain_ms`).
    drain: Option<drain::Drain>,
    /// In a cluster: where recoveries the history cache cannot answer are asked.
    relay: Option<Arc<dyn Relay>>,
    /// Numbers this shard's questions to Redis about recoveries.
    next_serial: u64,
    /// Handing its connections to another process: no receive, send or accept is started
    /// any more, and what would be sent stays queued (it moves with the connection).
    frozen: bool,
    /// Bytes read while frozen, kept for the successor to process (a SEND read here now
    /// could not be published: the hub takes none during a hand-over).
    unread: std::collections::HashMap<u32, Vec<u8>>,
}

fn ticks(ms: u64) -> u64 {
    (ms / TICK.as_millis() as u64).max(1)
}

impl Core {
    /// A core with no connections; the driver then arms accepting (`Op::Accept` is queued).
    pub fn new(cfg: Config) -> Core {
        let core = Core {
            id: cfg.id,
            shards: cfg.shards.max(1),
            polling: sockjs::Polling::default(),
            expiries: std::collections::BinaryHeap::new(),
            refusals_quiet_until: 0,
            refusals_suppressed: 0,
            ctx: cfg.ctx,
            stats: cfg.stats,
            per_ip: cfg.per_ip,
            pending_per_ip: cfg.pending_per_ip,
            per_user: cfg.per_user,
            rate: cfg.rate,
            backlog: admission::Backlog::default(),
            peers: std::collections::HashMap::new(),
            conns: Slab::new(),
            relay: cfg.watch.clone(),
            next_serial: 0,
            subs: Subscriptions::watched(cfg.watch, cfg.audience.map(|a| (cfg.id, a))),
            wheel: Wheel::new(1024),
            capacity: cfg.capacity,
            next_epoch: 0,
            listening: true,
            accept_paused: false,
            accept_error_logged: false,
            shutdown_at: None,
            rearm: Vec::new(),
            ops: vec![Op::Accept],
            keys: Vec::new(),
            out: Outputs::default(),
            frames: Vec::new(),
            history: cfg.history,
            recovering: recovery::Recovering::default(),
            drain: None,
            frozen: false,
            unread: Default::default(),
        };
        core.st()
            .last_turn_ms
            .store(crate::stats::now_ms(), Relaxed);
        core
    }

    /// Moves the queued operations into `into` (which must be empty) by swapping buffers, so
    /// the driver can carry them out while feeding the core new events, and neither side
    /// allocates per batch.
    pub fn take_ops(&mut self, into: &mut Vec<Op>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.ops, into);
    }

    /// Whether `accepted` wants the peer's address (a per-address limit is on).
    pub fn wants_peer(&self) -> bool {
        // The console lists each session's address.
        self.per_ip.enabled() || self.pending_per_ip.enabled() || self.ctx.cfg.api.console
    }

    /// Shutdown is complete: every connection is gone, or the grace period is over.
    pub fn finished(&self) -> bool {
        match self.shutdown_at {
            Some(at) => self.conns.is_empty() || self.wheel.now() >= at,
            None => false,
        }
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn st(&self) -> &ShardStats {
        &self.stats.shards[self.id]
    }

    /// Arms a recv for `key` unless it is gone, shut, or already armed.
    fn arm_recv(&mut self, key: u32) {
        if let Some(c) = self.conns.get_mut(key as usize)
            && !c.is_shut()
            && !c.recv_armed()
            && !self.frozen
        {
            c.set_recv_armed(true);
            self.ops.push(Op::Recv(key));
        }
    }

    /// A receive on `key` completed: `Ok(n)` bytes in `data[..n]` (0: the peer closed).
    /// `more`: the recv is still armed. `data` may be modified (frames are unmasked in place).
    pub fn received(&mut self, key: u32, res: io::Result<usize>, more: bool, data: &mut [u8]) {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return;
        };
        if !more {
            c.set_recv_armed(false);
        }
        match res {
            Ok(0) => self.shut(key),
            Ok(n) if self.frozen => {
                c.set_heard();
                self.unread
                    .entry(key)
                    .or_default()
                    .extend_from_slice(&data[..n]);
            }
            Ok(n) => {
                c.set_heard();
                if !c.is_shut() {
                    let mut out = std::mem::take(&mut self.out);
                    let now = self.wheel.now();
                    c.session.on_bytes(&mut data[..n], now, &self.ctx, &mut out);
                    self.apply(key, &mut out);
                    self.out = out;
                }
                self.arm_recv(key);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.rearm.push(key),
            // Frozen for a hand-over: the socket is fine, only our read of it ended.
            Err(e) if self.frozen && e.raw_os_error() == Some(libc::ECANCELED) => {}
            Err(_) => self.shut(key),
        }
        self.reap(key);
    }

    /// Bytes arrived on `key` that carried nothing for its session yet (a TLS handshake, or
    /// a record not complete): the peer was heard and the read goes on.
    pub fn received_transport(&mut self, key: u32, more: bool) {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return;
        };
        if !more {
            c.set_recv_armed(false);
        }
        c.set_heard();
        self.arm_recv(key);
        self.reap(key);
    }

    /// The driver writes bytes of its own on `key` (a TLS handshake flight): the connection
    /// counts as sending until `sent` (with an empty buffer) says they are out, so it is not
    /// freed while the ring still writes to its socket. False (nothing held) when a send of
    /// the core's is already out, which holds it anyway.
    pub fn hold_send(&mut self, key: u32) -> bool {
        match self.conns.get_mut(key as usize) {
            Some(c) if !c.sending() => {
                c.set_sending(true);
                true
            }
            _ => false,
        }
    }

    /// The connection's transport (TLS) failed outside a read: shut it.
    pub fn transport_failed(&mut self, key: u32) {
        self.shut(key);
        self.reap(key);
    }

    /// A send on `key` completed: `res` bytes of `buf[offset..]` went out.
    pub fn sent(&mut self, key: u32, res: io::Result<usize>, buf: Bytes, offset: usize) {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return;
        };
        c.set_sending(false);
        if self.frozen {
            // What did not go out goes first in the queue that moves with the connection.
            let done = match res {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => 0,
                Err(_) => {
                    self.shut(key);
                    self.reap(key);
                    return;
                }
            };
            if offset + done < buf.len() {
                c.queue.push_front(buf.slice(offset + done..));
            }
            return;
        }
        match res {
            Ok(n) => {
                self.stats.shards[self.id]
                    .bytes_out
                    .fetch_add(n as u64, Relaxed);
                if c.is_shut() {
                } else if offset + n < buf.len() {
                    // A short write: the rest goes before anything queued behind it.
                    c.set_sending(true);
                    self.ops.push(Op::Send {
                        key,
                        buf,
                        offset: offset + n,
                    });
                } else if let Some(next) = c.queue.pop_front() {
                    c.set_sending(true);
                    self.ops.push(Op::Send {
                        key,
                        buf: next,
                        offset: 0,
                    });
                } else if c.close_after_flush() {
                    self.linger(key);
                    return;
                }
            }
            Err(_) => self.shut(key),
        }
        self.reap(key);
    }

    /// The end of a batch of events: re-arms receives that ran out of buffers, now that the
    /// batch has given them back.
    pub fn batch_done(&mut self) {
        for key in std::mem::take(&mut self.rearm) {
            self.arm_recv(key);
        }
    }

    /// Marks `key` shut both ways and asks the driver to shut its socket.
    fn shut(&mut self, key: u32) {
        if let Some(c) = self.conns.get_mut(key as usize)
            && c.shut()
        {
            self.ops.push(Op::Shutdown(key));
        }
    }

    /// Our side of `key` is done: shut down writing, read until the peer's FIN, and drop the
    /// socket after `close_timeout_ms` at the latest.
    fn linger(&mut self, key: u32) {
        if let Some(c) = self.conns.get_mut(key as usize)
            && c.linger()
        {
            let epoch = c.epoch;
            self.ops.push(Op::ShutdownWrite(key));
            let t = ticks(self.ctx.cfg.limits.close_timeout_ms);
            self.wheel.schedule(key, epoch, Kind::Closing, t);
        }
        self.reap(key);
    }

    /// Frees a connection once it is shut and no operation references it.
    fn reap(&mut self, key: u32) {
        if !self.conns.get(key as usize).is_some_and(Conn::removable) {
            return;
        }
        let epoch = self.conns[key as usize].epoch;
        self.receiver_gone(key, epoch);
        self.recovering.forget(key);
        let mut c = self.conns.remove(key as usize);
        let pending = c.take_pending();
        for id in c.subs {
            self.subs.unsubscribe(id, key);
        }
        let st = &self.stats.shards[self.id];
        st.connections.fetch_sub(1, Relaxed);
        st.closed.fetch_add(1, Relaxed);
        self.stats.open.fetch_sub(1, Relaxed);
        self.release_peer(key, pending);
        if c.user_slot
            && let Some((p, Some(u))) = c.session.identity()
        {
            self.per_user.release(&(p.into(), u.into()));
        }
        self.ops.push(Op::Free(key));
    }

    /// Carries out what the endpoint asked for: its events first (counters, timers, the
    /// pending-per-address count), then its actions in order.
    fn apply(&mut self, key: u32, out: &mut Outputs) {
        if self.per_user.enabled()
            && out
                .events
                .iter()
                .any(|e| matches!(e, Event::Connected | Event::Upgraded))
            && !self.admit_user(key)
        {
            // Its CONNECTED (or 101) must not go out: the refusal goes instead.
            out.clear();
            self.conns[key as usize].session.refuse_user(out);
        }
        for e in out.events.drain(..) {
            self.on_endpoint_event(key, e);
        }
        for a in out.actions.drain(..) {
            match a {
                Action::Send(b) => {
                    self.send(key, b, false);
                }
                Action::Subscribe(dest) => self.join(key, &dest),
                Action::Recover(r) => self.recover(key, r),
                Action::Unsubscribe(dest) => {
                    if let Some(id) = self.subs.id_of(&dest) {
                        self.subs.unsubscribe(id, key);
                        self.conns[key as usize].subs.retain(|&d| d != id);
                    }
                }
                Action::Publish {
                    dest,
                    body,
                    headers,
                } => self
                    .ops
                    .push(Op::Publish(Publish::new(dest, body, headers))),
                Action::Exchange(req) => self.exchange(key, req),
                Action::Ask(act, topic) => self.ask(key, act, topic),
                Action::Refused(why) => self.log_refusal(key, &why),
                Action::Regranted(grants) => self.regranted(key, grants.as_deref()),
                Action::Close
                    if self.conns[key as usize].session.wrapping() == Wrapping::SockjsHttp =>
                {
                    self.sockjs_closed(key)
                }
                Action::AwaitClose => {
                    let epoch = self.conns[key as usize].epoch;
                    let t = ticks(self.ctx.cfg.limits.close_timeout_ms);
                    self.wheel.schedule(key, epoch, Kind::Closing, t);
                }
                Action::Close => {
                    let c = &mut self.conns[key as usize];
                    if c.sending() || !c.queue.is_empty() {
                        c.set_close_after_flush();
                    } else {
                        self.linger(key);
                    }
                }
            }
        }
    }

    fn on_endpoint_event(&mut self, key: u32, e: Event) {
        let st = &self.stats.shards[self.id];
        match e {
            Event::Upgraded => {
                st.upgraded.fetch_add(1, Relaxed);
                self.upgraded(key);
                self.watch_expiry(key);
            }
            Event::Refreshed => self.watch_expiry(key),
            Event::Connected => {
                self.authenticated(key);
                self.watch_expiry(key);
                let c = &self.conns[key as usize];
                let tick_ms = TICK.as_millis() as u64;
                if let Some(t) = c.session.stomp().and_then(|s| s.next_check(tick_ms)) {
                    self.wheel.schedule(key, c.epoch, Kind::Heartbeat, t);
                }
            }
            Event::Rejected => {
                st.rejected.fetch_add(1, Relaxed);
            }
            Event::Received => {
                st.messages_in.fetch_add(1, Relaxed);
            }
            Event::ProtocolError => {
                st.protocol_errors.fetch_add(1, Relaxed);
            }
            Event::StompError => {
                st.stomp_errors.fetch_add(1, Relaxed);
            }
            Event::Idle => {
                // A kept-alive HTTP connection between requests: a new epoch makes whatever
                // was addressed to its last request stale, and the next request gets the
                // same deadline as the first.
                self.next_epoch = self.next_epoch.wrapping_add(1);
                let epoch = self.next_epoch;
                self.conns[key as usize].epoch = epoch;
                let t = ticks(self.ctx.cfg.limits.handshake_timeout_ms);
                self.wheel.schedule(key, epoch, Kind::Handshake, t);
            }
        }
    }

    /// The upgrade went through: STOMP sessions now owe a CONNECT (authentication), raw and
    /// echo sessions are authenticated and start being pinged.
    fn upgraded(&mut self, key: u32) {
        let c = &self.conns[key as usize];
        let epoch = c.epoch;
        let limits = &self.ctx.cfg.limits;
        if c.session.is_sockjs() && self.ctx.cfg.sockjs.heartbeat_ms > 0 {
            let t = ticks(self.ctx.cfg.sockjs.heartbeat_ms);
            self.wheel.schedule(key, epoch, Kind::SockjsBeat, t);
        }
        if c.session.stomp().is_some() {
            if limits.connect_timeout_ms > 0 {
                let t = ticks(limits.connect_timeout_ms);
                self.wheel.schedule(key, epoch, Kind::Connect, t);
            }
            return;
        }
        if limits.ping_interval_ms > 0 {
            let t = ticks(limits.ping_interval_ms);
            self.wheel.schedule(key, epoch, Kind::Ping, t);
        }
        self.authenticated(key);
    }

    /// Adds connection `key` to `dest` (once, however many subscriptions point there).
    fn join(&mut self, key: u32, dest: &Dest) {
        let id = self.subs.subscribe(dest, key);
        let subs = &mut self.conns[key as usize].subs;
        if !subs.contains(&id) {
            subs.push(id);
        }
    }

    /// Queues `b` for connection `key`. Publishes (`capped`) obey the send-queue limit; the
    /// connection's own protocol traffic (handshake answers, pongs, closes) does not.
    fn send(&mut self, key: u32, b: Bytes, capped: bool) -> bool {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return false;
        };
        if c.is_shut() {
            return false;
        }
        if let Some(s) = c.session.stomp_mut() {
            s.sent(self.wheel.now());
        }
        if c.session.wrapping() == Wrapping::SockjsHttp {
            return self.sockjs_push(key, b);
        }
        if !c.sending() && !self.frozen {
            c.set_sending(true);
            self.ops.push(Op::Send {
                key,
                buf: b,
                offset: 0,
            });
            return true;
        }
        if capped && c.queue.len() >= self.ctx.cfg.limits.send_queue {
            let st = &self.stats.shards[self.id];
            match self.ctx.cfg.limits.slow_consumer {
                SlowPolicy::DropOldest => {
                    c.queue.pop_front();
                    c.queue.push_back(b);
                    st.dropped.fetch_add(1, Relaxed);
                }
                SlowPolicy::Close => {
                    st.slow_closed.fetch_add(1, Relaxed);
                    c.queue.clear();
                    self.close_session(
                        key,
                        CloseError::POLICY,
                        "send queue full: the client is not reading",
                    );
                    return false;
                }
            }
            return true;
        }
        c.queue.push_back(b);
        true
    }

    fn close_session(&mut self, key: u32, code: u16, reason: &str) {
        self.on_session(key, |s, out| s.close(code, reason, out));
    }

    /// Runs `f` on connection `key`'s endpoint (if it is still here) and carries out what it
    /// asked for.
    fn on_session(&mut self, key: u32, f: impl FnOnce(&mut Session, &mut Outputs)) {
        let mut out = std::mem::take(&mut self.out);
        if let Some(c) = self.conns.get_mut(key as usize) {
            f(&mut c.session, &mut out);
        }
        self.apply(key, &mut out);
        self.out = out;
    }
}

#[cfg(test)]
mod tests;
