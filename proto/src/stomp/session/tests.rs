use super::connect::negotiate_version;
use super::*;
use crate::auth::Auth;
use crate::config::{Config, Project};

fn ctx(auth: bool) -> Context {
    let mut cfg = Config::default();
    cfg.auth.enabled = auth;
    cfg.auth.user_claim = "userName".into();
    cfg.projects.insert(
        "fm".into(),
        Project {
            jwt_secret: Some("k".into()),
            client_publish: true,
            ..Default::default()
        },
    );
    cfg.projects.insert(
        "ro".into(),
        Project {
            jwt_secret: Some("k2".into()),
            ..Default::default()
        },
    );
    cfg.stomp.heartbeat_send_ms = 1000;
    cfg.stomp.heartbeat_receive_ms = 1000;
    let auth = Auth::from_config(&cfg, crate::auth::test_clock()).unwrap();
    Context::new(cfg, auth)
}

/// Feeds STOMP bytes; returns the STOMP text of every frame sent, and the other outputs.
fn feed(s: &mut Session, ctx: &Context, bytes: &[u8]) -> (Vec<String>, Vec<Output>) {
    let mut out = Vec::new();
    s.on_bytes(bytes, 0, ctx, &mut out);
    let mut frames = Vec::new();
    let mut rest = Vec::new();
    for o in out {
        match o {
            Output::Frame(b) => frames.push(String::from_utf8_lossy(&b).into_owned()),
            Output::HeartBeat => frames.push("\n".into()),
            o => rest.push(o),
        }
    }
    (frames, rest)
}

fn connected(ctx: &Context, project: &str, extra: &str) -> Session {
    let mut s = Session::new("default".into(), None, false);
    let token = ctx.auth.mint(project, "alice", 60).unwrap_or_default();
    let connect =
        format!("CONNECT\naccept-version:1.1,1.2\ntoken:{token}\nprojectId:{project}\n{extra}\n\0");
    let (f, o) = feed(&mut s, ctx, connect.as_bytes());
    assert!(f[0].starts_with("CONNECTED\nversion:1.2\n"), "{f:?}");
    assert!(o.contains(&Output::Connected));
    s
}

#[test]
fn connect_with_token_and_project() {
    let c = ctx(true);
    let s = connected(&c, "fm", "heart-beat:500,2000\n");
    assert_eq!(s.user(), Some("alice"));
    assert_eq!(s.project(), "fm");
    // Server 1000,1000 vs client 500,2000: we send every max(1000,2000), expect every max(500,1000).
    assert_eq!(s.heartbeat(), (2000, 1000));
}

#[test]
fn auth_failures_say_auth_fail() {
    let c = ctx(true);
    let fm_token = c.auth.mint("fm", "alice", 60).unwrap();
    for connect in [
        "CONNECT\naccept-version:1.2\nprojectId:fm\n\n\0".to_string(),
        "CONNECT\naccept-version:1.2\nprojectId:fm\ntoken:forged\n\n\0".to_string(),
        format!("CONNECT\naccept-version:1.2\nprojectId:ro\ntoken:{fm_token}\n\n\0"),
        format!("CONNECT\naccept-version:1.2\nprojectId:nope\ntoken:{fm_token}\n\n\0"),
    ] {
        let mut s = Session::new("default".into(), None, false);
        let (f, o) = feed(&mut s, &c, connect.as_bytes());
        assert!(f[0].starts_with("ERROR\nmessage:auth_fail\n"), "{f:?}");
        assert!(matches!(&o[0], Output::Refused(why) if why.contains("refused in project")));
        assert_eq!(
            o[1..],
            [Output::Close(CloseError::POLICY, "authentication failed")]
        );
        assert!(!s.is_connected());
    }
}

#[test]
fn upgrade_token_is_used_when_connect_has_none() {
    let c = ctx(true);
    let token = c.auth.mint("fm", "bob", 60).unwrap();
    let mut s = Session::new("fm".into(), Some(&token), false);
    let (f, _) = feed(&mut s, &c, b"STOMP\naccept-version:1.2\n\n\0");
    assert!(f[0].contains("user-name:bob"), "{f:?}");
}

#[test]
fn subscribe_unsubscribe_receipts_and_split_frames() {
    let c = ctx(true);
    let mut s = connected(&c, "fm", "");
    let sub = b"SUBSCRIBE\nid:sub-0\ndestination:/topic/news\nreceipt:r1\n\n\0SUBSCRIBE\nid:sub-1\ndestination:/user/queue/notice\n\n\0";
    // Split across two WebSocket messages at an awkward place.
    let (f1, o1) = feed(&mut s, &c, &sub[..20]);
    assert!(f1.is_empty() && o1.is_empty());
    let (f, o) = feed(&mut s, &c, &sub[20..]);
    assert_eq!(f, ["RECEIPT\nreceipt-id:r1\n\n\0"]);
    let topic = Dest::Topic {
        project: "fm".into(),
        topic: "news".into(),
    };
    let queue = Dest::User {
        project: "fm".into(),
        user: "alice".into(),
        queue: "notice".into(),
    };
    assert_eq!(
        o,
        [
            Output::Subscribe(topic.clone()),
            Output::Subscribe(queue.clone())
        ]
    );
    assert_eq!(
        s.matching(&topic).collect::<Vec<_>>(),
        [("sub-0", "/topic/news")]
    );
    // A second subscription to the same destination joins nothing new in the hub.
    let (_, o) = feed(
        &mut s,
        &c,
        b"SUBSCRIBE\nid:sub-2\ndestination:/topic/news\n\n\0",
    );
    assert!(o.is_empty());
    assert_eq!(s.matching(&topic).count(), 2);
    let (_, o) = feed(&mut s, &c, b"UNSUBSCRIBE\nid:sub-0\n\n\0");
    assert!(o.is_empty());
    let (_, o) = feed(&mut s, &c, b"UNSUBSCRIBE\nid:sub-2\n\n\0");
    assert_eq!(o, [Output::Unsubscribe(topic)]);
}

#[test]
fn malformed_frames_each_get_an_error() {
    let c = ctx(true);
    let cases: [(&[u8], &str); 7] = [
        (b"SUBSCRIBE\ndestination:/topic/a\n\n\0", "needs an id"),
        (b"SUBSCRIBE\nid:1\n\n\0", "needs a destination"),
        (
            b"SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\0",
            "unknown destination",
        ),
        (
            b"SEND\ndestination:/topic/a\n\n\0",
            "not allowed in project ro",
        ),
        (b"FROB\n\n\0", "unknown command"),
        (b"SEND\nk:\\x\n\n\0", "undefined escape"),
        (b"MESSAGE\n\n\0", "server frame"),
    ];
    for (bytes, msg) in cases {
        let mut s = connected(&c, "ro", "");
        let (f, o) = feed(&mut s, &c, bytes);
        assert!(
            f[0].starts_with("ERROR\n") && f[0].contains(msg),
            "{msg}: {f:?}"
        );
        assert!(matches!(o.last(), Some(Output::Close(..))));
    }
    let mut s = Session::new("default".into(), None, false);
    let (f, _) = feed(&mut s, &c, b"SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\0");
    assert!(f[0].contains("expected CONNECT"));
    let big = format!("SEND\nx:{}\n\n\0", "y".repeat(5000));
    let mut s = connected(&c, "fm", "");
    let (f, _) = feed(&mut s, &c, big.as_bytes());
    assert!(f[0].contains("header line over"), "{f:?}");
}

#[test]
fn send_publishes_when_allowed() {
    let c = ctx(true);
    let mut s = connected(&c, "fm", "");
    let (_, o) = feed(
        &mut s,
        &c,
        b"SEND\ndestination:/topic/chat\ncontent-type:text/plain\ncontent-length:2\n\nhi\0",
    );
    assert_eq!(
        o,
        [Output::Publish {
            dest: Dest::Topic {
                project: "fm".into(),
                topic: "chat".into()
            },
            body: Bytes::from_static(b"hi"),
            headers: vec![("content-type".into(), "text/plain".into())],
        }]
    );
}

#[test]
fn disconnect_with_receipt() {
    let c = ctx(true);
    let mut s = connected(&c, "fm", "");
    let (f, o) = feed(&mut s, &c, b"DISCONNECT\nreceipt:77\n\n\0");
    assert_eq!(f, ["RECEIPT\nreceipt-id:77\n\n\0"]);
    assert_eq!(o, [Output::Close(CloseError::NORMAL, "disconnected")]);
}

#[test]
fn heartbeats_go_out_when_idle_and_silence_closes() {
    let c = ctx(true);
    let mut s = connected(&c, "fm", "heart-beat:1000,1000\n");
    assert_eq!(s.heartbeat(), (1000, 1000));
    let mut out = Vec::new();
    // 100 ms ticks: a beat after 10 idle ticks; none if something was sent meanwhile.
    s.sent(5);
    assert!(s.on_heartbeat(10, 100, false, &mut out).is_some());
    assert!(out.is_empty());
    assert!(s.on_heartbeat(15, 100, false, &mut out).is_some());
    assert_eq!(out, [Output::HeartBeat]);
    // Client beats keep it alive; two silent periods close it.
    out.clear();
    s.on_bytes(b"\n", 18, &c, &mut out);
    assert!(s.on_heartbeat(30, 100, false, &mut out).is_some());
    // A stalled server does not hold its own lag against the client...
    assert!(s.on_heartbeat(38, 100, true, &mut out).is_some());
    // ...but once it is current again, two silent periods close the session.
    assert!(s.on_heartbeat(38, 100, false, &mut out).is_none());
    assert!(matches!(
        out.last(),
        Some(Output::Close(CloseError::POLICY, _))
    ));
}

#[test]
fn legacy_destinations_map_into_the_session_project() {
    let c = ctx(true);
    let token = c.auth.mint("fm", "alice", 60).unwrap();
    let mut s = Session::new("fm".into(), Some(&token), true);
    feed(&mut s, &c, b"CONNECT\naccept-version:1.2\n\n\0");
    let (_, o) = feed(
        &mut s,
        &c,
        b"SUBSCRIBE\nid:0\ndestination:/topic/fm/news\n\n\0",
    );
    assert_eq!(
        o,
        [Output::Subscribe(Dest::Topic {
            project: "fm".into(),
            topic: "news".into()
        })]
    );
    // Another project's prefix is just part of a topic name in this project.
    let (_, o) = feed(
        &mut s,
        &c,
        b"SUBSCRIBE\nid:1\ndestination:/topic/ro/news\n\n\0",
    );
    assert_eq!(
        o,
        [Output::Subscribe(Dest::Topic {
            project: "fm".into(),
            topic: "ro/news".into()
        })]
    );
}

#[test]
fn version_negotiation() {
    assert_eq!(negotiate_version(None), Some("1.0"));
    assert_eq!(negotiate_version(Some("1.0,1.1")), Some("1.1"));
    assert_eq!(negotiate_version(Some("2.0")), None);
}

#[test]
fn send_cannot_set_the_servers_headers() {
    let c = ctx(true);
    let mut s = connected(&c, "fm", "");
    let (_, o) = feed(
        &mut s,
        &c,
        b"SEND\ndestination:/topic/chat\nsubscription:sub-0\nmessage-id:forged\nack:client\nx-app:1\n\nhi\0",
    );
    let [Output::Publish { headers, .. }] = o.as_slice() else {
        panic!("{o:?}")
    };
    assert_eq!(headers, &[("x-app".to_string(), "1".to_string())]);
}

/// A subscription id with a NUL (escaped or not) or a control character is refused, and any
/// id that is accepted round-trips exactly: 20,000 SUBSCRIBE/UNSUBSCRIBE pairs leave nothing.
#[test]
fn subscription_ids_cannot_break_the_record() {
    let c = ctx(true);
    for (bad, why) in [
        ("a\0b", "NUL byte"),
        ("a\\nb", "subscription id"),
        ("a\tb", "subscription id"),
        ("", "subscription id"),
    ] {
        let mut s = connected(&c, "fm", "");
        let f = format!("SUBSCRIBE\nid:{bad}\ndestination:/topic/x\n\n\0");
        let (frames, o) = feed(&mut s, &c, f.as_bytes());
        assert!(
            frames[0].starts_with("ERROR\n") && frames[0].contains(why),
            "{bad:?}: {frames:?}"
        );
        assert!(!o.iter().any(|o| matches!(o, Output::Subscribe(_))));
    }
    let mut s = connected(&c, "fm", "");
    for i in 0..20_000 {
        let id = format!("id:{i}:x\\cy");
        let (f, o) = feed(
            &mut s,
            &c,
            format!("SUBSCRIBE\nid:{id}\ndestination:/topic/t{i}\n\n\0UNSUBSCRIBE\nid:{id}\n\n\0")
                .as_bytes(),
        );
        assert!(f.is_empty(), "{f:?}");
        assert!(
            matches!(o.as_slice(), [Output::Subscribe(_), Output::Unsubscribe(_)]),
            "{o:?}"
        );
    }
    assert_eq!(s.subscriptions().count(), 0);
}

#[test]
fn before_connect_a_frame_is_small() {
    let c = ctx(true);
    let mut s = Session::new("default".into(), None, false);
    let big = format!("CONNECT\nx:{}\n", "y".repeat(3000));
    let mut out = Vec::new();
    for _ in 0..3 {
        s.on_bytes(big.as_bytes(), 0, &c, &mut out);
    }
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close(CloseError::PROTOCOL, _))),
        "{out:?}"
    );
    assert!(s.pending.capacity() <= 2 * c.cfg.limits.max_connect_bytes);
    // Once connected, the configured frame limit applies.
    let mut s = connected(&c, "fm", "");
    let body = "z".repeat(20_000);
    let (f, o) = feed(
        &mut s,
        &c,
        format!("SEND\ndestination:/topic/t\n\n{body}\0").as_bytes(),
    );
    assert!(
        f.is_empty() && matches!(o.as_slice(), [Output::Publish { .. }]),
        "{f:?}"
    );
}

#[test]
fn connect_timeout_closes_with_an_error_only_before_connect() {
    let c = ctx(true);
    let mut s = Session::new("default".into(), None, false);
    let mut out = Vec::new();
    assert!(s.connect_timeout(10_000, &mut out));
    let Output::Frame(b) = &out[0] else { panic!() };
    let text = String::from_utf8_lossy(b);
    assert!(
        text.starts_with("ERROR\nmessage:no CONNECT within 10000 ms"),
        "{text}"
    );
    assert!(matches!(out[1], Output::Close(CloseError::POLICY, _)));
    let mut s = connected(&c, "fm", "");
    out.clear();
    assert!(!s.connect_timeout(10_000, &mut out));
    assert!(out.is_empty());
}

#[test]
fn subscribes_beyond_the_rate_end_the_session() {
    let mut cfg = Config::default();
    cfg.auth.enabled = false;
    cfg.limits.max_subscribes_per_s = 3;
    let auth = Auth::from_config(&cfg, crate::auth::test_clock()).unwrap();
    let c = Context::new(cfg, auth);
    let mut s = Session::new("default".into(), None, false);
    feed(&mut s, &c, b"CONNECT\naccept-version:1.2\n\n\0");
    let at = |s: &mut Session, now: u64, id: u32| {
        let mut out = Vec::new();
        let f = format!("SUBSCRIBE\nid:{id}\ndestination:/topic/t{id}\n\n\0");
        s.on_bytes(f.as_bytes(), now, &c, &mut out);
        out
    };
    // Three in the second of tick 10..19, three more in the next: all fine.
    let closes = |out: &[Output]| out.iter().any(|o| matches!(o, Output::Close(..)));
    for id in 0..3 {
        assert!(!closes(&at(&mut s, 12, id)));
    }
    for id in 3..6 {
        assert!(!closes(&at(&mut s, 21, id)));
    }
    let out = at(&mut s, 25, 6);
    let error = out.iter().find_map(|o| match o {
        Output::Frame(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    });
    assert!(
        error.as_deref().is_some_and(
            |e| e.starts_with("ERROR\nmessage:too many subscribes (at most 3 a second)")
        ),
        "{out:?}"
    );
    assert!(closes(&out), "{out:?}");
}
