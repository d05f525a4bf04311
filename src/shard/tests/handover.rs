//! A connection leaves one shard as plain data and goes on in another (on another clock, as a
//! successor process's shard would be): subscriptions, heart-beats and what it says next.

use super::*;
use crate::shard::handover::Moving;
use ringcast_proto::handover::NotMovable;

impl Net {
    /// The texts client `key` received since it arrived here (a moved connection's wire
    /// holds frames only, no HTTP answer).
    fn frames_here(&self, key: u32) -> Vec<String> {
        let mut rest = self.wire.get(&key).map_or(&[][..], |v| v);
        let mut out = Vec::new();
        while let Ok(Some(f)) = decode_from_server(rest) {
            if f.opcode == Opcode::Text {
                out.push(String::from_utf8_lossy(&rest[f.payload.clone()]).into_owned());
            }
            rest = &rest[f.len..];
        }
        out
    }

    /// Files `m` here, as the driver would with the socket it was handed.
    fn take_in(&mut self, m: Moving) -> u32 {
        let key = self.core.import(m).unwrap();
        self.wire.remove(&key);
        self.pump();
        key
    }
}

fn beats() -> Arc<Context> {
    config(|c| {
        c.stomp.heartbeat_send_ms = 1000;
        c.stomp.heartbeat_receive_ms = 1000;
    })
}

#[test]
fn a_stomp_session_moves_and_keeps_its_subscriptions_and_beats() {
    let mut a = Net::new(beats());
    let k = a.stomp_client("1000,1000");
    let sub = "SUBSCRIBE\nid:s1\ndestination:/topic/t\n\n\0";
    a.client_sends_frame(k, Opcode::Text, sub.as_bytes());
    assert_eq!(a.publish("t", "before"), 1);
    a.advance(300, false);
    let moving = a.core.export(k).unwrap();
    let t = Dest::Topic {
        project: "default".into(),
        topic: "t".into(),
    };
    assert_eq!(moving.dests, [t.key()]);

    // Another shard, whose clock reads something else entirely.
    let mut b = Net::new(beats());
    b.advance(7000, true);
    let kb = b.take_in(moving.clone());
    assert_eq!(
        b.core.export(kb).unwrap(),
        moving,
        "nothing changed on the way"
    );
    assert_eq!(b.publish("t", "after"), 1);
    let got = b.frames_here(kb);
    assert!(
        got[0].starts_with("MESSAGE\n") && got[0].contains("subscription:s1\n"),
        "{got:?}"
    );
    assert!(got[0].ends_with("after\0"));
    // Its beats go on from where they were: out within a period, and a silent client is
    // still found out after two.
    b.advance(1000, false);
    assert!(
        b.frames_here(kb).iter().any(|t| t == "\n"),
        "{:?}",
        b.frames_here(kb)
    );
    b.advance(1500, false);
    assert!(
        b.frames_here(kb)
            .iter()
            .any(|t| t.starts_with("ERROR\nmessage:heart-beat timeout")),
        "{:?}",
        b.frames_here(kb)
    );
}

#[test]
fn a_raw_session_moves_with_its_topics_and_answers_pings_there() {
    let mut a = Net::new(config(|_| {}));
    let k = a.raw_client();
    let moving = a.core.export(k).unwrap();
    let mut b = Net::new(config(|_| {}));
    let kb = b.take_in(moving);
    assert_eq!(b.publish("t", "hi"), 1);
    assert_eq!(b.frames_here(kb), ["hi"]);
    // The client's ping is answered by its new shard.
    b.client_sends_frame(kb, Opcode::Ping, b"p");
    let wire = b.wire[&kb].clone();
    assert!(wire.windows(3).any(|w| w == b"\x8a\x01p"), "a pong");
    assert_eq!(b.counter(|s| &s.connections), 1);
}

#[test]
fn a_connection_with_a_send_in_flight_waits_until_it_completes() {
    let mut a = Net::new(config(|_| {}));
    let k = a.raw_client();
    a.stall(k);
    a.publish("t", "1");
    assert_eq!(a.core.export(k).unwrap_err(), NotMovable::Sending);
    a.resume(k);
    assert!(a.core.export(k).is_ok());
    let h = a.connect("127.0.0.1");
    assert_eq!(a.core.export(h).unwrap_err(), NotMovable::Handshake);
}

#[test]
fn a_frozen_shard_keeps_what_it_could_not_send_or_read_for_the_successor() {
    let publishing = || {
        config(|c| {
            c.projects.insert(
                "default".into(),
                crate::config::Project {
                    client_publish: true,
                    ..Default::default()
                },
            );
        })
    };
    let mut a = Net::new(publishing());
    let k = a.stomp_client("0,0");
    let sub = "SUBSCRIBE\nid:s1\ndestination:/topic/t\n\n\0";
    a.client_sends_frame(k, Opcode::Text, sub.as_bytes());
    a.stall(k);
    assert_eq!(a.publish("t", "in flight"), 1);
    a.core.freeze();
    // The driver cancels everything: the recv ends without a shutdown, the stalled send
    // comes back with nothing written.
    assert!(a.recv_armed.remove(&k));
    a.core.received(
        k,
        Err(std::io::Error::from_raw_os_error(libc::ECANCELED)),
        false,
        &mut [],
    );
    let (buf, offset) = a.held.remove(&k).unwrap();
    a.core.sent(
        k,
        Err(std::io::Error::from_raw_os_error(libc::ECANCELED)),
        buf,
        offset,
    );
    // What still arrives is kept, not acted on: no publish can be taken now.
    assert_eq!(a.publish("t", "queued"), 1);
    let send = encode_masked(
        Opcode::Text,
        true,
        b"SEND\ndestination:/topic/t\n\nfrom the client\0",
        [1, 2, 3, 4],
    );
    let mut data = send.clone();
    a.core.received(k, Ok(data.len()), false, &mut data);
    a.pump();
    assert!(a.published.is_empty() && !a.shut.contains(&k));
    assert!(
        a.held.is_empty() && a.recv_armed.is_empty(),
        "frozen: no I/O started"
    );

    let moving = a.core.export(k).unwrap();
    assert_eq!(moving.queue.len(), 2);
    assert_eq!(moving.unread, send);
    let mut b = Net::new(publishing());
    let kb = b.take_in(moving);
    let got = b.frames_here(kb);
    assert!(
        got[0].ends_with("in flight\0") && got[1].ends_with("queued\0"),
        "{got:?}"
    );
    assert_eq!(b.published.len(), 1, "the successor read the SEND");
    assert_eq!(&b.published[0].body[..], b"from the client");
}
