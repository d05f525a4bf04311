use super::*;
use crate::auth::Auth;
use crate::ws::frame::{Opcode, encode_masked};

const UPGRADE: &str = "GET /ws?topic=a&topic=b&project=P HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn ctx() -> Context {
    let mut cfg = Config::embedded();
    cfg.server.echo = true;
    let auth = Auth::from_config(&cfg, crate::auth::test_clock()).unwrap();
    Context::new(cfg, auth)
}

fn feed(s: &mut Session, bytes: &[u8]) -> Outputs {
    let mut out = Outputs::default();
    s.on_bytes(&mut bytes.to_vec(), 0, &ctx(), &mut out);
    out
}

fn sent(out: &Outputs) -> Vec<Vec<u8>> {
    out.actions
        .iter()
        .filter_map(|o| match o {
            Action::Send(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect()
}

fn topic(t: &str) -> Action {
    Action::Subscribe(Dest::Topic {
        project: "P".into(),
        topic: t.into(),
    })
}

#[test]
fn raw_upgrade_subscribes_and_frames_follow_in_the_same_read() {
    let mut s = Session::default();
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend(encode_masked(Opcode::Text, true, b"hi", [1, 2, 3, 4]));
    let out = feed(&mut s, &bytes);
    assert!(out.events.contains(&Event::Upgraded));
    assert!(out.actions.contains(&topic("a")) && out.actions.contains(&topic("b")));
    assert!(out.events.contains(&Event::Received));
    assert!(s.is_open());
    assert_eq!(s.buffered(), 0);
}

#[test]
fn byte_at_a_time_handshake_and_frame() {
    let mut s = Session::default();
    let mut all = Outputs::default();
    for b in UPGRADE.bytes() {
        let o = feed(&mut s, &[b]);
        all.actions.extend(o.actions);
        all.events.extend(o.events);
    }
    assert!(all.events.contains(&Event::Upgraded));
    for b in encode_masked(Opcode::Ping, true, b"p", [5, 6, 7, 8]) {
        let o = feed(&mut s, &[b]);
        all.actions.extend(o.actions);
        all.events.extend(o.events);
    }
    assert_eq!(sent(&all).last().unwrap(), b"\x8a\x01p");
    assert_eq!(s.buffered(), 0, "an idle connection holds no buffer");
}

#[test]
fn echo_mode_echoes() {
    let mut s = Session::default();
    feed(&mut s, UPGRADE.replace("/ws?", "/echo?").as_bytes());
    let out = feed(&mut s, &encode_masked(Opcode::Binary, true, b"xyz", [9; 4]));
    assert_eq!(sent(&out), [b"\x82\x03xyz".to_vec()]);
}

#[test]
fn bad_requests_get_http_errors() {
    for (req, status) in [
        (UPGRADE.replace("/ws?", "/nope?"), "404"),
        (UPGRADE.replace("topic=b", "topic="), "400"),
    ] {
        let mut s = Session::default();
        let out = feed(&mut s, req.as_bytes());
        let resp = String::from_utf8(sent(&out)[0].clone()).unwrap();
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
        assert_eq!(out.actions.last(), Some(&Action::Close));
    }
}

#[test]
fn protocol_errors_close_with_codes() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"\x81\x02hi".to_vec(), 1002),
        (encode_masked(Opcode::Text, true, b"\xff", [1; 4]), 1007),
        (
            encode_masked(Opcode::Binary, true, &[0; 70000], [1; 4]),
            1009,
        ),
    ];
    for (bytes, code) in cases {
        let mut s = Session::default();
        feed(&mut s, UPGRADE.as_bytes());
        let out = feed(&mut s, &bytes);
        let close = &sent(&out)[0];
        assert_eq!(close[0], 0x88);
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), code);
        assert!(out.events.contains(&Event::ProtocolError));
        // Nothing more is read after a failure.
        assert!(feed(&mut s, &encode_masked(Opcode::Ping, true, b"", [1; 4])).is_empty());
    }
}

#[test]
fn close_handshake_both_ways() {
    // Client-initiated: we echo the code and close.
    let mut s = Session::default();
    feed(&mut s, UPGRADE.as_bytes());
    let out = feed(
        &mut s,
        &encode_masked(Opcode::Close, true, b"\x03\xe8", [1; 4]),
    );
    assert_eq!(sent(&out), [b"\x88\x02\x03\xe8".to_vec()]);
    assert_eq!(out.actions.last(), Some(&Action::Close));
    // Server-initiated: we wait for the peer's close, ignoring data meanwhile.
    let mut s = Session::default();
    feed(&mut s, UPGRADE.as_bytes());
    let mut out = Outputs::default();
    s.close(1001, "going away", &mut out);
    assert!(out.actions.contains(&Action::AwaitClose));
    assert!(feed(&mut s, &encode_masked(Opcode::Text, true, b"late", [1; 4])).is_empty());
    let out = feed(
        &mut s,
        &encode_masked(Opcode::Close, true, b"\x03\xe9", [1; 4]),
    );
    assert_eq!(out.actions, [Action::Close]);
}

#[test]
fn stomp_subprotocol_selects_stomp_mode() {
    let mut s = Session::default();
    let req = UPGRADE.replace(
        "Host: x\r\n",
        "Host: x\r\nSec-WebSocket-Protocol: v10.stomp, v12.stomp\r\n",
    );
    let out = feed(&mut s, req.as_bytes());
    let resp = String::from_utf8(sent(&out)[0].clone()).unwrap();
    assert!(
        resp.contains("Sec-WebSocket-Protocol: v12.stomp\r\n"),
        "{resp}"
    );
    assert!(s.stomp().is_some());
    let connect = b"CONNECT\naccept-version:1.2\nhost:x\nlogin:alice\nheart-beat:1000,0\n\n\0";
    let out = feed(&mut s, &encode_masked(Opcode::Text, true, connect, [3; 4]));
    assert!(out.events.contains(&Event::Connected));
    let reply = String::from_utf8(sent(&out)[0][2..].to_vec()).unwrap();
    assert!(reply.starts_with("CONNECTED\nversion:1.2\n"), "{reply}");
    assert!(reply.contains("user-name:alice\n"));
    // A violation: ERROR frame, then our close frame, and nothing more is read.
    let out = feed(
        &mut s,
        &encode_masked(Opcode::Text, true, b"BOGUS\n\n\0", [3; 4]),
    );
    let frames = sent(&out);
    assert!(String::from_utf8_lossy(&frames[0]).contains("message:unknown command"));
    assert_eq!(frames[1][0], 0x88);
    assert!(out.actions.contains(&Action::AwaitClose));
}

#[test]
fn a_stomp_session_moves_as_plain_data_mid_message_and_goes_on() {
    let mut s = Session::default();
    let req = UPGRADE.replace(
        "Host: x\r\n",
        "Host: x\r\nSec-WebSocket-Protocol: v12.stomp\r\n",
    );
    feed(&mut s, req.as_bytes());
    let connect = b"CONNECT\naccept-version:1.2\nlogin:alice\nheart-beat:1000,2000\n\n\0";
    feed(&mut s, &encode_masked(Opcode::Text, true, connect, [3; 4]));
    let sub = b"SUBSCRIBE\nid:s1\ndestination:/topic/news\nreceipt:r1\n\n\0";
    feed(&mut s, &encode_masked(Opcode::Text, true, sub, [3; 4]));
    // Half a fragmented SUBSCRIBE, and part of its last fragment, are in flight.
    let first = b"SUBSCRIBE\nid:s2\ndestination:/topic/x\n";
    feed(&mut s, &encode_masked(Opcode::Text, false, first, [1; 4]));
    let rest = encode_masked(Opcode::Continuation, true, b"receipt:r2\n\n\0", [2; 4]);
    feed(&mut s, &rest[..3]);

    let state = s.export(5).unwrap();
    let crate::handover::Mode::Stomp(stomp) = &state.mode else {
        panic!("{state:?}")
    };
    assert!(stomp.connected);
    assert_eq!(stomp.subs, [("s1".to_string(), "/topic/news".to_string())]);
    assert_ne!(stomp.heartbeat, (0, 0), "negotiated beats travel");
    assert!(state.fragment.is_some() && state.pending.len() == 3);
    let json = serde_json::to_string(&state).unwrap();
    let back: crate::handover::Connection = serde_json::from_str(&json).unwrap();
    let mut moved = Session::import(back, 5, &ctx()).unwrap();
    assert_eq!(
        moved.export(5).unwrap(),
        state,
        "a round trip changes nothing"
    );

    // Both go on the same way with the rest of the frame.
    let (a, b) = (feed(&mut s, &rest[3..]), feed(&mut moved, &rest[3..]));
    assert_eq!(a.actions, b.actions);
    assert_eq!(a.events, b.events);
    assert!(String::from_utf8_lossy(&sent(&b)[0]).contains("receipt-id:r2"));
    let crate::handover::Mode::Stomp(after) = moved.export(6).unwrap().mode else {
        panic!()
    };
    assert_eq!(after.subs.len(), 2);
}

#[test]
fn what_cannot_move_says_why() {
    use crate::handover::NotMovable;
    let mut s = Session::default();
    assert_eq!(s.export(0).unwrap_err(), NotMovable::Handshake);
    feed(&mut s, UPGRADE.as_bytes());
    assert!(s.export(0).is_ok());
    let mut out = Outputs::default();
    s.close(1000, "bye", &mut out);
    assert_eq!(s.export(0).unwrap_err(), NotMovable::Closing);
}
