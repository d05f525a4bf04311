use super::*;

fn one(buf: &[u8]) -> (Frame, usize) {
    match parse(buf, &Limits::default()).unwrap() {
        Parsed::Frame(f, n) => (f, n),
        p => panic!("{p:?}"),
    }
}

#[test]
fn every_command_round_trips() {
    for c in [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ] {
        let f = Frame::new(c).header("k", "v");
        let bytes = f.encode();
        assert_eq!(one(&bytes), (f, bytes.len()));
    }
}

#[test]
fn escaping_except_in_connect() {
    let f = Frame::new(Command::Send).header("a:b", "line\none\\two\r");
    let bytes = f.encode();
    assert!(bytes.starts_with(b"SEND\na\\cb:line\\none\\\\two\\r\n"));
    assert_eq!(one(&bytes).0, f);
    // CONNECT keeps a backslash as it is, and the first colon splits.
    let (c, _) = one(b"CONNECT\nlogin:a\\b\npasscode:x:y\n\n\0");
    assert_eq!(c.get("login"), Some("a\\b"));
    assert_eq!(c.get("passcode"), Some("x:y"));
}

#[test]
fn content_length_allows_nul_in_body() {
    let (f, n) = one(b"SEND\ndestination:/topic/a\ncontent-length:3\n\na\0b\0\n\n");
    assert_eq!(f.body, b"a\0b");
    // 44 bytes of command and headers, 3 of body, the NUL, and two trailing EOLs.
    assert_eq!(n, 44 + 3 + 1 + 2);
}

#[test]
fn heartbeats_and_crlf() {
    let l = Limits::default();
    assert_eq!(parse(b"\n", &l), Ok(Parsed::HeartBeat(1)));
    assert_eq!(parse(b"\r\n\n", &l), Ok(Parsed::HeartBeat(3)));
    assert_eq!(parse(b"\r", &l), Ok(Parsed::Partial));
    let (f, _) = one(b"SUBSCRIBE\r\nid:0\r\ndestination:/topic/x\r\n\r\n\0");
    assert_eq!(f.get("id"), Some("0"));
    assert_eq!(f.get("destination"), Some("/topic/x"));
}

#[test]
fn first_repeated_header_wins() {
    let (f, _) = one(b"SEND\nfoo:1\nfoo:2\n\n\0");
    assert_eq!(f.get("foo"), Some("1"));
}

#[test]
fn partial_at_every_cut() {
    let bytes = Frame::new(Command::Send)
        .header("destination", "/topic/x")
        .encode();
    for cut in 1..bytes.len() {
        assert_eq!(
            parse(&bytes[..cut], &Limits::default()),
            Ok(Parsed::Partial)
        );
    }
}

#[test]
fn violations_are_named() {
    let l = Limits {
        max_frame_bytes: 200,
        max_headers: 3,
        max_header_bytes: 50,
    };
    let cases: [(&[u8], &str); 7] = [
        (b"FOO\n\n\0", "unknown command"),
        (b"SEND\nnocolon\n\n\0", "without a colon"),
        (b"SEND\na:\\t\n\n\0", "undefined escape"),
        (b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0", "more than 3 headers"),
        (b"SEND\ncontent-length:x\n\n\0", "invalid content-length"),
        (
            b"SEND\ncontent-length:1\n\nab\0",
            "longer than its content-length",
        ),
        (b"\r\r", "bare CR"),
    ];
    for (bytes, msg) in cases {
        let e = parse(bytes, &l).unwrap_err();
        assert!(e.to_string().contains(msg), "{e} for {bytes:?}");
    }
    let long = format!("SEND\nk:{}\n\n\0", "v".repeat(60));
    assert!(
        parse(long.as_bytes(), &l)
            .unwrap_err()
            .to_string()
            .contains("header line")
    );
    let big = format!("SEND\n\n{}", "x".repeat(300));
    assert!(
        parse(big.as_bytes(), &l)
            .unwrap_err()
            .to_string()
            .contains("frame over")
    );
}

/// Property: arbitrary bytes never panic, and whatever parses re-encodes to something that
/// parses to the same frame.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"SENDCONCTUBRIP\n\r:\\\0ncx-0123456789 ";
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let buf: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if let Ok(Parsed::Frame(f, _)) = parse(&buf, &Limits::default()) {
            let again = f.encode();
            if let Ok(Parsed::Frame(g, _)) = parse(&again, &Limits::default()) {
                assert_eq!(f.command, g.command);
                assert_eq!(f.body, g.body);
            }
        }
    }
}

#[test]
fn a_nul_in_a_header_line_is_refused() {
    let e = parse(
        b"SUBSCRIBE\nid:a\0b\ndestination:/topic/x\n\n\0",
        &Limits::default(),
    );
    assert_eq!(e.unwrap_err(), FrameError::NulInHeader);
    assert_eq!(
        FrameError::NulInHeader.to_string(),
        "NUL byte in a header line"
    );
    assert_eq!(
        FrameError::BadEscape("t".into()).to_string(),
        "undefined escape sequence \\t"
    );
}

/// Whatever a header holds, the encoded frame keeps it one header: no value can add a line,
/// and no NUL can end the frame early (clients split frames on NUL).
#[test]
fn no_header_value_can_forge_a_line_or_end_the_frame() {
    let forged = "x\n\nMESSAGE\ndestination:/topic/other\n\n\0";
    for command in [Command::Connected, Command::Message, Command::Error] {
        let mut f = Frame::new(command).header("user-name", forged);
        f.body = b"body".to_vec();
        let bytes = f.encode();
        assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1, "{command:?}");
        assert_eq!(*bytes.last().unwrap(), 0);
        let Ok(Parsed::Frame(g, n)) = parse(&bytes, &Limits::default()) else {
            panic!("{command:?}: {:?}", String::from_utf8_lossy(&bytes));
        };
        assert_eq!(n, bytes.len());
        assert_eq!(g.headers.len(), 1, "{command:?}: {:?}", g.headers);
        assert_eq!(g.body, b"body");
    }
    // A NUL cannot make a name into another one (a second, forged content-length).
    let f = Frame::new(Command::Message).header("content-length\0", "999");
    let Ok(Parsed::Frame(g, _)) = parse(&f.encode(), &Limits::default()) else {
        panic!()
    };
    assert_eq!(g.get("content-length"), None);
}
