//! Shedding at accept, on virtual time: beyond `max_handshakes_per_s`, or (0) beyond what the
//! shard can finish within `handshake_timeout_ms`, a new connection is answered at once with
//! 503 and a `Retry-After`, before a byte of its request is read, and lingers out as any
//! refusal does; connections already taken on are not disturbed.

use super::*;

fn retry_after(answer: &str) -> Option<u64> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn beyond_the_rate_a_connection_gets_503_and_a_hint_before_it_speaks() {
    let mut net = Net::new(config(|c| c.limits.max_handshakes_per_s = 10));
    let keys: Vec<u32> = (0..15).map(|_| net.connect("127.0.0.1")).collect();
    let (taken, shed) = keys.split_at(10);
    for &k in taken {
        assert!(net.received(k).0.is_empty(), "{k} waits for its request");
    }
    for &k in shed {
        let answer = net.received(k).0;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let hint = retry_after(&answer).expect("a Retry-After");
        assert!((1..=60).contains(&hint), "{hint}");
        assert!(answer.contains("server busy"), "{answer}");
        assert!(net.shut_write.contains(&k), "our side is done");
        net.client_fin(k);
        assert!(net.freed.contains(&k));
    }
    assert_eq!(net.counter(|s| &s.shed), 5);
    // Those taken on finish as usual.
    net.client_sends(taken[0], RAW.as_bytes());
    assert!(net.received(taken[0]).0.starts_with("HTTP/1.1 101"));
    // A second on, the bucket holds a second's worth again.
    net.advance(1000, false);
    let k = net.connect("127.0.0.1");
    assert!(net.received(k).0.is_empty());
}

#[test]
fn automatically_a_shard_sheds_what_it_cannot_finish_in_time() {
    // 100 ms to finish in at the assumed 2,000/s: 200 unfinished at most.
    let mut net = Net::new(config(|c| c.limits.handshake_timeout_ms = 100));
    let keys: Vec<u32> = (0..250).map(|_| net.connect("127.0.0.1")).collect();
    let shed = |net: &Net, k: u32| net.received(k).0.starts_with("HTTP/1.1 503");
    assert!(keys[..200].iter().all(|&k| !shed(&net, k)));
    assert!(keys[200..].iter().all(|&k| shed(&net, k)));
    assert!(retry_after(&net.received(keys[200]).0).is_some());
    // A STOMP session is unfinished until CONNECTED; a raw one until its upgrade.
    net.client_sends(keys[0], STOMP.as_bytes());
    let k = net.connect("127.0.0.1");
    assert!(
        shed(&net, k),
        "an upgraded STOMP session still owes its CONNECT"
    );
    net.client_sends_frame(keys[0], Opcode::Text, b"CONNECT\naccept-version:1.2\n\n\0");
    net.client_sends(keys[1], RAW.as_bytes());
    let a = net.connect("127.0.0.1");
    let b = net.connect("127.0.0.1");
    assert!(!shed(&net, a) && !shed(&net, b), "two finished, two taken");
    assert_eq!(net.counter(|s| &s.shed), 51);
}
