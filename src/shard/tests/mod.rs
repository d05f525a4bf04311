//! The shard core on virtual time, in the style of quinn's `Pair`: a `Net` plays the kernel and
//! the clients (it completes the core's operations, or holds sends back for a client that does
//! not read), and the clock moves only when a test says so. No socket, no sleep.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::*;
use crate::auth::Auth;
use crate::shard::inbox::Command;
use crate::ws::frame::{Opcode, decode_from_server, encode_masked};

const RAW: &str = "GET /ws?topic=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const STOMP: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n";
const UNIX_MS: u64 = 1_800_000_000_000;

/// The kernel and every client of one shard.
struct Net {
    core: Core,
    stats: Arc<Stats>,
    now_ms: u64,
    /// Sends the kernel holds, by connection (one at a time, as the core promises).
    held: HashMap<u32, (Bytes, usize)>,
    /// Connections whose client does not read: their sends stay held.
    stalled: HashSet<u32>,
    /// What each client received, in order.
    wire: HashMap<u32, Vec<u8>>,
    shut_write: HashSet<u32>,
    shut: HashSet<u32>,
    freed: HashSet<u32>,
    recv_armed: HashSet<u32>,
    accepts_armed: usize,
    listener_closed: bool,
    published: Vec<Publish>,
    /// Questions for projects' backends, for the test to answer.
    asked: Vec<Question>,
    /// Messages for the node's other shards (`node::Node` carries them).
    to_shard: Vec<(usize, crate::endpoint::relay::Message)>,
}

fn config(edit: impl FnOnce(&mut crate::config::Config)) -> Arc<Context> {
    let mut cfg = crate::config::Config::embedded();
    cfg.limits.max_pending_per_ip = 0;
    edit(&mut cfg);
    let auth = Auth::from_config(&cfg, crate::clock::unix_s()).unwrap();
    Arc::new(Context::new(cfg, auth))
}

impl Net {
    fn new(ctx: Arc<Context>) -> Net {
        let stats = Arc::new(Stats::new(1));
        let limits = &ctx.cfg.limits;
        Net::shard(super::Config {
            id: 0,
            shards: 1,
            per_ip: Arc::new(PerIp::new(limits.max_connections_per_ip)),
            pending_per_ip: Arc::new(PerIp::new(limits.max_pending_per_ip)),
            per_user: Arc::new(PerUser::new(limits.max_sessions_per_user)),
            rate: Arc::default(),
            ctx,
            stats,
            capacity: 1000,
            watch: None,
            audience: None,
            history: None,
        })
    }

    /// One shard of a node (`node::Node` makes several, sharing the node's tables).
    fn shard(cfg: super::Config) -> Net {
        let stats = cfg.stats.clone();
        let core = Core::new(cfg);
        let mut net = Net {
            core,
            stats,
            now_ms: 0,
            held: HashMap::new(),
            stalled: HashSet::new(),
            wire: HashMap::new(),
            shut_write: HashSet::new(),
            shut: HashSet::new(),
            freed: HashSet::new(),
            recv_armed: HashSet::new(),
            accepts_armed: 0,
            listener_closed: false,
            published: Vec::new(),
            asked: Vec::new(),
            to_shard: Vec::new(),
        };
        net.pump();
        net
    }

    fn counter(
        &self,
        f: impl Fn(&crate::stats::ShardStats) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        f(&self.stats.shards[self.core.id]).load(Relaxed)
    }

    /// Carries out every queued operation, completing sends to clients that read.
    fn pump(&mut self) {
        loop {
            let mut ops = Vec::new();
            self.core.take_ops(&mut ops);
            if ops.is_empty() {
                return;
            }
            for op in ops {
                match op {
                    Op::Recv(k) => {
                        assert!(self.recv_armed.insert(k), "recv armed twice on {k}");
                    }
                    Op::Send { key, buf, offset } => {
                        assert!(!self.freed.contains(&key), "send to freed {key}");
                        let prev = self.held.insert(key, (buf, offset));
                        assert!(prev.is_none(), "two sends in flight on {key}");
                    }
                    Op::ShutdownWrite(k) => {
                        self.shut_write.insert(k);
                    }
                    Op::Shutdown(k) => {
                        self.shut.insert(k);
                        // A shutdown ends the pending recv.
                        if self.recv_armed.remove(&k) {
                            self.core.received(k, Ok(0), false, &mut []);
                        }
                    }
                    Op::Free(k) => {
                        assert!(!self.recv_armed.contains(&k), "freed {k} with a recv armed");
                        assert!(
                            !self.held.contains_key(&k),
                            "freed {k} with a send in flight"
                        );
                        self.freed.insert(k);
                    }
                    Op::Accept => self.accepts_armed += 1,
                    Op::CloseListener => self.listener_closed = true,
                    Op::Publish(p) => self.published.push(p),
                    Op::ToShard(to, m) => self.to_shard.push((to, m)),
                    Op::Ask(q) => self.asked.push(q),
                }
            }
            self.deliver();
        }
    }

    /// Completes held sends whose clients read.
    fn deliver(&mut self) {
        let ready: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|k| !self.stalled.contains(k))
            .collect();
        for key in ready {
            let (buf, offset) = self.held.remove(&key).unwrap();
            self.wire
                .entry(key)
                .or_default()
                .extend_from_slice(&buf[offset..]);
            let n = buf.len() - offset;
            self.core.sent(key, Ok(n), buf, offset);
        }
    }

    fn connect(&mut self, peer: &str) -> u32 {
        let ip: IpAddr = peer.parse().unwrap();
        let key = self.core.accepted(Some(ip), UNIX_MS + self.now_ms);
        // A new socket under a reused key: forget what the old one saw.
        for set in [
            &mut self.shut_write,
            &mut self.shut,
            &mut self.freed,
            &mut self.stalled,
        ] {
            set.remove(&key);
        }
        self.wire.remove(&key);
        self.pump();
        key
    }

    fn client_sends(&mut self, key: u32, bytes: &[u8]) {
        let mut data = bytes.to_vec();
        let n = data.len();
        self.core.received(key, Ok(n), true, &mut data);
        self.core.batch_done();
        self.pump();
    }

    fn client_sends_frame(&mut self, key: u32, opcode: Opcode, payload: &[u8]) {
        self.client_sends(key, &encode_masked(opcode, true, payload, [1, 2, 3, 4]));
    }

    /// The client closes its end (its FIN reaches the pending recv).
    fn client_fin(&mut self, key: u32) {
        if self.recv_armed.remove(&key) {
            self.core.received(key, Ok(0), false, &mut []);
            self.pump();
        }
    }

    /// Virtual time passes in 100 ms ticks (or in one jump, as a stalled shard sees it).
    fn advance(&mut self, ms: u64, one_jump: bool) {
        let step = if one_jump {
            ms
        } else {
            TICK.as_millis() as u64
        };
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms = (self.now_ms + step).min(end);
            self.core.tick(Now {
                ms: self.now_ms,
                unix_ms: UNIX_MS + self.now_ms,
            });
            self.core.batch_done();
            self.pump();
        }
    }

    fn publish(&mut self, topic: &str, body: &str) -> usize {
        self.publish_to("default", topic, body)
    }

    fn publish_to(&mut self, project: &str, topic: &str, body: &str) -> usize {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let msg = Publish::new(
            Dest::Topic {
                project: project.into(),
                topic: topic.into(),
            },
            Bytes::copy_from_slice(body.as_bytes()),
            vec![],
        );
        self.core.command(Command::Publish {
            msg: Arc::new(msg),
            reply: Some(tx),
        });
        self.pump();
        rx.recv().unwrap()
    }

    fn stall(&mut self, key: u32) {
        self.stalled.insert(key);
    }

    fn resume(&mut self, key: u32) {
        self.stalled.remove(&key);
        self.deliver();
        self.pump();
    }

    /// What client `key` received: the HTTP answer, then (opcode, payload) per frame.
    fn received(&self, key: u32) -> (String, Vec<(Opcode, Vec<u8>)>) {
        let data = self.wire.get(&key).cloned().unwrap_or_default();
        let head_end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| i + 4);
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            // A refusal: the rest is its body, not frames.
            return (String::from_utf8_lossy(&data).into_owned(), Vec::new());
        }
        let mut frames = Vec::new();
        let mut rest = &data[head_end..];
        while let Ok(Some(f)) = decode_from_server(rest) {
            frames.push((f.opcode, rest[f.payload.clone()].to_vec()));
            rest = &rest[f.len..];
        }
        (head, frames)
    }

    fn texts(&self, key: u32) -> Vec<String> {
        self.received(key)
            .1
            .into_iter()
            .filter(|(op, _)| *op == Opcode::Text)
            .map(|(_, p)| String::from_utf8(p).unwrap())
            .collect()
    }

    /// The close frame the client got, as (code, reason).
    fn close_of(&self, key: u32) -> Option<(u16, String)> {
        self.received(key)
            .1
            .into_iter()
            .find(|(op, _)| *op == Opcode::Close)
            .map(|(_, p)| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    String::from_utf8_lossy(&p[2..]).into_owned(),
                )
            })
    }

    fn raw_client(&mut self) -> u32 {
        let k = self.connect("127.0.0.1");
        self.client_sends(k, RAW.as_bytes());
        assert!(self.received(k).0.starts_with("HTTP/1.1 101"));
        k
    }

    fn stomp_client(&mut self, heart_beat: &str) -> u32 {
        let k = self.connect("127.0.0.1");
        self.client_sends(k, STOMP.as_bytes());
        let connect = format!("CONNECT\naccept-version:1.2\nheart-beat:{heart_beat}\n\n\0");
        self.client_sends_frame(k, Opcode::Text, connect.as_bytes());
        assert!(
            self.texts(k)[0].starts_with("CONNECTED\n"),
            "{:?}",
            self.texts(k)
        );
        k
    }
}

#[test]
fn fan_out_reaches_every_subscriber_in_publish_order() {
    let mut net = Net::new(config(|_| {}));
    let clients: Vec<u32> = (0..3).map(|_| net.raw_client()).collect();
    for body in ["1", "2", "3"] {
        assert_eq!(net.publish("t", body), 3);
    }
    assert_eq!(net.publish("other", "x"), 0);
    for k in clients {
        assert_eq!(net.texts(k), ["1", "2", "3"]);
    }
    assert_eq!(net.counter(|s| &s.messages_out), 9);
}

#[test]
fn a_client_that_does_not_read_loses_its_oldest_messages() {
    let mut net = Net::new(config(|c| c.limits.send_queue = 4));
    let slow = net.raw_client();
    let fast = net.raw_client();
    net.stall(slow);
    for i in 1..=10 {
        net.publish("t", &i.to_string());
    }
    // One send in flight, four queued; each later publish pushed the oldest queued one out.
    assert_eq!(net.counter(|s| &s.dropped), 5);
    assert_eq!(net.texts(fast).len(), 10);
    net.resume(slow);
    assert_eq!(net.texts(slow), ["1", "7", "8", "9", "10"]);
    assert!(!net.shut.contains(&slow));
}

#[test]
fn with_the_close_policy_a_client_that_does_not_read_gets_1008() {
    let mut net = Net::new(config(|c| {
        c.limits.send_queue = 2;
        c.limits.slow_consumer = crate::config::SlowPolicy::Close;
    }));
    let slow = net.raw_client();
    net.stall(slow);
    for i in 1..=5 {
        net.publish("t", &i.to_string());
    }
    assert_eq!(net.counter(|s| &s.slow_closed), 1);
    net.resume(slow);
    // The message in flight, then the close: the queue behind it was dropped.
    assert_eq!(net.texts(slow), ["1"]);
    assert_eq!(net.close_of(slow).unwrap().0, CloseError::POLICY);
    // The client answers the close: our side is finished, lingering until its FIN.
    net.client_sends(
        slow,
        &encode_masked(Opcode::Close, true, &1008u16.to_be_bytes(), [1, 2, 3, 4]),
    );
    assert!(net.shut_write.contains(&slow));
    assert!(!net.freed.contains(&slow));
    net.client_fin(slow);
    assert!(net.freed.contains(&slow));
    assert_eq!(net.core.connections(), 0);
}

#[test]
fn a_close_waits_for_what_is_queued_before_shutting_down_writing() {
    let mut net = Net::new(config(|_| {}));
    let k = net.raw_client();
    net.stall(k);
    net.publish("t", "a");
    net.publish("t", "b");
    // A protocol violation (an unmasked frame) closes the connection...
    net.client_sends(k, b"\x81\x01x");
    assert_eq!(net.counter(|s| &s.protocol_errors), 1);
    // ...but not before the messages ahead of the close frame are written.
    assert!(!net.shut_write.contains(&k));
    net.resume(k);
    assert_eq!(net.texts(k), ["a", "b"]);
    assert_eq!(net.close_of(k).unwrap().0, 1002);
    assert!(net.shut_write.contains(&k));
    // Lingering: input is still read (and ignored) until the peer's FIN, or the close timeout.
    assert!(!net.freed.contains(&k));
    net.advance(2100, false);
    assert!(net.shut.contains(&k) && net.freed.contains(&k));
}

#[test]
fn an_unanswered_close_is_dropped_after_the_close_timeout() {
    let mut net = Net::new(config(|c| c.limits.close_timeout_ms = 500));
    let k = net.raw_client();
    net.core.close_session(k, CloseError::POLICY, "bye");
    net.pump();
    assert_eq!(net.close_of(k), Some((CloseError::POLICY, "bye".into())));
    net.advance(400, false);
    assert!(!net.shut.contains(&k));
    net.advance(200, false);
    assert!(net.shut.contains(&k) && net.freed.contains(&k));
}

#[test]
fn silent_stomp_clients_time_out_but_a_stalled_shard_forgives() {
    let mut net = Net::new(config(|c| {
        c.stomp.heartbeat_send_ms = 1000;
        c.stomp.heartbeat_receive_ms = 1000;
    }));
    let k = net.stomp_client("1000,1000");
    // The shard itself stalls for 5 s: nobody is blamed for the silence it caused.
    net.advance(5000, true);
    assert!(net.close_of(k).is_none());
    // Beats go out while the client stays silent; after two periods it is closed.
    net.advance(2500, false);
    let texts = net.texts(k);
    assert!(texts.iter().any(|t| t == "\n"), "server beats: {texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("ERROR\nmessage:heart-beat timeout")),
        "{texts:?}"
    );
    assert_eq!(net.close_of(k).unwrap().0, CloseError::POLICY);
    assert_eq!(net.counter(|s| &s.stomp_errors), 1);
}

#[test]
fn a_beating_stomp_client_stays() {
    let mut net = Net::new(config(|c| c.stomp.heartbeat_receive_ms = 1000));
    let k = net.stomp_client("1000,0");
    for _ in 0..10 {
        net.advance(900, false);
        net.client_sends_frame(k, Opcode::Text, b"\n");
    }
    assert!(net.close_of(k).is_none());
}

#[test]
fn stomp_without_connect_gets_an_error_at_its_deadline() {
    let mut net = Net::new(config(|c| c.limits.connect_timeout_ms = 3000));
    let k = net.connect("127.0.0.1");
    net.client_sends(k, STOMP.as_bytes());
    net.advance(2900, false);
    assert!(net.close_of(k).is_none());
    net.advance(200, false);
    assert!(net.texts(k)[0].starts_with("ERROR\nmessage:no CONNECT within 3000 ms"));
    assert_eq!(net.close_of(k).unwrap().0, CloseError::POLICY);
    assert_eq!(net.counter(|s| &s.connect_timeouts), 1);
}

#[test]
fn an_upgrade_that_never_completes_gets_408() {
    let mut net = Net::new(config(|c| c.limits.handshake_timeout_ms = 1000));
    let k = net.connect("127.0.0.1");
    net.client_sends(k, &RAW.as_bytes()[..20]);
    net.advance(1100, false);
    assert!(
        net.received(k).0.starts_with("HTTP/1.1 408"),
        "{:?}",
        net.received(k).0
    );
    assert_eq!(net.counter(|s| &s.handshake_timeouts), 1);
}

#[test]
fn a_silent_raw_client_is_pinged_then_closed() {
    let mut net = Net::new(config(|c| c.limits.ping_interval_ms = 1000));
    let quiet = net.raw_client();
    let answers = net.raw_client();
    // The upgrade itself counts as heard; the first silent period earns a ping.
    net.advance(1000, false);
    assert!(net.received(quiet).1.is_empty());
    net.advance(1000, false);
    assert_eq!(net.received(quiet).1.last().unwrap().0, Opcode::Ping);
    net.client_sends_frame(answers, Opcode::Pong, b"");
    net.advance(1000, false);
    assert_eq!(
        net.close_of(quiet).unwrap(),
        (CloseError::GOING_AWAY, "ping timeout".into())
    );
    assert!(net.close_of(answers).is_none());
    assert_eq!(net.counter(|s| &s.ping_timeouts), 1);
}

#[test]
fn shutdown_closes_everyone_with_1001_and_stops_listening() {
    let mut net = Net::new(config(|c| c.server.shutdown_grace_ms = 1000));
    let open: Vec<u32> = (0..3).map(|_| net.raw_client()).collect();
    let upgrading = net.connect("127.0.0.1");
    net.core.command(Command::Shutdown);
    net.pump();
    assert!(net.listener_closed);
    for &k in &open {
        assert_eq!(
            net.close_of(k).unwrap(),
            (CloseError::GOING_AWAY, "server shutting down".into())
        );
    }
    assert!(net.received(upgrading).0.starts_with("HTTP/1.1 503"));
    assert!(!net.core.finished());
    // Two answer and leave; the grace period ends the rest.
    for &k in &open[..2] {
        net.client_sends(
            k,
            &encode_masked(Opcode::Close, true, &1001u16.to_be_bytes(), [1, 2, 3, 4]),
        );
        net.client_fin(k);
    }
    assert!(!net.core.finished());
    net.advance(1000, false);
    assert!(net.core.finished());
    // A connection accepted during shutdown is turned away at once.
    let late = net.connect("127.0.0.1");
    assert!(net.received(late).0.starts_with("HTTP/1.1 503"));
}

#[test]
fn limits_at_accept_answer_503_and_429() {
    let mut net = Net::new(config(|c| {
        c.server.max_connections = 3;
        c.limits.max_pending_per_ip = 2;
    }));
    let a = net.connect("127.0.0.2");
    let _b = net.connect("127.0.0.2");
    let c = net.connect("127.0.0.2");
    let answer = String::from_utf8_lossy(&net.wire[&c]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("still authenticating"), "{answer}");
    net.client_fin(c);
    assert!(net.freed.contains(&c));
    // Authenticating frees a place for the address.
    net.client_sends(a, RAW.as_bytes());
    let d = net.connect("127.0.0.2");
    assert!(net.received(d).0.is_empty(), "d is waiting for its upgrade");
    // Three open (a, b, d): the server is full for everyone.
    let e = net.connect("127.0.0.3");
    assert!(net.received(e).0.starts_with("HTTP/1.1 503"));
    assert_eq!(net.counter(|s| &s.rejected), 2);
}

#[test]
fn a_client_send_becomes_a_publish_for_the_hub() {
    let mut net = Net::new(config(|c| {
        c.projects.insert(
            "default".into(),
            crate::config::Project {
                client_publish: true,
                ..Default::default()
            },
        );
    }));
    let k = net.stomp_client("0,0");
    net.client_sends_frame(k, Opcode::Text, b"SEND\ndestination:/topic/t\n\nhi\0");
    assert_eq!(net.published.len(), 1);
    assert_eq!(&net.published[0].body[..], b"hi");
}

#[test]
fn recv_without_buffers_is_rearmed_after_the_batch() {
    let mut net = Net::new(config(|_| {}));
    let k = net.raw_client();
    assert!(net.recv_armed.remove(&k));
    net.core.received(
        k,
        Err(io::Error::from_raw_os_error(libc::ENOBUFS)),
        false,
        &mut [],
    );
    net.pump();
    assert!(!net.recv_armed.contains(&k));
    net.core.batch_done();
    net.pump();
    assert!(net.recv_armed.contains(&k));
}

mod access;
mod admission;
mod handover;
mod node;
mod sockjs;

#[test]
fn a_user_beyond_max_sessions_per_user_is_refused_until_one_closes() {
    let mut net = Net::new(config(|c| c.limits.max_sessions_per_user = 2));
    let connect = |net: &mut Net, user: &str| {
        let k = net.connect("127.0.0.1");
        net.client_sends(k, STOMP.as_bytes());
        let f = format!("CONNECT\naccept-version:1.2\nlogin:{user}\nheart-beat:0,0\n\n\0");
        net.client_sends_frame(k, Opcode::Text, f.as_bytes());
        k
    };
    let a = connect(&mut net, "alice");
    let b = connect(&mut net, "alice");
    let c = connect(&mut net, "alice");
    assert!(net.texts(a)[0].starts_with("CONNECTED\n"));
    assert!(net.texts(b)[0].starts_with("CONNECTED\n"));
    let refused = net.texts(c);
    assert!(
        refused[0].starts_with("ERROR\nmessage:too many sessions\n"),
        "{refused:?}"
    );
    assert_eq!(refused.len(), 1, "no CONNECTED before or after it");
    assert_eq!(net.close_of(c).unwrap().0, CloseError::POLICY);
    // Another user is not affected; once one of alice's closes, she may connect again.
    let d = connect(&mut net, "bob");
    assert!(net.texts(d)[0].starts_with("CONNECTED\n"));
    net.client_fin(a);
    net.advance(6000, false);
    let e = connect(&mut net, "alice");
    assert!(
        net.texts(e)[0].starts_with("CONNECTED\n"),
        "{:?}",
        net.texts(e)
    );
}
