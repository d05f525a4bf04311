//! The io_uring driver of a shard: one thread, its own fd table, its own ring, its own
//! `SO_REUSEPORT` listener. It only moves bytes and arms timers: completions become events of
//! the sans-IO `shard::Core`, and the core's operations become submissions. Every decision
//! (limits, queues, deadlines, fan-out) is the core's.

// The one module allowed `unsafe`: the kernel shares its memory with the ring.
pub mod handoff;
#[allow(unsafe_code)]
pub mod ring;
mod tls;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use crossbeam_channel::Sender;
use socket2::{Domain, SockRef, Socket, Type};

use crate::access_proxy::{AccessProxy, Ask};
use crate::endpoint::Context;
use crate::hub::Hub;
use crate::shard::counts::PerIp;
use crate::shard::inbox::{Command, Inbox};
use crate::shard::{self, Core, Now, Op, TICK};
use crate::stats::{Stats, now_ms};
use ring::{BufferConfig, Event, Ring};

/// Everything a shard thread starts from.
pub struct ShardSpec {
    pub id: usize,
    pub per_ip: Arc<PerIp>,
    /// Unauthenticated connections per source address (`limits.max_pending_per_ip`).
    pub pending_per_ip: Arc<PerIp>,
    /// Identified sessions per user (`limits.max_sessions_per_user`).
    pub per_user: Arc<crate::shard::counts::PerUser>,
    /// The node's handshake rate, shared by its shards.
    pub rate: Arc<shard::admission::Rate>,
    /// Read buffers in this shard's ring (a power of two).
    pub read_buffers: u16,
    pub ctx: Arc<Context>,
    pub hub: Arc<Hub>,
    /// Where questions for projects' backends go.
    pub proxy: Arc<AccessProxy>,
    /// The listener speaks TLS.
    pub tls: Option<Arc<crate::tls::Tls>>,
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
    /// Started by `ringcast upgrade`: take the old process's connections before serving.
    pub takeover: Option<handoff::Takeover>,
    /// What this shard took over, for the new process's log and `/stats`.
    pub took: Sender<handoff::Moved>,
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

/// Refuses an address another process already serves. Shards bind with `SO_REUSEPORT`, so a
/// second server on the same address would otherwise start beside the first and split its
/// clients; a bind without it fails while anyone listens there (TIME_WAIT leftovers do not
/// count, thanks to `SO_REUSEADDR`). The probe is closed before the shards bind.
///
/// A server that just died still holds its listeners for a while: the kernel tears a dead
/// process's io_uring down after the process is gone, cancelling every pending receive before
/// it lets go of the listening sockets (seconds with a million connections). A restart right
/// after a crash (systemd's, a storm's) waits up to `PROBE_WAIT`; then, if `admin_socket` is
/// a socket file nobody answers on, the holder is that dead predecessor and the new shards
/// join its port (`SO_REUSEPORT`): connections that still land in its closing queues are
/// reset and retried by their clients, and the rest reach the new server at once.
pub fn probe_free(addr: SocketAddr, admin_socket: &std::path::Path) -> Result<(), String> {
    let deadline = Instant::now() + PROBE_WAIT;
    loop {
        match probe_once(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && admin_socket.exists()
                    && std::os::unix::net::UnixStream::connect(admin_socket).is_err() =>
            {
                tracing::warn!(
                    "{addr} is still held by a server that died (its admin socket {} does not answer): sharing the port while the kernel closes its listeners",
                    admin_socket.display()
                );
                return Ok(());
            }
            r => return probe_verdict(addr, r),
        }
    }
}

/// How long `probe_free` waits for a dead server's listeners to go.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn probe_once(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    let _ = s.set_reuse_address(true);
    s.bind(&addr.into())
}

fn probe_verdict(addr: SocketAddr, r: io::Result<()>) -> Result<(), String> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(format!(
            "{addr} is already in use by another process (another ringcast?): stop it, or listen elsewhere with --listen or [server] listen"
        )),
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => Err(format!(
            "{addr} is not an address of this host: use one it has (127.0.0.1, 0.0.0.0, …)"
        )),
        Err(e) => Err(format!("cannot bind {addr}: {e}")),
    }
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
    let cfg = &spec.ctx.cfg;
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
    let mut scratch = Vec::with_capacity(cfg.server.read_buffer_size as usize);
    let mut driver = Driver {
        id: spec.id,
        stats: spec.stats.clone(),
        tls: spec.tls,
        tls_conns: Vec::new(),
        plain: Vec::new(),
        core: Core::new(shard::Config {
            id: spec.id,
            shards: spec.hub.shard_count(),
            ctx: spec.ctx.clone(),
            stats: spec.stats,
            per_ip: spec.per_ip,
            pending_per_ip: spec.pending_per_ip,
            per_user: spec.per_user,
            rate: spec.rate,
            capacity: spec.capacity,
            watch: spec.hub.relay().cloned(),
            audience: Some(spec.hub.audience()),
            history: spec.hub.history().cloned(),
        }),
        hub: spec.hub,
        proxy: spec.proxy,
        inbox: spec.inbox,
        listener: None,
        handing: None,
        sockets: Vec::new(),
        started: Instant::now(),
        tick_due: false,
        ops: Vec::new(),
    };
    if let Some(t) = &spec.takeover {
        let since = Instant::now();
        let took = driver.take(t).map_err(|e| {
            let _ = t.bound.send(Err(format!("shard {}: {e}", spec.id)));
            io::Error::new(e.kind(), format!("taking over: {e}"))
        })?;
        tracing::info!(
            shard = spec.id,
            "took {} connection(s) over in {} ms after listening for them",
            took.moved,
            since.elapsed().as_millis()
        );
        let _ = spec.took.send(took);
    }
    if driver.listener.is_none() {
        driver.listener = Some(
            listener(spec.addr)
                .map_err(|e| io::Error::new(e.kind(), format!("listen on {}: {e}", spec.addr)))?,
        );
    }
    driver.flush(&mut ring);
    driver.tls_pump_all(&mut ring);
    ring.wait_wake(driver.inbox.wake.as_raw_fd());
    ring.tick_after(TICK);
    let _ = spec.ready.send(Ok(path.to_string()));
    loop {
        ring.run_once(&mut scratch, |ring, ev, data| {
            driver.on_event(ring, ev, data)
        })?;
        if std::mem::take(&mut driver.tick_due) {
            // Deadlines run after the whole batch, so data that arrived with this tick is
            // seen before anyone is judged silent.
            ring.tick_after(TICK);
            let now = driver.now();
            driver.core.tick(now);
        }
        driver.core.batch_done();
        driver.flush(&mut ring);
        if let Some((to, since)) = driver.handing.clone()
            && ring.inflight() == 0
        {
            let quiet = since.elapsed();
            let m = driver.give(&to);
            match &m {
                Ok(m) => tracing::info!(
                    shard = spec.id,
                    "handed {} connection(s) and the listener to the new process ({} closed): I/O stopped in {} ms, sent in {} ms",
                    m.moved,
                    m.closed,
                    quiet.as_millis(),
                    (since.elapsed() - quiet).as_millis()
                ),
                Err(e) => tracing::error!(shard = spec.id, "hand-over failed: {e}"),
            }
            let _ = spec.took.send(m.unwrap_or_default());
            return Ok(());
        }
        if driver.core.finished() {
            tracing::debug!(shard = spec.id, "shard done");
            // Dropping the ring cancels and drains what is still in flight.
            return Ok(());
        }
    }
}

/// The driver's side of a shard: the core, and what only the driver touches (sockets, the
/// hub's channel, the clock).
struct Driver {
    id: usize,
    stats: Arc<Stats>,
    /// The listener's TLS, if it speaks `wss`.
    tls: Option<Arc<crate::tls::Tls>>,
    /// Each connection's TLS session, under the core's key (empty without TLS).
    tls_conns: Vec<Option<Box<tls::TlsConn>>>,
    /// Decrypted bytes on their way to the core (reused).
    plain: Vec<u8>,
    core: Core,
    hub: Arc<Hub>,
    proxy: Arc<AccessProxy>,
    inbox: Inbox,
    listener: Option<Socket>,
    /// Handing everything to the new process's shard at this Unix socket: the core is frozen
    /// and the ring's operations cancelled; the hand-over runs once the last one is in.
    handing: Option<(std::path::PathBuf, Instant)>,
    /// Each connection's socket, under the core's key for it.
    sockets: Vec<Option<OwnedFd>>,
    started: Instant,
    tick_due: bool,
    /// The core's operations being carried out (its buffer, swapped, to keep the allocation).
    ops: Vec<Op>,
}

impl Driver {
    fn now(&self) -> Now {
        Now {
            ms: self.started.elapsed().as_millis() as u64,
            unix_ms: now_ms(),
        }
    }

    fn on_event(&mut self, ring: &mut Ring, ev: Event, data: &mut [u8]) {
        match ev {
            Event::Accepted { res, more } => {
                match res {
                    Ok(fd) => self.accepted(fd),
                    Err(e) => self.core.accept_failed(&e),
                }
                if !more {
                    self.core.accept_ended();
                }
            }
            Event::Received { key, res, more } => match res {
                Ok(n) if n > 0 && self.has_tls(key) => self.tls_received(ring, key, n, more, data),
                res => self.core.received(key, res, more, data),
            },
            Event::Sent {
                key,
                res,
                buf,
                offset,
            } => {
                if self.has_tls(key) {
                    self.tls_sent(ring, key, res, buf, offset)
                } else {
                    self.core.sent(key, res, buf, offset)
                }
            }
            Event::Woken => {
                while let Ok(cmd) = self.inbox.rx.try_recv() {
                    match cmd {
                        Command::HandOver(to) if self.handing.is_none() => {
                            self.core.freeze();
                            self.handing = Some((to, Instant::now()));
                            ring.cancel_everything(&self.core.keys());
                        }
                        cmd => self.core.command(cmd),
                    }
                }
                if self.handing.is_none() {
                    ring.wait_wake(self.inbox.wake.as_raw_fd());
                }
            }
            Event::Tick if self.handing.is_some() => {}
            Event::Tick => self.tick_due = true,
            Event::Connected { .. } | Event::Internal => {}
        }
        self.flush(ring);
    }

    fn accepted(&mut self, fd: OwnedFd) {
        // Pushes are small and latency-bound: never let Nagle hold one back.
        let sock = SockRef::from(&fd);
        let _ = sock.set_tcp_nodelay(true);
        let peer: Option<IpAddr> = if self.core.wants_peer() {
            sock.peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.ip())
        } else {
            None
        };
        let key = self.core.accepted(peer, now_ms());
        let k = key as usize;
        if self.sockets.len() <= k {
            self.sockets.resize_with(k + 1, || None);
        }
        self.sockets[k] = Some(fd);
        if let Some(tls) = self.tls.clone() {
            self.tls_accepted(&tls, key);
        }
    }

    fn fd(&self, key: u32) -> i32 {
        self.sockets[key as usize]
            .as_ref()
            .map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Carries out what the core asked for (and what it asks while that is done).
    fn flush(&mut self, ring: &mut Ring) {
        let mut ops = std::mem::take(&mut self.ops);
        loop {
            self.core.take_ops(&mut ops);
            if ops.is_empty() {
                break;
            }
            self.carry_out(ring, &mut ops);
        }
        self.ops = ops;
    }

    fn carry_out(&mut self, ring: &mut Ring, ops: &mut Vec<Op>) {
        for op in ops.drain(..) {
            match op {
                Op::Recv(key) => ring.recv(self.fd(key), key),
                Op::Send { key, buf, offset } => {
                    if self.has_tls(key) {
                        self.tls_send(ring, key, buf, offset)
                    } else {
                        ring.send(self.fd(key), key, buf, offset)
                    }
                }
                Op::ShutdownWrite(key) => {
                    self.tls_shutdown_write(key);
                    let _ =
                        nix::sys::socket::shutdown(self.fd(key), nix::sys::socket::Shutdown::Write);
                }
                Op::Shutdown(key) => {
                    let _ =
                        nix::sys::socket::shutdown(self.fd(key), nix::sys::socket::Shutdown::Both);
                }
                Op::Free(key) => {
                    self.sockets[key as usize] = None;
                    if let Some(t) = self.tls_conns.get_mut(key as usize) {
                        *t = None;
                    }
                }
                Op::Accept if self.handing.is_some() => {}
                Op::Accept => {
                    if let Some(l) = &self.listener {
                        ring.accept(l.as_raw_fd());
                    }
                }
                Op::CloseListener => {
                    if let Some(l) = self.listener.take() {
                        let _ = l.shutdown(std::net::Shutdown::Both);
                    }
                }
                Op::Publish(msg) => self.hub.publish_nowait(msg),
                Op::ToShard(shard, m) => self.hub.send_to(shard, Command::Sockjs(m)),
                Op::Ask(question) => {
                    let url = self.core.backend_for(&question);
                    self.proxy.ask(Ask { question, url });
                }
            }
        }
    }
}
