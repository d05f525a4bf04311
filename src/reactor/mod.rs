//! A shard: one thread, its own fd table, its own io_uring, its own `SO_REUSEPORT` listener and
//! its own slab of connections. It moves bytes between sockets and the sans-IO endpoint, fans
//! publishes out to its local subscribers, and drives deadlines from one periodic timeout.

pub mod conn;
pub mod per_ip;
pub mod ring;
pub mod timer;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Sender;
use slab::Slab;
use socket2::{Domain, SockRef, Socket, Type};

use crate::config::SlowPolicy;
use crate::endpoint::{Context, Mode, Output};
use crate::hub::{Command, Dest, Hub, Inbox, Publish, Subscriptions};
use crate::stats::{ShardStats, Stats, now_ms};
use crate::stomp::frame::{Command as StompCommand, Frame as StompFrame, SERVER_HEADERS};
use crate::ws::CloseError;
use conn::{Conn, Liveness};
use ring::{BufferConfig, Event, Ring};
use timer::{Kind, Wheel};

/// The wheel's resolution: deadlines (handshake, close, heart-beats) are this precise.
const TICK: Duration = Duration::from_millis(100);
/// Ticks a shard may fall behind the wall clock before it counts as stalled.
const STALL_TICKS: u64 = 10;

/// Everything a shard thread starts from.
pub struct ShardSpec {
    pub id: usize,
    pub per_ip: Arc<per_ip::PerIp>,
    /// Unauthenticated connections per source address (`limits.max_pending_per_ip`).
    pub pending_per_ip: Arc<per_ip::PerIp>,
    /// Read buffers in this shard's ring (a power of two).
    pub read_buffers: u16,
    pub ctx: Arc<Context>,
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
    pub inbox: Inbox,
    pub addr: SocketAddr,
    /// Connections this shard's fd table holds; beyond it (or beyond the server-wide
    /// `max_connections`) new connections get 503.
    pub capacity: usize,
    pub core: Option<core_affinity::CoreId>,
    /// Every shard (and the main thread) has its own fd table before anyone opens a socket.
    pub tables_ready: Arc<Barrier>,
    pub ready: Sender<Result<String, String>>,
}

/// Starts a shard thread; it reports on `spec.ready` once listening (or why it could not).
pub fn spawn(spec: ShardSpec) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{}", spec.id))
        .spawn(move || {
            // A private fd table: each table gets the full `nofile`, which is how one process
            // holds more sockets than the per-table cap. Done before any socket exists so no
            // connection's fd is ever copied into another shard's table.
            let unshared = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES);
            spec.tables_ready.wait();
            if let Err(e) = unshared {
                let _ = spec.ready.send(Err(format!("unshare(CLONE_FILES): {e}")));
                return;
            }
            if let Some(core) = spec.core {
                core_affinity::set_for_current(core);
            }
            let id = spec.id;
            let ready = spec.ready.clone();
            if let Err(e) = run(spec) {
                tracing::error!(shard = id, "shard stopped: {e}");
                let _ = ready.send(Err(format!("shard {id}: {e}")));
            }
        })
}

/// Reserves `addr`'s port (picking one for port 0) with a bound, non-listening SO_REUSEPORT
/// socket: it takes no connections, but keeps the port for the shards' listeners until they
/// are up. Returns the reservation and the address with its real port.
pub fn reserve_port(addr: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    let bound = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("reserved socket has no address"))?;
    Ok((s, bound))
}

/// One shard's listening socket on the shared port.
pub fn listener(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(65535)?;
    Ok(s)
}

fn run(spec: ShardSpec) -> io::Result<()> {
    let ctx = spec.ctx.clone();
    let cfg = &ctx.cfg;
    let listener = listener(spec.addr)
        .map_err(|e| io::Error::new(e.kind(), format!("listen on {}: {e}", spec.addr)))?;
    let mut ring = Ring::new(
        cfg.server.ring_entries,
        BufferConfig {
            count: spec.read_buffers,
            size: cfg.server.read_buffer_size,
        },
        cfg.server.io_compat,
    )?;
    let path = if ring.features().multishot {
        "multishot accept/recv, buffer ring"
    } else {
        "single-shot accept/recv, provided buffers (compat)"
    };
    let mut shard = Shard {
        id: spec.id,
        stats: spec.stats.clone(),
        ctx: ctx.clone(),
        hub: spec.hub.clone(),
        per_ip: spec.per_ip,
        pending_per_ip: spec.pending_per_ip,
        peers: std::collections::HashMap::new(),
        conns: Slab::new(),
        subs: Subscriptions::watched(spec.hub.cluster().cloned()),
        wheel: Wheel::new(1024),
        started: std::time::Instant::now(),
        tick_due: false,
        inbox: spec.inbox,
        listener: Some(listener),
        capacity: spec.capacity,
        next_epoch: 0,
        accept_paused: false,
        accept_error_logged: false,
        shutdown_at: None,
        rearm: Vec::new(),
        keys: Vec::new(),
        out: Vec::new(),
        frames: Vec::new(),
    };
    shard.arm_accept(&mut ring);
    ring.wait_wake(shard.inbox.wake.as_raw_fd());
    ring.tick_after(TICK);
    shard.st().last_turn_ms.store(now_ms(), Relaxed);
    let _ = spec.ready.send(Ok(path.to_string()));
    let mut scratch = Vec::with_capacity(ctx.cfg.server.read_buffer_size as usize);
    loop {
        ring.run_once(&mut scratch, |ring, ev, data| {
            shard.on_event(ring, ev, data)
        })?;
        if std::mem::take(&mut shard.tick_due) {
            shard.on_tick(&mut ring);
        }
        for key in std::mem::take(&mut shard.rearm) {
            shard.arm_recv(&mut ring, key);
        }
        if shard.finished() {
            tracing::debug!(shard = shard.id, "shard done");
            return Ok(());
        }
    }
}

struct Shard {
    id: usize,
    ctx: Arc<Context>,
    hub: Arc<Hub>,
    per_ip: Arc<per_ip::PerIp>,
    pending_per_ip: Arc<per_ip::PerIp>,
    /// Source address of each connection, kept only while a per-address limit needs it.
    peers: std::collections::HashMap<u32, std::net::IpAddr>,
    stats: Arc<Stats>,
    conns: Slab<Conn>,
    subs: Subscriptions,
    wheel: Wheel,
    /// What the wheel's ticks count from.
    started: std::time::Instant,
    tick_due: bool,
    inbox: Inbox,
    listener: Option<Socket>,
    capacity: usize,
    next_epoch: u32,
    /// Accepting stopped after an error such as a full fd table; retried on the next tick.
    accept_paused: bool,
    accept_error_logged: bool,
    /// Set on shutdown: the wheel tick after which the shard exits regardless.
    shutdown_at: Option<u64>,
    /// Connections whose recv ended for lack of buffers, re-armed after the batch.
    rearm: Vec<u32>,
    /// Reused scratch: subscriber keys of one publish, outputs of one read.
    keys: Vec<u32>,
    out: Vec<Output>,
    frames: Vec<Bytes>,
}

fn ticks(ms: u64) -> u64 {
    (ms / TICK.as_millis() as u64).max(1)
}

impl Shard {
    fn st(&self) -> &ShardStats {
        &self.stats.shards[self.id]
    }

    fn finished(&self) -> bool {
        match self.shutdown_at {
            Some(at) => self.conns.is_empty() || self.wheel.now() >= at,
            None => false,
        }
    }

    fn arm_accept(&mut self, ring: &mut Ring) {
        if let Some(l) = &self.listener {
            ring.accept(l.as_raw_fd());
        }
    }

    fn on_event(&mut self, ring: &mut Ring, ev: Event, data: &mut [u8]) {
        match ev {
            Event::Accepted { res, more } => {
                match res {
                    Ok(fd) => self.on_accept(ring, fd),
                    Err(e) => self.on_accept_error(e),
                }
                if !more && !self.accept_paused {
                    self.arm_accept(ring);
                }
            }
            Event::Received { key, res, more } => self.on_received(ring, key, res, more, data),
            Event::Sent {
                key,
                res,
                buf,
                offset,
            } => self.on_sent(ring, key, res, buf, offset),
            Event::Woken => {
                while let Ok(cmd) = self.inbox.rx.try_recv() {
                    self.on_command(ring, cmd);
                }
                ring.wait_wake(self.inbox.wake.as_raw_fd());
            }
            // Deadlines run after the whole batch (see `run`), so data that arrived with this
            // tick is seen before anyone is judged silent.
            Event::Tick => self.tick_due = true,
            Event::Connected { .. } | Event::Internal => {}
        }
    }

    fn on_accept(&mut self, ring: &mut Ring, fd: OwnedFd) {
        let st = &self.stats.shards[self.id];
        st.accepted.fetch_add(1, Relaxed);
        st.connections.fetch_add(1, Relaxed);
        // Pushes are small and latency-bound: never let Nagle hold one back.
        let _ = SockRef::from(&fd).set_tcp_nodelay(true);
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let epoch = self.next_epoch;
        let key = self
            .conns
            .insert(Conn::new(fd, epoch, (now_ms() / 1000) as u32)) as u32;
        self.arm_recv(ring, key);
        // Counted before any refusal: `reap` gives every accepted connection back.
        let open = self.stats.open.fetch_add(1, Relaxed) + 1;
        let full =
            open > self.ctx.cfg.server.max_connections as u64 || self.conns.len() > self.capacity;
        if self.shutdown_at.is_some() || full {
            let reason = if self.shutdown_at.is_some() {
                "server shutting down"
            } else {
                "server is at its connection limit"
            };
            self.close_session(ring, key, CloseError::GOING_AWAY, reason);
        } else if let Err(reason) = self.admit_peer(key) {
            self.refuse(ring, key, 429, reason);
        } else {
            let t = ticks(self.ctx.cfg.limits.handshake_timeout_ms);
            self.wheel.schedule(key, epoch, Kind::Handshake, t);
        }
    }

    /// Counts connection `key` against its source address's limits (those that are on): open
    /// connections, and connections not yet authenticated.
    fn admit_peer(&mut self, key: u32) -> Result<(), &'static str> {
        let (open, pending) = (self.per_ip.enabled(), self.pending_per_ip.enabled());
        if !open && !pending {
            return Ok(());
        }
        let c = &mut self.conns[key as usize];
        let peer = SockRef::from(&c.fd).peer_addr();
        let Some(ip) = peer.ok().and_then(|a| a.as_socket()).map(|a| a.ip()) else {
            return Ok(());
        };
        if open && !self.per_ip.admit(ip) {
            return Err("too many connections from this address");
        }
        if pending {
            if !self.pending_per_ip.admit(ip) {
                if open {
                    self.per_ip.release(ip);
                }
                return Err("too many connections from this address still authenticating");
            }
            c.set_pending();
        }
        self.peers.insert(key, ip);
        Ok(())
    }

    /// Connection `key` is authenticated (upgraded in raw mode, CONNECTED in STOMP): it no
    /// longer counts against its address's unauthenticated connections.
    fn authenticated(&mut self, key: u32) {
        if !self.conns[key as usize].take_pending() {
            return;
        }
        if let Some(&ip) = self.peers.get(&key) {
            self.pending_per_ip.release(ip);
            if !self.per_ip.enabled() {
                self.peers.remove(&key);
            }
        }
    }

    /// Arms a recv for `key` unless it is gone, shut, or already armed.
    fn arm_recv(&mut self, ring: &mut Ring, key: u32) {
        if let Some(c) = self.conns.get_mut(key as usize)
            && !c.is_shut()
            && !c.recv_armed()
        {
            c.set_recv_armed(true);
            ring.recv(c.raw_fd(), key);
        }
    }

    fn on_accept_error(&mut self, e: io::Error) {
        self.st().accept_errors.fetch_add(1, Relaxed);
        if matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        ) {
            // Out of descriptors or memory: retrying at once would spin. Pause until the next
            // tick; connections closing meanwhile make room.
            self.accept_paused = true;
            if !self.accept_error_logged {
                self.accept_error_logged = true;
                tracing::warn!(
                    shard = self.id,
                    "accept failed: {e}; pausing accepts (logged once)"
                );
            }
        }
    }

    fn on_received(
        &mut self,
        ring: &mut Ring,
        key: u32,
        res: io::Result<usize>,
        more: bool,
        data: &mut [u8],
    ) {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return;
        };
        if !more {
            c.set_recv_armed(false);
        }
        match res {
            Ok(0) => c.shut(),
            Ok(n) => {
                c.set_heard();
                if !c.is_shut() {
                    let mut out = std::mem::take(&mut self.out);
                    let now = self.wheel.now();
                    c.session.on_bytes(&mut data[..n], now, &self.ctx, &mut out);
                    self.apply(ring, key, &mut out);
                    self.out = out;
                }
                self.arm_recv(ring, key);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.rearm.push(key),
            Err(_) => c.shut(),
        }
        self.reap(key);
    }

    fn on_sent(
        &mut self,
        ring: &mut Ring,
        key: u32,
        res: io::Result<usize>,
        buf: Bytes,
        offset: usize,
    ) {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return;
        };
        c.set_sending(false);
        match res {
            Ok(n) => {
                self.stats.shards[self.id]
                    .bytes_out
                    .fetch_add(n as u64, Relaxed);
                if c.is_shut() {
                } else if offset + n < buf.len() {
                    // A short write: the rest goes before anything queued behind it.
                    c.set_sending(true);
                    ring.send(c.raw_fd(), key, buf, offset + n);
                } else if let Some(next) = c.queue.pop_front() {
                    c.set_sending(true);
                    ring.send(c.raw_fd(), key, next, 0);
                } else if c.close_after_flush() {
                    self.linger(key);
                    return;
                }
            }
            Err(_) => c.shut(),
        }
        self.reap(key);
    }

    /// Our side of `key` is done: shut down writing, read until the peer's FIN, and drop the
    /// socket after `close_timeout_ms` at the latest.
    fn linger(&mut self, key: u32) {
        if let Some(c) = self.conns.get_mut(key as usize)
            && c.linger()
        {
            let epoch = c.epoch;
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
        let mut c = self.conns.remove(key as usize);
        let pending = c.take_pending();
        for id in c.subs {
            self.subs.unsubscribe(id, key);
        }
        let st = &self.stats.shards[self.id];
        st.connections.fetch_sub(1, Relaxed);
        st.closed.fetch_add(1, Relaxed);
        self.stats.open.fetch_sub(1, Relaxed);
        if let Some(ip) = self.peers.remove(&key) {
            if self.per_ip.enabled() {
                self.per_ip.release(ip);
            }
            if pending {
                self.pending_per_ip.release(ip);
            }
        }
    }

    /// Carries out what the endpoint asked for.
    fn apply(&mut self, ring: &mut Ring, key: u32, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            let st = &self.stats.shards[self.id];
            match o {
                Output::Send(b) => {
                    self.send(ring, key, b, false);
                }
                Output::Subscribe(dest) => self.join(key, &dest),
                Output::Unsubscribe(dest) => {
                    if let Some(id) = self.subs.id_of(&dest) {
                        self.subs.unsubscribe(id, key);
                        self.conns[key as usize].subs.retain(|&d| d != id);
                    }
                }
                Output::Publish {
                    dest,
                    body,
                    headers,
                } => self.hub.publish_nowait(Publish::new(dest, body, headers)),
                Output::Upgraded => {
                    st.upgraded.fetch_add(1, Relaxed);
                    let c = &self.conns[key as usize];
                    let epoch = c.epoch;
                    let limits = &self.ctx.cfg.limits;
                    if c.session.stomp().is_some() {
                        // Authenticated only at CONNECT, which gets its own deadline.
                        if limits.connect_timeout_ms > 0 {
                            let t = ticks(limits.connect_timeout_ms);
                            self.wheel.schedule(key, epoch, Kind::Connect, t);
                        }
                    } else {
                        if limits.ping_interval_ms > 0 {
                            let t = ticks(limits.ping_interval_ms);
                            self.wheel.schedule(key, epoch, Kind::Ping, t);
                        }
                        self.authenticated(key);
                    }
                }
                Output::Connected => {
                    self.authenticated(key);
                    let c = &self.conns[key as usize];
                    let tick_ms = TICK.as_millis() as u64;
                    if let Some(t) = c.session.stomp().and_then(|s| s.next_check(tick_ms)) {
                        self.wheel.schedule(key, c.epoch, Kind::Heartbeat, t);
                    }
                }
                Output::CloseWith(code, reason) => {
                    // The endpoint turns these into close frames; this is a fallback.
                    self.close_session(ring, key, code, reason);
                }
                Output::Rejected => {
                    st.rejected.fetch_add(1, Relaxed);
                }
                Output::Received => {
                    st.messages_in.fetch_add(1, Relaxed);
                }
                Output::ProtocolError => {
                    st.protocol_errors.fetch_add(1, Relaxed);
                }
                Output::StompError => {
                    st.stomp_errors.fetch_add(1, Relaxed);
                }
                Output::AwaitClose => {
                    let epoch = self.conns[key as usize].epoch;
                    let t = ticks(self.ctx.cfg.limits.close_timeout_ms);
                    self.wheel.schedule(key, epoch, Kind::Closing, t);
                }
                Output::Close => {
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
    fn send(&mut self, ring: &mut Ring, key: u32, b: Bytes, capped: bool) -> bool {
        let Some(c) = self.conns.get_mut(key as usize) else {
            return false;
        };
        if c.is_shut() {
            return false;
        }
        if let Some(s) = c.session.stomp_mut() {
            s.sent(self.wheel.now());
        }
        if !c.sending() {
            c.set_sending(true);
            ring.send(c.raw_fd(), key, b, 0);
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
                        ring,
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

    fn refuse(&mut self, ring: &mut Ring, key: u32, status: u16, reason: &str) {
        let mut out = std::mem::take(&mut self.out);
        self.conns[key as usize]
            .session
            .refuse(status, reason, &mut out);
        self.apply(ring, key, &mut out);
        self.out = out;
    }

    fn close_session(&mut self, ring: &mut Ring, key: u32, code: u16, reason: &str) {
        let mut out = std::mem::take(&mut self.out);
        if let Some(c) = self.conns.get_mut(key as usize) {
            c.session.close(code, reason, &mut out);
        }
        self.apply(ring, key, &mut out);
        self.out = out;
    }

    fn on_command(&mut self, ring: &mut Ring, cmd: Command) {
        match cmd {
            Command::Publish { msg, reply } => {
                let reached = self.fan_out(ring, &msg);
                let st = &self.stats.shards[self.id];
                st.publishes.fetch_add(1, Relaxed);
                st.messages_out.fetch_add(reached as u64, Relaxed);
                if let Some(reply) = reply {
                    let _ = reply.send(reached);
                }
            }
            Command::Disconnect {
                project,
                user,
                reply,
            } => {
                // A scan of this shard's sessions: /disconnect is rare, and a per-user index
                // would cost every session ~200 bytes.
                let mut keys = std::mem::take(&mut self.keys);
                keys.extend(self.conns.iter().filter_map(|(k, c)| {
                    let (p, u) = c.session.identity()?;
                    (p == project && u == Some(user.as_str())).then_some(k as u32)
                }));
                for &key in &keys {
                    self.close_session(ring, key, CloseError::POLICY, "disconnected by the server");
                }
                let _ = reply.send(keys.len());
                keys.clear();
                self.keys = keys;
            }
            Command::Sessions {
                project,
                user,
                reply,
            } => {
                let list = self
                    .conns
                    .iter()
                    .filter_map(|(k, c)| {
                        let (p, u) = c.session.identity()?;
                        if project.as_ref().is_some_and(|want| want != p)
                            || (user.is_some() && u != user.as_deref())
                        {
                            return None;
                        }
                        let subs: Vec<serde_json::Value> = match c.session.mode() {
                            Mode::Stomp(s) => s
                                .subscriptions()
                                .map(|(id, d)| serde_json::json!({"id": id, "destination": d}))
                                .collect(),
                            _ => Vec::new(),
                        };
                        Some(serde_json::json!({
                            "id": k, "shard": self.id, "project": p, "user": u,
                            "protocol": if c.session.stomp().is_some() { "stomp" } else { "raw" },
                            "connected_at": c.connected_at, "subscriptions": subs,
                        }))
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Reload(ctx) => self.ctx = ctx,
            Command::Shutdown => {
                if self.shutdown_at.is_none() {
                    self.shutdown_at =
                        Some(self.wheel.now() + ticks(self.ctx.cfg.server.shutdown_grace_ms));
                    if let Some(l) = self.listener.take() {
                        let _ = l.shutdown(std::net::Shutdown::Both);
                    }
                    let keys: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
                    for key in keys {
                        self.close_session(
                            ring,
                            key,
                            CloseError::GOING_AWAY,
                            "server shutting down",
                        );
                    }
                }
            }
        }
    }

    /// Sends one publish to this shard's subscribers: raw sessions share `msg.raw`; STOMP
    /// sessions share one MESSAGE frame per distinct (subscription id, destination).
    fn fan_out(&mut self, ring: &mut Ring, msg: &Publish) -> usize {
        let mut keys = std::mem::take(&mut self.keys);
        let mut frames = std::mem::take(&mut self.frames);
        let mut cache: Vec<(String, String, Bytes)> = Vec::new();
        self.subs.members_of(&msg.dest, &mut keys);
        // Slab order is roughly accept order: neighbouring sends then touch neighbouring slab
        // entries and sockets, where the set's hash order jumps around.
        keys.sort_unstable();
        let mut reached = 0;
        for &key in &keys {
            let Some(c) = self.conns.get(key as usize) else {
                continue;
            };
            if !c.session.is_open() {
                continue;
            }
            match c.session.mode() {
                Mode::Raw(_) => frames.push(msg.raw.clone()),
                Mode::Stomp(s) if s.is_connected() => {
                    for (id, written) in s.matching(&msg.dest) {
                        let hit = cache.iter().find(|(i, w, _)| i == id && w == written);
                        let frame = match hit {
                            Some((_, _, f)) => f.clone(),
                            None => {
                                let f = message_frame(msg, id, written);
                                cache.push((id.into(), written.into(), f.clone()));
                                f
                            }
                        };
                        frames.push(frame);
                    }
                }
                _ => {}
            }
            let mut any = false;
            for f in frames.drain(..) {
                any |= self.send(ring, key, f, true);
            }
            reached += usize::from(any);
        }
        keys.clear();
        self.keys = keys;
        self.frames = frames;
        reached
    }

    fn on_tick(&mut self, ring: &mut Ring) {
        self.st().last_turn_ms.store(now_ms(), Relaxed);
        ring.tick_after(TICK);
        if self.accept_paused && self.shutdown_at.is_none() {
            self.accept_paused = false;
            self.arm_accept(ring);
        }
        // The wheel follows the wall clock, not the count of timeout events: on a saturated
        // host a shard's 100 ms timeout completes late, and deadlines (heart-beats above all)
        // must not stretch with it.
        let target = self.started.elapsed().as_millis() as u64 / TICK.as_millis() as u64;
        // A shard that fell behind by more than a second was itself stalled: input may still
        // be waiting for it, so nobody is closed for silence in this pass (beats still go out).
        let stalled = target.saturating_sub(self.wheel.now()) > STALL_TICKS;
        let mut due = Vec::new();
        while self.wheel.now() < target {
            self.wheel.advance(|e| due.push(e));
        }
        for e in due {
            let Some(c) = self.conns.get(e.key as usize) else {
                continue;
            };
            if c.epoch != e.epoch || c.is_shut() {
                continue;
            }
            match e.kind {
                Kind::Handshake if c.session.in_handshake() && stalled => {
                    self.wheel
                        .schedule(e.key, e.epoch, Kind::Handshake, STALL_TICKS);
                }
                Kind::Handshake if c.session.in_handshake() => {
                    self.st().handshake_timeouts.fetch_add(1, Relaxed);
                    self.close_session(
                        ring,
                        e.key,
                        0,
                        "the upgrade request did not complete in time",
                    );
                }
                Kind::Connect if stalled => {
                    self.wheel
                        .schedule(e.key, e.epoch, Kind::Connect, STALL_TICKS);
                }
                Kind::Connect => {
                    let mut out = std::mem::take(&mut self.out);
                    let ms = self.ctx.cfg.limits.connect_timeout_ms;
                    if self.conns[e.key as usize]
                        .session
                        .connect_timeout(ms, &mut out)
                    {
                        self.st().connect_timeouts.fetch_add(1, Relaxed);
                    }
                    self.apply(ring, e.key, &mut out);
                    self.out = out;
                }
                Kind::Heartbeat => {
                    let mut out = std::mem::take(&mut self.out);
                    let tick_ms = TICK.as_millis() as u64;
                    let now = self.wheel.now();
                    let next = self.conns[e.key as usize]
                        .session
                        .on_heartbeat(now, tick_ms, stalled, &mut out);
                    self.apply(ring, e.key, &mut out);
                    self.out = out;
                    if let Some(t) = next {
                        self.wheel.schedule(e.key, e.epoch, Kind::Heartbeat, t);
                    }
                }
                Kind::Ping if c.session.is_open() => {
                    let interval = ticks(self.ctx.cfg.limits.ping_interval_ms);
                    let liveness = match self.conns[e.key as usize].ping_due() {
                        Liveness::Dead if stalled => Liveness::Ping,
                        l => l,
                    };
                    match liveness {
                        Liveness::Alive => {
                            self.wheel.schedule(e.key, e.epoch, Kind::Ping, interval)
                        }
                        Liveness::Ping => {
                            let ping =
                                crate::ws::frame::encode(crate::ws::frame::Opcode::Ping, b"");
                            self.send(ring, e.key, ping, false);
                            self.wheel.schedule(e.key, e.epoch, Kind::Ping, interval);
                        }
                        Liveness::Dead => {
                            self.st().ping_timeouts.fetch_add(1, Relaxed);
                            self.close_session(ring, e.key, CloseError::GOING_AWAY, "ping timeout");
                        }
                    }
                }
                Kind::Closing => {
                    // The peer never answered our close: drop the socket.
                    self.conns[e.key as usize].shut();
                    self.reap(e.key);
                }
                _ => {}
            }
        }
    }
}

/// A STOMP MESSAGE frame for one (subscription, destination), as a WebSocket text frame (a
/// binary one when the body is not UTF-8). The server's own headers come first and cannot be
/// repeated by the publisher's: every path that builds a `Publish` filters them, and this
/// skips them again for whatever arrives from another node.
fn message_frame(msg: &Publish, sub: &str, destination: &str) -> Bytes {
    let mut f = StompFrame::new(StompCommand::Message)
        .header("destination", destination)
        .header("message-id", msg.seq.to_string())
        .header("subscription", sub);
    if !msg.headers.iter().any(|(k, _)| k == "content-type") {
        let content_type = if msg.utf8 {
            "text/plain;charset=UTF-8"
        } else {
            "application/octet-stream"
        };
        f = f.header("content-type", content_type);
    }
    f.headers.extend(
        msg.headers
            .iter()
            .filter(|(k, _)| !SERVER_HEADERS.contains(&k.as_str()))
            .cloned(),
    );
    f = f.header("content-length", msg.body.len().to_string());
    f.body = msg.body.to_vec();
    crate::ws::frame::encode(Publish::opcode(msg.utf8), &f.encode())
}
