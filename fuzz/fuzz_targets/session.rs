//! Structure-aware: a whole connection (upgrade, then STOMP over WebSocket) driven by arbitrary
//! sequences of events: client frames of any opcode, raw bytes, heart-beat ticks and server
//! closes. The session must never panic, never write after closing, and keep its buffers
//! bounded.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringcast::endpoint::{Action, Context, Outputs, Session};
use ringcast::ws::frame::{Opcode, encode_masked};

#[derive(Arbitrary, Debug)]
enum Event {
    /// A STOMP frame built from parts, sent as one masked text message.
    Stomp {
        command: u8,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A WebSocket frame of any kind.
    Frame {
        opcode: u8,
        fin: bool,
        payload: Vec<u8>,
    },
    /// Bytes as they come.
    Raw(Vec<u8>),
    /// The heart-beat timer fires after this many ticks.
    Tick(u8),
    /// The server closes (shutdown, disconnect, slow consumer).
    ServerClose(u16),
    /// SUBSCRIBE / UNSUBSCRIBE with an arbitrary id (the record a subscription is kept in).
    Subscribe {
        id: String,
        topic: String,
    },
    Unsubscribe(String),
    /// SUBSCRIBE with an arbitrary `x-recover-since` position.
    Recover {
        id: String,
        topic: String,
        since: String,
    },
    /// CONNECT's deadline passes.
    ConnectTimeout,
}

const COMMANDS: [&str; 12] = [
    "CONNECT",
    "STOMP",
    "SEND",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "ACK",
    "NACK",
    "BEGIN",
    "DISCONNECT",
    "MESSAGE",
    "ERROR",
    "BOGUS",
];

fuzz_target!(|events: Vec<Event>| {
    let mut cfg = ringcast::config::Config::default();
    cfg.auth.enabled = false;
    cfg.projects.insert(
        "p".into(),
        ringcast::config::Project {
            jwt_secret: Some("s".into()),
            client_publish: true,
            history: Some(ringcast_proto::history::Config {
                topics: vec!["a*".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    cfg.stomp.max_frame_bytes = 2048;
    cfg.limits.max_message_bytes = 4096;
    let auth = ringcast::auth::Auth::from_config(&cfg, std::sync::Arc::new(|| 1_800_000_000)).unwrap();
    let ctx = Context::new(cfg, auth);
    let mut s = Session::default();
    let mut out = Outputs::default();
    let upgrade = b"GET /ws?project=p HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n";
    s.on_bytes(&mut upgrade.to_vec(), 0, &ctx, &mut out);
    let mut now = 0u64;
    let mut closed = false;
    for ev in events.into_iter().take(64) {
        out.clear();
        match ev {
            Event::Stomp {
                command,
                headers,
                body,
            } => {
                let mut f = COMMANDS[command as usize % COMMANDS.len()]
                    .as_bytes()
                    .to_vec();
                f.push(b'\n');
                for (k, v) in headers.iter().take(8) {
                    f.extend_from_slice(format!("{k}:{v}\n").as_bytes());
                }
                f.push(b'\n');
                f.extend_from_slice(&body);
                f.push(0);
                s.on_bytes(
                    &mut encode_masked(Opcode::Text, true, &f, [1, 2, 3, 4]),
                    now,
                    &ctx,
                    &mut out,
                );
            }
            Event::Frame {
                opcode,
                fin,
                payload,
            } => {
                let op = [
                    Opcode::Continuation,
                    Opcode::Text,
                    Opcode::Binary,
                    Opcode::Close,
                    Opcode::Ping,
                    Opcode::Pong,
                ][opcode as usize % 6];
                s.on_bytes(
                    &mut encode_masked(op, fin, &payload, [9, 8, 7, 6]),
                    now,
                    &ctx,
                    &mut out,
                );
            }
            Event::Raw(mut b) => s.on_bytes(&mut b, now, &ctx, &mut out),
            Event::Tick(t) => {
                now += u64::from(t);
                let _ = s.on_heartbeat(now, 100, t % 2 == 0, &mut out);
            }
            Event::ServerClose(code) => s.close(code, "fuzz", &mut out),
            Event::Subscribe { id, topic } => {
                let f = format!("SUBSCRIBE\nid:{id}\ndestination:/topic/{topic}\n\n\0");
                s.on_bytes(
                    &mut encode_masked(Opcode::Text, true, f.as_bytes(), [1, 2, 3, 4]),
                    now,
                    &ctx,
                    &mut out,
                );
            }
            Event::Recover { id, topic, since } => {
                let f = format!(
                    "SUBSCRIBE\nid:{id}\ndestination:/topic/{topic}\nx-recover-since:{since}\nreceipt:r\n\n\0"
                );
                s.on_bytes(
                    &mut encode_masked(Opcode::Text, true, f.as_bytes(), [1, 2, 3, 4]),
                    now,
                    &ctx,
                    &mut out,
                );
                // A recovery goes out only for a valid position on a topic with history.
                for a in &out.actions {
                    if let ringcast::endpoint::Action::Recover(r) = a {
                        assert!(r.written.starts_with("/topic/a"), "{r:?}");
                        assert!(
                            ringcast_proto::history::Position::parse(&format!(
                                "{}:{}",
                                r.since.epoch, r.since.offset
                            ))
                            .is_ok()
                        );
                    }
                }
            }
            Event::Unsubscribe(id) => {
                let f = format!("UNSUBSCRIBE\nid:{id}\n\n\0");
                s.on_bytes(
                    &mut encode_masked(Opcode::Text, true, f.as_bytes(), [1, 2, 3, 4]),
                    now,
                    &ctx,
                    &mut out,
                );
            }
            Event::ConnectTimeout => {
                let _ = s.connect_timeout(1000, &mut out);
            }
        }
        if let Some(st) = s.stomp() {
            // Every stored subscription is intact: a valid id, a destination it was given, and
            // never more of them than the limit (a broken record would escape the count).
            let subs: Vec<(&str, &str)> = st.subscriptions().collect();
            assert!(subs.len() <= ctx.cfg.limits.max_topics_per_session);
            for (id, dest) in &subs {
                assert!(ringcast::names::valid(id), "stored id {id:?}");
                assert!(dest.starts_with('/'), "stored destination {dest:?}");
            }
        }
        if closed {
            assert!(
                !out.actions.iter().any(|o| matches!(
                    o,
                    Action::Send(_) | Action::Publish { .. } | Action::Subscribe(_)
                )),
                "output after close: {out:?}"
            );
        }
        closed |= out.closes();
        assert!(s.buffered() <= 64 * 1024, "unbounded buffer");
    }
});
