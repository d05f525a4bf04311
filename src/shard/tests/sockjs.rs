//! SockJS sessions over HTTP in one shard, on virtual time: a session outlives its requests,
//! takes `xhr_send` messages, queues frames until a request receives them, refuses a second
//! receiver, and expires `disconnect_delay_ms` after its last receiver left.

use super::*;

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Net {
    /// What client `key` received, as text (HTTP answers, not WebSocket frames).
    fn text(&self, key: u32) -> String {
        String::from_utf8_lossy(self.wire.get(&key).map_or(&[][..], |v| v)).into_owned()
    }

    /// Forgets what client `key` received so far.
    fn clear(&mut self, key: u32) {
        self.wire.remove(&key);
    }
}

/// The body of the last answer on `text` (what follows its last blank line).
fn last_body(text: &str) -> &str {
    text.rsplit("\r\n\r\n").next().unwrap_or("")
}

#[test]
fn polling_carries_a_stomp_session_across_requests() {
    let mut net = Net::new(config(|_| {}));
    let poll = net.connect("127.0.0.1");
    net.client_sends(poll, &post("/ws/000/s1/xhr", ""));
    assert!(net.text(poll).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(last_body(&net.text(poll)), "o\n");
    assert_eq!(net.counter(|s| &s.sockjs_sessions), 1);

    // A second, kept-alive connection sends; the poll connection asks again and waits.
    let send = net.connect("127.0.0.1");
    let connect = r#"["CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\u0000"]"#;
    net.client_sends(send, &post("/ws/000/s1/xhr_send", connect));
    assert!(net.text(send).starts_with("HTTP/1.1 204 No Content\r\n"));
    net.clear(poll);
    net.client_sends(poll, &post("/ws/000/s1/xhr", ""));
    assert!(last_body(&net.text(poll)).starts_with(r#"a["CONNECTED\n"#));

    let sub = r#"["SUBSCRIBE\nid:0\ndestination:/topic/t\n\n\u0000"]"#;
    net.clear(send);
    net.client_sends(send, &post("/ws/000/s1/xhr_send", sub));
    assert!(net.text(send).starts_with("HTTP/1.1 204"));
    // Published while nobody polls: queued, and both land in the next poll as one array.
    assert_eq!(net.publish("t", "one"), 1);
    assert_eq!(net.publish("t", "two"), 1);
    net.clear(poll);
    net.client_sends(poll, &post("/ws/000/s1/xhr", ""));
    let body = last_body(&net.text(poll)).to_string();
    assert!(body.starts_with(r#"a["MESSAGE\n"#), "{body}");
    assert!(body.contains(r#"\n\none\u0000","MESSAGE\n"#), "{body}");
    assert!(body.ends_with("\\n\\ntwo\\u0000\"]\n"), "{body}");
}

#[test]
fn a_second_receiver_is_refused_and_the_session_expires_without_one() {
    let mut net = Net::new(config(|c| c.sockjs.disconnect_delay_ms = 5000));
    let a = net.connect("127.0.0.1");
    let stream = "POST /ws/1/s2/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    net.client_sends(a, stream.as_bytes());
    let text = net.text(a);
    assert!(text.contains("Transfer-Encoding: chunked\r\n"));
    assert!(text.ends_with("2\r\no\n\r\n"), "{text:?}");
    let b = net.connect("127.0.0.1");
    net.client_sends(b, stream.as_bytes());
    // Held a tick (the first request might be closing), then refused.
    assert!(!net.text(b).contains("2010"));
    net.advance(200, false);
    assert!(
        net.text(b)
            .contains("c[2010,\"Another connection still open\"]\n"),
        "{}",
        net.text(b)
    );
    // The streaming client goes away: five quiet seconds later the session is gone.
    net.client_fin(a);
    net.advance(4000, false);
    assert_eq!(net.counter(|s| &s.sockjs_sessions), 1);
    net.advance(1200, false);
    assert_eq!(net.counter(|s| &s.sockjs_sessions), 0);
    assert_eq!(net.counter(|s| &s.sockjs_expired), 1);
    let c = net.connect("127.0.0.1");
    net.client_sends(c, &post("/ws/1/s2/xhr_send", r#"["x"]"#));
    assert!(net.text(c).starts_with("HTTP/1.1 404 Not Found\r\n"));
}

#[test]
fn a_receiver_cut_off_interrupts_its_session() {
    let mut net = Net::new(config(|_| {}));
    let a = net.connect("127.0.0.1");
    let stream = "POST /ws/1/s9/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    net.client_sends(a, stream.as_bytes());
    assert!(net.text(a).ends_with("2\r\no\n\r\n"));
    // Cut off (not ended by the server), and the next request comes at once: it hears why.
    net.client_fin(a);
    let b = net.connect("127.0.0.1");
    net.client_sends(b, &post("/ws/1/s9/xhr", ""));
    net.advance(200, false);
    assert!(
        net.text(b)
            .ends_with("c[1002,\"Connection interrupted\"]\n"),
        "{}",
        net.text(b)
    );
}

#[test]
fn bad_sends_get_the_protocols_answers() {
    let mut net = Net::new(config(|c| c.limits.max_message_bytes = 1000));
    let poll = net.connect("127.0.0.1");
    net.client_sends(poll, &post("/ws/000/s3/xhr", ""));
    for (body, status, reason) in [
        ("", "500", "Payload expected."),
        ("[\"x", "500", "Broken JSON encoding."),
    ] {
        let k = net.connect("127.0.0.1");
        net.client_sends(k, &post("/ws/000/s3/xhr_send", body));
        let t = net.text(k);
        assert!(t.starts_with(&format!("HTTP/1.1 {status} ")), "{t}");
        assert!(t.ends_with(reason), "{t}");
    }
    let k = net.connect("127.0.0.1");
    net.client_sends(k, &post("/ws/000/s3/xhr_send", &"x".repeat(2000)));
    assert!(net.text(k).starts_with("HTTP/1.1 413 "), "{}", net.text(k));
    // The session is unharmed: its STOMP side still answers.
    let k = net.connect("127.0.0.1");
    let connect = r#"["CONNECT\naccept-version:1.2\n\n\u0000"]"#;
    net.client_sends(k, &post("/ws/000/s3/xhr_send", connect));
    assert!(net.text(k).starts_with("HTTP/1.1 204"));
    net.clear(poll);
    net.client_sends(poll, &post("/ws/000/s3/xhr", ""));
    assert!(last_body(&net.text(poll)).starts_with(r#"a["CONNECTED\n"#));
}
