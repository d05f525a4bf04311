//! One client shard: a thread with its own fd table and io_uring that opens its share of the
//! connections (from many source addresses), upgrades them to WebSocket, and counts and times
//! every message that arrives.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ringcast::reactor::ring::{BufferConfig, Event, Ring};
use ringcast::ws::frame::{Opcode, decode_from_server};
use socket2::{Domain, Socket, Type};

/// Counters all client shards add to; the main thread reads them for progress and results.
#[derive(Default)]
pub struct Shared {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub closed: AtomicU64,
    pub received: AtomicU64,
    /// WebSocket bytes (frame headers and payloads as sent, compressed or not) of the
    /// messages counted in `received`.
    pub received_bytes: AtomicU64,
    /// Latest receive time, in ns since `epoch`.
    pub last_recv_ns: AtomicU64,
    pub stop: AtomicBool,
    /// Gaps longer than 1.5 heart-beat periods with nothing from the server (STOMP).
    pub missed_beats: AtomicU64,
    /// Storm mode: connections lost or refused and tried again, and of those refusals the
    /// 503s (with their `Retry-After` honoured).
    pub retries: AtomicU64,
    pub shed: AtomicU64,
    /// Recovering SUBSCRIBEs answered with `x-recovered: true` (storm mode with `resume`).
    pub recovered: AtomicU64,
    pub errors: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    pub latency: std::sync::Mutex<Option<Histogram<u64>>>,
}

impl Shared {
    fn error(&self, kind: String) {
        self.failed.fetch_add(1, Relaxed);
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }
}

/// What a connection says once TCP is up.
#[derive(Clone)]
pub enum Proto {
    /// The upgrade request of each connection (by global index: it names the connection's
    /// topic), then raw messages.
    Raw {
        request: Arc<dyn Fn(usize) -> Bytes + Send + Sync>,
    },
    /// The upgrade, then per connection (by global index) CONNECT + SUBSCRIBE (with a receipt)
    /// as masked WebSocket frames; client heart-beats every `heartbeat_ms` (0 = none).
    Stomp {
        request: Bytes,
        frames: Arc<dyn Fn(usize) -> Bytes + Send + Sync>,
        heartbeat_ms: u32,
        /// Frames travel in SockJS's `a["..."]` (the client's as `["..."]`).
        sockjs: bool,
        /// STOMP straight over TCP (a broker without a WebSocket listener): no upgrade,
        /// `frames` are sent as they are, and frames end at their NUL.
        tcp: bool,
    },
}

/// What a session coming back with a position sends: `resume(i, "EPOCH:OFFSET")`.
pub type Resume = Arc<dyn Fn(usize, &str) -> Bytes + Send + Sync>;

pub struct Plan {
    pub id: usize,
    /// Global index of this shard's first connection (tokens are per connection).
    pub first: usize,
    pub count: usize,
    pub target: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub proto: Proto,
    /// Connections of this shard allowed to be mid-connect at once.
    pub concurrency: usize,
    pub shared: Arc<Shared>,
    pub epoch: Instant,
    pub core: Option<core_affinity::CoreId>,
    /// Connect with TLS (`wss://`), trusting what this configuration trusts.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Storm mode: a connection that fails or is lost comes back, after the server's
    /// `Retry-After` (plus up to a second of jitter), else after a jittered back-off from
    /// 100 ms doubling to 2 s, for as long as the run lasts; nothing counts as failed.
    pub storm: bool,
    /// Storm mode: where a lost connection goes next (a cluster's other nodes, round-robin);
    /// empty = back to `target`.
    pub fallbacks: Vec<SocketAddr>,
    /// STOMP with history: each client keeps its position (`x-epoch:x-offset` of its last
    /// MESSAGE) and comes back with `resume(i, "EPOCH:OFFSET")` (CONNECT, then SUBSCRIBE with
    /// `x-recover-since`) instead of its first frames.
    pub resume: Option<Resume>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Idle,
    Connecting,
    Upgrading,
    /// STOMP: CONNECT and SUBSCRIBE sent, waiting for the SUBSCRIBE's receipt.
    Subscribing,
    Open,
    Dead,
}

struct Client {
    fd: Option<OwnedFd>,
    tls: Option<Box<rustls::ClientConnection>>,
    phase: Phase,
    buf: Vec<u8>,
    /// Tick (of `TICK`) of the last bytes from the server.
    last_rx: u32,
    /// Storm mode: tries since the last success (the back-off grows with it).
    tries: u8,
    /// With `Plan::resume`: `EPOCH:OFFSET` of the last MESSAGE.
    pos: Option<Box<str>>,
}

const TICK: Duration = Duration::from_millis(50);

/// A masked, empty-mask client text frame holding one EOL: a STOMP heart-beat.
const BEAT: &[u8] = &[0x81, 0x81, 0, 0, 0, 0, b'\n'];
/// A beat straight over TCP.
const TCP_BEAT: &[u8] = b"\n";
/// The same beat as a SockJS message, `["\n"]`.
const SOCKJS_BEAT: &[u8] = &[0x81, 0x86, 0, 0, 0, 0, b'[', b'"', b'\\', b'n', b'"', b']'];

pub fn spawn(plan: Plan) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("client-{}", plan.id))
        .spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES) {
                plan.shared.error(format!("unshare: {e}"));
                return;
            }
            if let Some(c) = plan.core {
                core_affinity::set_for_current(c);
            }
            if let Err(e) = run(&plan) {
                plan.shared.error(format!("client shard: {e}"));
            }
        })
        .expect("spawn client shard")
}

fn run(plan: &Plan) -> std::io::Result<()> {
    let mut ring = Ring::new(
        4096,
        BufferConfig {
            count: 1024,
            size: 4096,
        },
        false,
    )?;
    let mut clients: Vec<Client> = (0..plan.count)
        .map(|_| Client {
            fd: None,
            tls: None,
            phase: Phase::Idle,
            buf: Vec::new(),
            last_rx: 0,
            tries: 0,
            pos: None,
        })
        .collect();
    let mut st = State {
        next: 0,
        in_progress: 0,
        hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds"),
        received: 0,
        received_bytes: 0,
        last_recv: 0,
        inflight_ops: 0,
        tick: 0,
        server_hb_ms: 0,
        waiting: std::collections::BinaryHeap::new(),
        hint_ms: None,
        rng: 0x2545_f491_4f6c_dd1d ^ plan.id as u64,
    };
    ring.tick_after(TICK);
    let mut scratch = Vec::with_capacity(4096);
    st.launch(plan, &mut ring, &mut clients);
    while !plan.shared.stop.load(Relaxed) {
        ring.run_once(&mut scratch, |ring, ev, data| {
            st.on_event(plan, ring, &mut clients, ev, data)
        })?;
        st.launch(plan, &mut ring, &mut clients);
        if st.received > 0 {
            plan.shared.received.fetch_add(st.received, Relaxed);
            plan.shared
                .received_bytes
                .fetch_add(std::mem::take(&mut st.received_bytes), Relaxed);
            plan.shared.last_recv_ns.fetch_max(st.last_recv, Relaxed);
            st.received = 0;
        }
    }
    let mut h = plan.shared.latency.lock().unwrap();
    match h.as_mut() {
        Some(total) => total.add(&st.hist).ok(),
        None => {
            *h = Some(st.hist.clone());
            None
        }
    };
    Ok(())
}

struct State {
    next: usize,
    in_progress: usize,
    hist: Histogram<u64>,
    received: u64,
    received_bytes: u64,
    last_recv: u64,
    inflight_ops: usize,
    tick: u32,
    /// The server's heart-beat period as CONNECTED announced it (ms; 0 = not seen yet).
    server_hb_ms: u32,
    /// Storm mode: connections to open again, soonest first: (tick, key).
    waiting: std::collections::BinaryHeap<std::cmp::Reverse<(u32, u32)>>,
    /// The server's hint (`Retry-After`, a `retry-after` header) for the failure at hand.
    hint_ms: Option<u64>,
    rng: u64,
}

impl State {
    /// Starts connects up to the concurrency limit.
    fn launch(&mut self, plan: &Plan, ring: &mut Ring, clients: &mut [Client]) {
        while self.in_progress < plan.concurrency {
            let key = match self.waiting.peek() {
                Some(&std::cmp::Reverse((at, key))) if at <= self.tick => {
                    self.waiting.pop();
                    key as usize
                }
                _ if self.next < clients.len() => {
                    self.next += 1;
                    self.next - 1
                }
                _ => break,
            };
            let tries = usize::from(clients[key].tries);
            let turn = key * 7919 + tries;
            let src = plan.sources[(plan.id + turn) % plan.sources.len()];
            let target = match plan.fallbacks.len() {
                n if n > 0 && tries > 0 => plan.fallbacks[(key + tries) % n],
                _ => plan.target,
            };
            match socket_from(src, target) {
                Ok(fd) => {
                    ring.connect(fd.as_raw_fd(), key as u32, target);
                    clients[key].fd = Some(fd);
                    clients[key].phase = Phase::Connecting;
                    self.in_progress += 1;
                    self.inflight_ops += 1;
                }
                Err(e) => plan.shared.error(format!("socket: {e}")),
            }
        }
    }

    fn fail(&mut self, plan: &Plan, key: u32, c: &mut Client, kind: String) {
        let hint = self.hint_ms.take();
        let was = c.phase;
        if matches!(
            was,
            Phase::Connecting | Phase::Upgrading | Phase::Subscribing
        ) {
            self.in_progress -= 1;
            if !plan.storm {
                plan.shared.error(kind);
            }
        } else if was == Phase::Open {
            plan.shared.closed.fetch_add(1, Relaxed);
        }
        c.phase = Phase::Dead;
        if let Some(fd) = c.fd.take()
            && plan.storm
        {
            // A recv still armed holds the socket open past close(2), and its completion
            // would reach the key's next connection: shutdown ends it now.
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        }
        c.tls = None;
        c.buf = Vec::new();
        if plan.storm && was != Phase::Dead {
            self.retry_later(plan, key, c, hint);
        }
    }

    /// Storm mode: files client `c` to connect again, when the server said or after a
    /// jittered, growing back-off.
    fn retry_later(&mut self, plan: &Plan, key: u32, c: &mut Client, hint_ms: Option<u64>) {
        plan.shared.retries.fetch_add(1, Relaxed);
        // xorshift64: the jitter needs no quality, only spread.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let wait_ms = match hint_ms {
            Some(ms) => {
                plan.shared.shed.fetch_add(1, Relaxed);
                ms + self.rng % 1000
            }
            None => {
                let cap = (100u64 << c.tries.min(5)).min(2000);
                cap / 2 + self.rng % (cap / 2 + 1)
            }
        };
        c.tries = c.tries.saturating_add(1);
        let at = self.tick + (wait_ms / TICK.as_millis() as u64) as u32;
        self.waiting.push(std::cmp::Reverse((at, key)));
    }

    fn on_event(
        &mut self,
        plan: &Plan,
        ring: &mut Ring,
        clients: &mut [Client],
        ev: Event,
        data: &mut [u8],
    ) {
        match ev {
            Event::Connected { key, res } => {
                self.inflight_ops -= 1;
                let c = &mut clients[key as usize];
                match res {
                    Ok(_) => {
                        let fd = c.fd.as_ref().expect("connecting").as_raw_fd();
                        c.last_rx = self.tick;
                        let (request, phase) = match &plan.proto {
                            Proto::Raw { request } => {
                                (request(plan.first + key as usize), Phase::Upgrading)
                            }
                            Proto::Stomp {
                                frames, tcp: true, ..
                            } => (frames(plan.first + key as usize), Phase::Subscribing),
                            Proto::Stomp { request, .. } => (request.clone(), Phase::Upgrading),
                        };
                        c.phase = phase;
                        if let Some(cfg) = &plan.tls {
                            let name = rustls::pki_types::ServerName::try_from("localhost")
                                .expect("a valid name");
                            match rustls::ClientConnection::new(cfg.clone(), name) {
                                Ok(t) => c.tls = Some(Box::new(t)),
                                Err(e) => return self.fail(plan, key, c, format!("tls: {e}")),
                            }
                        }
                        // On TLS rustls holds the request until the handshake is done.
                        send(ring, key, c, request);
                        ring.recv(fd, key);
                    }
                    Err(e) => self.fail(plan, key, c, format!("connect: {e}")),
                }
            }
            Event::Received { key, res, more } => {
                let c = &mut clients[key as usize];
                match res {
                    Ok(0) => self.fail(plan, key, c, "closed by server during upgrade".into()),
                    Ok(n) => {
                        c.last_rx = self.tick;
                        let plain = match unseal(ring, key, c, &data[..n]) {
                            Ok(p) => p,
                            Err(e) => return self.fail(plan, key, c, format!("tls: {e}")),
                        };
                        let bytes = plain.as_deref().unwrap_or(&data[..n]);
                        if let Some(out) = self.on_bytes(plan, key, c, bytes) {
                            send(ring, key, c, out);
                        }
                        if !more
                            && c.phase != Phase::Dead
                            && let Some(fd) = &c.fd
                        {
                            ring.recv(fd.as_raw_fd(), key);
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        if let Some(fd) = &c.fd {
                            ring.recv(fd.as_raw_fd(), key);
                        }
                    }
                    Err(e) => self.fail(plan, key, c, format!("recv: {e}")),
                }
            }
            Event::Sent {
                key, res: Err(e), ..
            } => {
                let c = &mut clients[key as usize];
                self.fail(plan, key, c, format!("send: {e}"));
            }
            Event::Tick => {
                ring.tick_after(TICK);
                // Ticks follow the wall clock, not the count of timer events: a busy shard
                // processes every slot it fell behind on, so no beat is late by more than
                // the shard's own lag.
                let now = (plan.epoch.elapsed().as_millis() / TICK.as_millis()) as u32;
                while self.tick < now {
                    self.tick += 1;
                    if let Proto::Stomp { heartbeat_ms, .. } = plan.proto
                        && heartbeat_ms > 0
                    {
                        self.heartbeats(plan, ring, clients, heartbeat_ms);
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends this tick's share of client heart-beats and counts server silences: each
    /// connection is visited once per period, on the tick its index falls on.
    fn heartbeats(&mut self, plan: &Plan, ring: &mut Ring, clients: &mut [Client], hb_ms: u32) {
        let period = (hb_ms / TICK.as_millis() as u32).max(1) as usize;
        // The server beats every max(its send period, our receive period) (STOMP 1.2).
        let expect = (self.server_hb_ms.max(hb_ms) / TICK.as_millis() as u32).max(1) as usize;
        let beat = Bytes::from_static(match plan.proto {
            Proto::Stomp { sockjs: true, .. } => SOCKJS_BEAT,
            Proto::Stomp { tcp: true, .. } => TCP_BEAT,
            _ => BEAT,
        });
        let mut key = self.tick as usize % period;
        while key < clients.len() {
            let c = &mut clients[key];
            if c.phase == Phase::Open && c.fd.is_some() {
                send(ring, key as u32, c, beat.clone());
                // Nothing from the server for 1.5 periods: a missed beat (counted once per gap).
                if self.server_hb_ms > 0 && (self.tick - c.last_rx) as usize * 2 > expect * 3 {
                    plan.shared.missed_beats.fetch_add(1, Relaxed);
                    c.last_rx = self.tick;
                }
            }
            key += period;
        }
    }

    /// Handles bytes from the server; returns bytes to send back (STOMP's CONNECT).
    fn on_bytes(&mut self, plan: &Plan, key: u32, c: &mut Client, data: &[u8]) -> Option<Bytes> {
        c.buf.extend_from_slice(data);
        let mut reply = None;
        if c.phase == Phase::Upgrading {
            let end = c.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
            if !c.buf.starts_with(b"HTTP/1.1 101") {
                self.hint_ms = number(&c.buf[..end], "retry-after").map(|s| s * 1000);
                let line = String::from_utf8_lossy(&c.buf[..c.buf.len().min(40)]).into_owned();
                let status = line.split_whitespace().nth(1).unwrap_or("?").to_string();
                self.fail(plan, key, c, format!("upgrade refused: HTTP {status}"));
                return None;
            }
            c.buf.drain(..end + 4);
            if let Proto::Stomp { frames, .. } = &plan.proto {
                c.phase = Phase::Subscribing;
                let i = plan.first + key as usize;
                reply = Some(match (&plan.resume, &c.pos) {
                    (Some(resume), Some(pos)) => resume(i, pos),
                    _ => frames(i),
                });
            } else {
                c.phase = Phase::Open;
                c.tries = 0;
                self.in_progress -= 1;
                plan.shared.connected.fetch_add(1, Relaxed);
            }
        }
        let now = plan.epoch.elapsed().as_nanos() as u64;
        if let Proto::Stomp { tcp: true, .. } = plan.proto {
            self.on_tcp_frames(plan, key, c, now);
            return reply;
        }
        let mut pos = 0;
        let stomp = matches!(plan.proto, Proto::Stomp { .. });
        let sockjs = matches!(plan.proto, Proto::Stomp { sockjs: true, .. });
        // A frame the codec refuses ends the parse here, as an incomplete one does.
        while let Ok(Some(f)) = decode_from_server(&c.buf[pos..]) {
            let mut p = &c.buf[pos + f.payload.start..pos + f.payload.end];
            let wire = f.len as u64;
            pos += f.len;
            let inflated;
            if f.rsv1 {
                // permessage-deflate (`--deflate`): the body, timestamp first, is inside.
                inflated = ringcast::ws::deflate::inflate(p, 16 << 20).unwrap_or_default();
                p = &inflated;
            }
            if sockjs {
                // `a["FRAME"]`: the STOMP frame, JSON-escaped; `o` and `h` carry none.
                match p.strip_prefix(b"a[\"") {
                    Some(inner) => p = inner,
                    None => continue,
                }
            }
            if f.opcode.is_control() {
                // Control frames: answer pings (the server reaps silent sessions), skip others.
                if f.opcode == Opcode::Ping {
                    reply = Some(Bytes::from_static(PONG));
                }
                continue;
            }
            if stomp {
                match self.classify(p) {
                    Stomp::Message if plan.resume.is_some() => c.pos = position(p).or(c.pos.take()),
                    Stomp::Message => {}
                    Stomp::Receipt => {
                        if plan.resume.is_some() && header(p, "x-recovered") == Some("true") {
                            plan.shared.recovered.fetch_add(1, Relaxed);
                        }
                        self.subscribed(plan, c);
                        continue;
                    }
                    Stomp::Error(msg) => {
                        self.hint_ms = number(p, "retry-after");
                        self.fail(plan, key, c, format!("STOMP ERROR: {msg}"));
                        return None;
                    }
                    Stomp::Other => continue,
                }
            }
            if let Some(sent) = timestamp(p) {
                let _ = self.hist.record(now.saturating_sub(sent).max(1));
            }
            self.received += 1;
            self.received_bytes += wire;
            self.last_recv = self.last_recv.max(now);
        }
        if pos == c.buf.len() {
            c.buf = Vec::new();
        } else {
            c.buf.drain(..pos);
        }
        reply
    }
}

/// What one STOMP frame from the server was.
enum Stomp {
    Message,
    Receipt,
    Error(String),
    /// CONNECTED, a heart-beat: nothing to count.
    Other,
}

impl State {
    fn classify(&mut self, p: &[u8]) -> Stomp {
        if p.starts_with(b"RECEIPT") {
            return Stomp::Receipt;
        }
        if p.starts_with(b"ERROR") {
            return Stomp::Error(header(p, "message").unwrap_or_default().to_string());
        }
        if p.starts_with(b"CONNECTED") && self.server_hb_ms == 0 {
            self.server_hb_ms = header(p, "heart-beat")
                .and_then(|v| v.split(',').next()?.trim().parse().ok())
                .unwrap_or(0);
        }
        if p.starts_with(b"MESSAGE") {
            Stomp::Message
        } else {
            Stomp::Other
        }
    }

    /// The SUBSCRIBE's receipt: the session counts as connected.
    fn subscribed(&mut self, plan: &Plan, c: &mut Client) {
        if c.phase == Phase::Subscribing {
            c.phase = Phase::Open;
            c.tries = 0;
            self.in_progress -= 1;
            plan.shared.connected.fetch_add(1, Relaxed);
        }
    }

    /// STOMP straight over TCP: every whole frame in the buffer (each ends at its NUL; the
    /// newlines between frames are heart-beats).
    fn on_tcp_frames(&mut self, plan: &Plan, key: u32, c: &mut Client, now: u64) {
        let mut pos = 0;
        while let Some(end) = c.buf[pos..].iter().position(|&b| b == 0) {
            let frame = c.buf[pos..pos + end].to_vec();
            pos += end + 1;
            let start = frame.iter().position(|&b| b != b'\n' && b != b'\r');
            let p = &frame[start.unwrap_or(frame.len())..];
            match self.classify(p) {
                Stomp::Message => {}
                Stomp::Receipt => {
                    self.subscribed(plan, c);
                    continue;
                }
                Stomp::Error(msg) => return self.fail(plan, key, c, format!("STOMP ERROR: {msg}")),
                Stomp::Other => continue,
            }
            if let Some(sent) = timestamp(p) {
                let _ = self.hist.record(now.saturating_sub(sent).max(1));
            }
            self.received += 1;
            self.received_bytes += end as u64 + 1;
            self.last_recv = self.last_recv.max(now);
        }
        c.buf.drain(..pos);
    }
}

/// Sends `bytes` to client `key`, sealed first on TLS.
fn send(ring: &mut Ring, key: u32, c: &mut Client, bytes: Bytes) {
    let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
        return;
    };
    match c.tls.as_deref_mut() {
        None => ring.send(fd, key, bytes, 0),
        Some(t) => {
            let _ = t.writer().write_all(&bytes);
            flush_tls(ring, key, fd, t);
        }
    }
}

fn flush_tls(ring: &mut Ring, key: u32, fd: RawFd, t: &mut rustls::ClientConnection) {
    let mut out = Vec::new();
    while t.wants_write() {
        if t.write_tls(&mut out).is_err() {
            break;
        }
    }
    if !out.is_empty() {
        ring.send(fd, key, Bytes::from(out), 0);
    }
}

/// On TLS: the plaintext in `data` (answering the handshake as it goes); `None` without TLS.
fn unseal(
    ring: &mut Ring,
    key: u32,
    c: &mut Client,
    mut data: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
        return Ok(None);
    };
    let Some(t) = c.tls.as_deref_mut() else {
        return Ok(None);
    };
    let mut plain = Vec::new();
    while !data.is_empty() {
        t.read_tls(&mut data).map_err(|e| e.to_string())?;
        t.process_new_packets().map_err(|e| e.to_string())?;
        let _ = t.reader().read_to_end(&mut plain);
    }
    flush_tls(ring, key, fd, t);
    Ok(Some(plain))
}

/// A header's value in an HTTP head or a STOMP frame: its head only, up to the blank line
/// (names compared without case, as HTTP wants; STOMP's are lower case anyway).
fn header<'a>(frame: &'a [u8], name: &str) -> Option<&'a str> {
    frame
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = std::str::from_utf8(l).ok()?.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// A numeric header's value (`Retry-After`, `retry-after`).
fn number(frame: &[u8], name: &str) -> Option<u64> {
    header(frame, name)?.parse().ok()
}

/// `EPOCH:OFFSET` of a MESSAGE with history headers.
fn position(frame: &[u8]) -> Option<Box<str>> {
    let epoch = header(frame, "x-epoch")?;
    let offset = header(frame, "x-offset")?;
    Some(format!("{epoch}:{offset}").into())
}

/// A masked empty pong (the answer to the server's pings).
const PONG: &[u8] = &[0x8a, 0x80, 0, 0, 0, 0];

/// The publish timestamp a bench message starts with (ns since the run's epoch); in a STOMP
/// MESSAGE, the body's (after a blank line, or its JSON escape inside SockJS's `a["..."]`).
fn timestamp(p: &[u8]) -> Option<u64> {
    let p = if p.starts_with(b"MESSAGE") {
        match p.windows(2).position(|w| w == b"\n\n") {
            Some(i) => &p[i + 2..],
            None => {
                let i = p.windows(4).position(|w| w == br"\n\n")?;
                &p[i + 4..]
            }
        }
    } else {
        p
    };
    let end = p
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(p.len());
    std::str::from_utf8(&p[..end]).ok()?.parse().ok()
}

fn socket_from(src: IpAddr, target: SocketAddr) -> std::io::Result<OwnedFd> {
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    // Without this, bind() picks a port per source address before connect and the kernel
    // cannot share ports across destinations: connects crawl at a few hundred per second.
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
        .map_err(std::io::Error::from)?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::{header, number};

    #[test]
    fn headers_come_from_the_head_of_http_and_stomp_alike() {
        let http = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\r\nbody: 9\n";
        assert_eq!(number(http, "retry-after"), Some(7));
        assert_eq!(header(http, "body"), None);
        let stomp = b"ERROR\nmessage:server restart\nretry-after:2500\n\nretry-after:1\0";
        assert_eq!(header(stomp, "message"), Some("server restart"));
        assert_eq!(number(stomp, "retry-after"), Some(2500));
        let msg = b"MESSAGE\nx-epoch:ab\nx-offset:6\n\n\xff\xfe";
        assert_eq!(super::position(msg).as_deref(), Some("ab:6"));
        assert_eq!(
            header(b"CONNECTED\nheart-beat:10000,0\n\n", "heart-beat"),
            Some("10000,0")
        );
    }
}
